"""Activation functions: phi, phi', and the rule that says when a unit is saturated.

"Saturated" means |phi'(z)| below 2% of phi's largest slope (GUIDE §2). For the squashing functions
that is a region of z, so each activation stores it as thresholds on the pre-activation:
``z < sat_low`` or ``z > sat_high``. tanh, for example, saturates where 1 - tanh(z)^2 < 0.02, that is
|z| > atanh(sqrt(0.98)) = 2.644 (|a| > 0.98995). ReLU, leaky ReLU and linear have no such region:
ReLU's flat side is reported as "zero"/"dead" instead.

All functions are written so that large |z| gives the right limit without overflow warnings
(ELU through expm1 of min(z, 0)). tanh and sigmoid are the engine's hot spots: in float64 they go
through one ``exp`` (NumPy's float64 tanh costs about three exps), accurate to a few ulp and exactly
+-1 / 0 / 1 in the limits; in float32 NumPy's SIMD loops are already fast. The functions of the
common activations take ``out=`` (and a ``work`` buffer) so that the engine reuses its buffers.
With the compiled kernels (kernels.py) tanh and sigmoid are one vectorized pass each instead,
within a few ulp in either dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import kernels, specs
from .errors import ConfigError, did_you_mean

SATURATION = 0.02  # fraction of the largest slope below which a unit counts as saturated

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


@dataclass(frozen=True)
class Activation:
    name: str                                   # canonical spec, e.g. "leaky_relu:negative_slope=0.2"
    kind: str                                   # base name, e.g. "leaky_relu"
    phi: Callable[[np.ndarray], np.ndarray]
    dphi: Callable[[np.ndarray, np.ndarray], np.ndarray]  # phi'(z) from (z, a=phi(z))
    max_slope: float
    post_range: tuple[float, float] | None      # fixed histogram range of phi, if bounded
    sat_low: float = -math.inf                  # saturated where z < sat_low ...
    sat_high: float = math.inf                  # ... or z > sat_high
    params: tuple = ()

    @property
    def saturates(self) -> bool:
        return math.isfinite(self.sat_low) or math.isfinite(self.sat_high)

    def saturated(self, z: np.ndarray) -> np.ndarray:
        """Boolean mask of saturated units, from the pre-activations."""
        return (z < self.sat_low) | (z > self.sat_high)

    def __str__(self) -> str:
        return self.name


def _phi_grid_max(dphi_of_z: Callable[[float], float], lo=-10.0, hi=10.0, n=200001) -> float:
    z = np.linspace(lo, hi, n)
    return float(np.max(np.abs(dphi_of_z(z))))


def _bisect(f, lo: float, hi: float) -> float:
    """Root of f on [lo, hi], f(lo) and f(hi) of opposite sign, to full float precision."""
    flo = f(lo)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        fm = f(mid)
        if (fm > 0) == (flo > 0):
            lo, flo = mid, fm
        else:
            hi = mid
    return 0.5 * (lo + hi)


# float64 tanh: z = a + d with a = trunc(z * TANH_GRID) / TANH_GRID from a table of tanh, |d| < 1/TANH_GRID
# of the same sign, tanh(d) = d - d^3/3 (the next term, 2d^5/15, is below 3e-17 of it), and
# tanh(a + d) = (tanh a + tanh d) / (1 + tanh a tanh d): no cancellation anywhere, a few ulp
TANH_GRID = 8192
TANH_TOP = 20 * TANH_GRID  # tanh(20) rounds to 1.0
_TANH_TABLE: list = []


def _tanh_table() -> np.ndarray:
    if not _TANH_TABLE:
        _TANH_TABLE.append(np.tanh(np.arange(-TANH_TOP, TANH_TOP + 1) / TANH_GRID))
    return _TANH_TABLE[0]


def tanh(z, out=None, work=None):
    """tanh, exactly +-1 for large |z|. float64: a table and three products (NumPy's float64 tanh
    costs about three exps); float32: NumPy's SIMD tanh. ``work``: two float64 arrays shaped as z."""
    z = np.asarray(z)
    if kernels.usable(z, out):
        return kernels.tanh(z, out)
    if z.dtype != np.float64:
        return np.tanh(z, out=out)
    out = np.empty_like(z) if out is None else out
    w, s = (np.empty_like(z), np.empty_like(z)) if work is None else work  # two buffers like z
    with np.errstate(over="ignore", invalid="ignore"):  # |z| > 2e304: inf, clipped; NaN: NaN throughout
        np.multiply(z, float(TANH_GRID), out=w)
        np.clip(w, -TANH_TOP, TANH_TOP, out=w)
        np.trunc(w, out=out)
        np.subtract(w, out, out=w)              # d * TANH_GRID, exact, the sign of z
        k = s.view(np.int64)
        np.add(out, TANH_TOP, out=k, casting="unsafe")
    np.take(_tanh_table(), k, out=out, mode="clip")   # tanh a
    np.multiply(w, w, out=s)
    s *= -1.0 / (3 * TANH_GRID**3)
    s += 1.0 / TANH_GRID
    s *= w                                      # tanh d
    np.multiply(out, s, out=w)
    w += 1.0
    out += s
    return np.divide(out, w, out=out)


def sigmoid(z, out=None, work=None):
    """1 / (1 + e^-z): a few ulp wherever the result is a normal float (no cancellation on either
    side), exactly 0 and 1 in the limits; e^-z overflowing to inf gives 1/inf = 0, not a warning."""
    z = np.asarray(z)
    if kernels.usable(z, out):
        return kernels.sigmoid(z, out)
    out = np.empty_like(z) if out is None else out
    np.negative(z, out=out)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1.0
    return np.reciprocal(out, out=out)


def relu(z, out=None, work=None):
    if kernels.usable(z, out):
        return kernels.relu(z, out)
    return np.maximum(z, 0, out=out)


def tanh_slope(z, a, out=None):
    """1 - a^2, as (1 - a)(1 + a): no cancellation where |a| is near 1."""
    out = np.subtract(1.0, a, out=out)
    return np.multiply(out, 1.0 + a, out=out)


def sigmoid_slope(z, a, out=None):
    """a (1 - a)."""
    out = np.subtract(1.0, a, out=out)
    return np.multiply(out, a, out=out)


def relu_slope(z, a, out=None):
    """1 where a > 0 (exactly where z > 0, as a = max(z, 0)), else 0 (also for NaN)."""
    if out is None:
        return (a > 0).astype(a.dtype)
    return np.greater(a, 0, out=out, casting="unsafe")


def grad_pre(act: "Activation", d: np.ndarray, a: np.ndarray, out: np.ndarray, slope_work: np.ndarray) -> float:
    """dL/dz = d * phi'(a) into ``out`` for an activation of a kind in IN_PLACE (phi' from the post
    a), and the sum of phi'(a) in float64: one pass with the kernels, else phi' into
    ``slope_work``, its sum and the product (the same values)."""
    if kernels.usable(a, out) and kernels.usable(d, out):
        return kernels.backward(act.kind, d, a, out)
    slope = act.dphi(None, a, out=slope_work)
    np.multiply(d, slope, out=out)
    return float(np.sum(slope, dtype=np.float64))


# kinds whose phi(z, out, work) and dphi(z, a, out) write in place, and whose dphi reads a alone (the
# backward pass keeps each layer's post, not its phi', and computes phi' from it when it needs it)
IN_PLACE = ("tanh", "sigmoid", "relu")


def _erf_ndtr(z):
    from scipy.special import ndtr  # lazy: only GELU needs it

    return ndtr(z)


def _gelu_dphi(z):
    z = np.asarray(z, dtype=float)
    return _erf_ndtr(z) + z * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _make(kind: str, values: dict) -> Activation:
    changed = {k: v for k, v in values.items() if v != ACTIVATIONS[kind][k]}
    name = str(specs.Spec(kind, tuple(sorted(changed.items()))))
    if kind == "tanh":
        t = math.atanh(math.sqrt(1 - SATURATION))
        return Activation(name, kind, tanh, tanh_slope, 1.0, (-1.0, 1.0), -t, t)
    if kind == "sigmoid":
        # sigma' = a(1-a) < 0.02 * 1/4  <=>  a > (1 + sqrt(1 - 0.02)) / 2 (or its mirror)
        a_hi = (1 + math.sqrt(1 - SATURATION)) / 2
        t = math.log(a_hi / (1 - a_hi))
        return Activation(name, kind, sigmoid, sigmoid_slope, 0.25, (0.0, 1.0), -t, t)
    if kind == "relu":
        return Activation(name, kind, relu, relu_slope, 1.0, None)
    if kind == "linear":
        return Activation(name, kind, lambda z: z.copy(), lambda z, a: np.ones_like(z), 1.0, None)
    if kind == "leaky_relu":
        s = values["negative_slope"]
        return Activation(name, kind, lambda z: np.where(z > 0, z, s * z),
                          lambda z, a: np.where(z > 0, 1.0, s).astype(z.dtype),
                          max(1.0, abs(s)), None, params=(s,))
    if kind in ("elu", "selu"):
        alpha, scale = (values["alpha"], 1.0) if kind == "elu" else (SELU_ALPHA, SELU_SCALE)
        top = scale * max(1.0, alpha)
        # negative side: slope scale*alpha*e^z < 0.02 * top
        t = math.log(SATURATION * top / (scale * alpha)) if alpha > 0 else -math.inf
        return Activation(
            name, kind,
            lambda z: scale * np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0))),
            lambda z, a: np.where(z > 0, scale, a + scale * alpha).astype(z.dtype),
            top, None, t, math.inf, params=(alpha,))
    if kind == "gelu":
        top = _phi_grid_max(_gelu_dphi)
        # the negative tail, where |phi'| falls below 2% of the top and stays there
        t = _bisect(lambda x: abs(float(_gelu_dphi(x))) - SATURATION * top, -12.0, -2.0)
        return Activation(name, kind, lambda z: z * _erf_ndtr(z).astype(z.dtype),
                          lambda z, a: _gelu_dphi(z).astype(z.dtype), top, None, t, math.inf)
    raise AssertionError(kind)


# base name -> its parameters and their defaults
ACTIVATIONS: dict[str, dict] = {
    "tanh": {}, "sigmoid": {}, "relu": {}, "leaky_relu": {"negative_slope": 0.01},
    "elu": {"alpha": 1.0}, "selu": {}, "gelu": {}, "linear": {},
}

DESCRIPTIONS = {
    "tanh": "tanh(z); saturated where |z| > 2.644 (|a| > 0.990)",
    "sigmoid": "1/(1+e^-z); saturated where |z| > 5.288 (a < 0.005 or a > 0.995)",
    "relu": "max(z, 0); never saturates, but units can be dead (exactly 0)",
    "leaky_relu": "z if z > 0 else negative_slope*z (default 0.01)",
    "elu": "z if z > 0 else alpha*(e^z - 1); saturated where z < ln(0.02) = -3.91",
    "selu": "scale*elu(z, alpha) with Klambauer et al.'s constants",
    "gelu": "z*Phi(z) (exact, erf form); saturated on the negative tail",
    "linear": "z (identity)",
}


def get(spec) -> Activation:
    """The Activation for a spec string such as ``tanh`` or ``leaky_relu:negative_slope=0.2``."""
    if isinstance(spec, Activation):
        return spec
    parsed = specs.parse(spec, "activation")
    if parsed.name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation '{parsed.name}'{did_you_mean(parsed.name, ACTIVATIONS)}")
    values = specs.check_keys(parsed, ACTIVATIONS[parsed.name], "activation")
    for key in values:
        values[key] = specs.number(values, key, parsed, "activation",
                                   nonneg=(key == "negative_slope"), positive=(key == "alpha"))
    return _make(parsed.name, values)
