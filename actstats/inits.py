"""Weight and bias initialization schemes.

A weight matrix has shape ``(fan_in, fan_out)`` and is used as ``x @ W``. Every fan-dependent named
scheme (Glorot/Xavier, He/Kaiming, LeCun, the PyTorch ``nn.Linear`` default) is a preset of one
function, :func:`variance_scaling` (as in Keras and JAX), so the table of schemes below is data, not
a dozen near-copies. A scheme is chosen with a spec string ``NAME[:key=value,...]``, for example
``normal:std=0.01``, ``kaiming_normal:mode=fan_out`` or ``constant:value=0.5``.

Two meanings of "Xavier": the CS231n notes (and tutorials that follow them) call ``randn/sqrt(fan_in)``
"Xavier"; Glorot & Bengio (2010), PyTorch and Keras use variance ``2/(fan_in+fan_out)``, and
``randn/sqrt(fan_in)`` is LeCun's. The two coincide when fan_in == fan_out.

Example::

    >>> W = init_weights("kaiming_normal", 300, 700, seed=0)
    >>> W.shape, round(float(W.std()) * (300 / 2) ** 0.5, 1)
    ((300, 700), 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import specs
from .errors import ConfigError, did_you_mean

# std of N(0, 1) truncated to [-2, 2]; dividing by it keeps the variance after truncation
TRUNC_STD = 0.87962566103423978
MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")
NONLINEARITIES = ("linear", "identity", "sigmoid", "tanh", "relu", "leaky_relu", "selu")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity, as PyTorch's ``torch.nn.init.calculate_gain``.

    linear/identity 1, sigmoid 1, tanh 5/3, relu sqrt(2), leaky_relu sqrt(2/(1+slope^2)) with
    slope ``param`` (default 0.01), selu 3/4.
    """
    if nonlinearity in ("linear", "identity", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ConfigError(f"no gain for nonlinearity '{nonlinearity}'{did_you_mean(nonlinearity, NONLINEARITIES)}")


def gain_squared(nonlinearity: str, param: float | None = None) -> float:
    """calculate_gain(...)**2 without the rounding of the square root: relu's is exactly 2, so He
    init's sigma_w^2 is exactly the critical 2 of the theory."""
    if nonlinearity == "relu":
        return 2.0
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return 2.0 / (1 + slope**2)
    return calculate_gain(nonlinearity, param) ** 2


def _fan(mode: str, fan_in: int, fan_out: int) -> float:
    return {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]


def _truncated_standard_normal(rng: np.random.Generator, shape) -> np.ndarray:
    """N(0, 1) restricted to [-2, 2], by redrawing the values that fall outside."""
    x = rng.standard_normal(shape)
    flat = x.reshape(-1)
    bad = np.flatnonzero(np.abs(flat) > 2)
    while bad.size:
        flat[bad] = rng.standard_normal(bad.size)
        bad = bad[np.abs(flat[bad]) > 2]
    return x


# ---------------------------------------------------------------------------------------------------
# The primitives. Each takes the sampling shape and a Generator and returns float64.


def zeros(shape, rng=None) -> np.ndarray:
    """W = 0. Every unit of a layer computes the same value and gets the same gradient (symmetry)."""
    return np.zeros(shape)


def ones(shape, rng=None) -> np.ndarray:
    """W = 1. Same symmetry problem as zeros."""
    return np.ones(shape)


def constant(shape, rng=None, *, value: float) -> np.ndarray:
    """W = value, for every entry. Same symmetry problem as zeros."""
    return np.full(shape, float(value))


def normal(shape, rng, *, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    """W ~ N(mean, std^2). ``normal:std=0.01`` and ``normal:std=1`` are CS231n's two bad examples."""
    return mean + std * rng.standard_normal(shape)


def uniform(shape, rng, *, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """W ~ U(low, high); PyTorch's ``nn.init.uniform_`` defaults (0, 1)."""
    return rng.uniform(low, high, shape)


def truncated_normal(shape, rng, *, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    """W ~ N(mean, std^2) cut at mean +- 2 std (Keras ``TruncatedNormal``); its std is 0.8796 std."""
    return mean + std * _truncated_standard_normal(rng, shape)


def orthogonal(shape, rng, *, gain: float = 1.0) -> np.ndarray:
    """A (semi-)orthogonal matrix times gain (Saxe, McClelland & Ganguli 2013, "Exact solutions to
    the nonlinear dynamics of learning in deep linear neural networks").

    QR of a Gaussian matrix, Q multiplied by sign(diag R) so that the result is uniformly (Haar)
    distributed, as PyTorch's ``orthogonal_``. For (fan_in, fan_out) the columns are orthonormal when
    fan_in >= fan_out, the rows otherwise; each entry then has variance gain^2 / max(fan_in, fan_out).
    """
    if len(shape) != 2:
        raise ConfigError("init 'orthogonal' needs a matrix; it cannot initialize biases.")
    rows, cols = shape
    a = rng.standard_normal((rows, cols))
    if rows < cols:
        a = a.T
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return gain * q


def variance_scaling(shape, rng, *, fan_in: int, fan_out: int, scale: float = 1.0,
                     mode: str = "fan_in", distribution: str = "truncated_normal") -> np.ndarray:
    """Weights of variance ``scale / n``, n = fan_in, fan_out or (fan_in+fan_out)/2 per ``mode``
    (Keras ``VarianceScaling``, JAX ``variance_scaling``).

    normal: N(0, s); uniform: U(-sqrt(3s), sqrt(3s)); truncated_normal: N(0, s/0.8796^2) cut at two of
    its std, so that the variance is still s. Every fan-dependent named scheme is a preset of it.
    """
    s = scale / _fan(mode, fan_in, fan_out)
    if distribution == "normal":
        return math.sqrt(s) * rng.standard_normal(shape)
    if distribution == "uniform":
        bound = math.sqrt(3 * s)
        return rng.uniform(-bound, bound, shape)
    return (math.sqrt(s) / TRUNC_STD) * _truncated_standard_normal(rng, shape)


# ---------------------------------------------------------------------------------------------------
# The table of named schemes.


@dataclass(frozen=True)
class Scheme:
    params: dict                      # parameter -> default (None: required)
    formula: str                      # one line, shown by `actstats inits`
    source: str                       # paper or framework
    aka: str = ""                     # other names it goes by
    preset: dict = field(default_factory=dict)   # for variance_scaling presets: fixed arguments


def _gain_scale(values: dict) -> float:
    """scale = gain^2, where the gain is given or derived from (nonlinearity, a)."""
    if "gain" in values:
        return values["gain"] ** 2
    if "nonlinearity" in values:
        return gain_squared(values["nonlinearity"], values["a"])
    return values.get("scale", 1.0)


SCHEMES: dict[str, Scheme] = {
    "zeros": Scheme({}, "W = 0", "-", "zero init; fine for biases, not for weights"),
    "ones": Scheme({}, "W = 1", "-", "all-ones"),
    "constant": Scheme({"value": None}, "W = value", "-", "PyTorch constant_, Keras Constant"),
    "normal": Scheme({"mean": 0.0, "std": 1.0}, "N(mean, std^2)", "-",
                     "random normal; std=0.01 and std=1 are CS231n's examples"),
    "uniform": Scheme({"low": 0.0, "high": 1.0}, "U(low, high)", "-", "random uniform"),
    "truncated_normal": Scheme({"mean": 0.0, "std": 1.0}, "N(mean, std^2) cut at mean +- 2 std",
                               "Keras TruncatedNormal", ""),
    "orthogonal": Scheme({"gain": 1.0}, "gain * Q, Q from QR of a Gaussian matrix",
                         "Saxe, McClelland & Ganguli 2013", "PyTorch orthogonal_, Keras Orthogonal"),
    "variance_scaling": Scheme(
        {"scale": 1.0, "mode": "fan_in", "distribution": "truncated_normal"},
        "variance scale/n, n = fan_in | fan_out | (fan_in+fan_out)/2",
        "Keras VarianceScaling, JAX variance_scaling", "the general form of the presets below"),
    "xavier_normal": Scheme(
        {"gain": 1.0}, "N(0, gain^2 * 2/(fan_in+fan_out))",
        "Glorot & Bengio 2010, 'Understanding the difficulty of training deep feedforward neural "
        "networks'; PyTorch xavier_normal_ (untruncated)", "glorot normal; alias 'xavier'",
        {"mode": "fan_avg", "distribution": "normal"}),
    "xavier_uniform": Scheme(
        {"gain": 1.0}, "U(+-gain * sqrt(6/(fan_in+fan_out)))",
        "Glorot & Bengio 2010; PyTorch xavier_uniform_", "glorot uniform",
        {"mode": "fan_avg", "distribution": "uniform"}),
    "glorot_normal": Scheme(
        {}, "truncated N, variance 2/(fan_in+fan_out)", "Glorot & Bengio 2010; Keras GlorotNormal",
        "xavier normal (Keras' truncated form)",
        {"mode": "fan_avg", "distribution": "truncated_normal"}),
    "glorot_uniform": Scheme(
        {}, "U(+-sqrt(6/(fan_in+fan_out)))", "Glorot & Bengio 2010; Keras GlorotUniform",
        "xavier uniform", {"mode": "fan_avg", "distribution": "uniform"}),
    "kaiming_normal": Scheme(
        {"a": 0.0, "mode": "fan_in", "nonlinearity": "leaky_relu"},
        "N(0, gain^2/fan_mode), gain = calculate_gain(nonlinearity, a): sqrt(2) for ReLU",
        "He, Zhang, Ren & Sun 2015, 'Delving deep into rectifiers'; PyTorch kaiming_normal_",
        "he normal; aliases 'he', 'kaiming'", {"distribution": "normal"}),
    "kaiming_uniform": Scheme(
        {"a": 0.0, "mode": "fan_in", "nonlinearity": "leaky_relu"},
        "U(+-gain * sqrt(3/fan_mode))", "He et al. 2015; PyTorch kaiming_uniform_", "he uniform",
        {"distribution": "uniform"}),
    "he_normal": Scheme(
        {"mode": "fan_in"}, "truncated N, variance 2/fan_mode", "He et al. 2015; Keras HeNormal",
        "kaiming normal (Keras' truncated form)", {"scale": 2.0, "distribution": "truncated_normal"}),
    "he_uniform": Scheme(
        {"mode": "fan_in"}, "U(+-sqrt(6/fan_mode))", "He et al. 2015; Keras HeUniform",
        "kaiming uniform", {"scale": 2.0, "distribution": "uniform"}),
    "lecun_normal": Scheme(
        {}, "truncated N, variance 1/fan_in", "LeCun, Bottou, Orr & Mueller 1998, 'Efficient "
        "BackProp'; Keras LecunNormal", "alias 'lecun'; CS231n's 'Xavier' randn/sqrt(fan_in) is "
        "its untruncated form, variance_scaling:distribution=normal",
        {"scale": 1.0, "mode": "fan_in", "distribution": "truncated_normal"}),
    "lecun_uniform": Scheme(
        {}, "U(+-sqrt(3/fan_in))", "LeCun et al. 1998; Keras LecunUniform", "",
        {"scale": 1.0, "mode": "fan_in", "distribution": "uniform"}),
    "pytorch_linear": Scheme(
        {}, "U(+-1/sqrt(fan_in))", "PyTorch nn.Linear default (kaiming_uniform with a=sqrt(5))",
        "a reasonable choice with sigmoid",
        {"scale": 1.0 / 3, "mode": "fan_in", "distribution": "uniform"}),
    "lsuv": Scheme(
        {"tol": 0.1, "max_iter": 10.0}, "orthogonal, then each layer's W scaled by 1/std(pre) "
        "until |std(pre) - 1| < tol", "Mishkin & Matas 2015, 'All you need is a good init' (LSUV)",
        "layer-sequential unit-variance; data-driven, needs the activation and the input"),
    "critical": Scheme(
        {"q_star": 1.0}, "N(0, sigma_w^2/fan_in) and biases N(0, sigma_b^2) on the critical line "
        "chi_1 = 1 with fixed point q_star", "Poole et al. 2016; Schoenholz et al. 2017, 'Deep "
        "information propagation'", "edge of chaos; sets the biases too; q_star must be a stable "
        "fixed point (GELU: >= 3.562, sigmoid: >= 45.63)"),
}

DATA_DRIVEN = ("lsuv", "critical")  # finished by actstats.datainit once the net exists

ALIASES = {"xavier": "xavier_normal", "glorot": "glorot_normal", "he": "kaiming_normal",
           "kaiming": "kaiming_normal", "lecun": "lecun_normal"}

_PRIMITIVES = {"zeros": zeros, "ones": ones, "constant": constant, "normal": normal,
               "uniform": uniform, "truncated_normal": truncated_normal, "orthogonal": orthogonal}


@dataclass(frozen=True)
class Init:
    """A resolved init: scheme name, its full parameter values, and the spec it came from."""
    scheme: str
    values: tuple
    spec: str

    def __str__(self) -> str:
        return self.spec

    @property
    def kwargs(self) -> dict:
        return dict(self.values)

    def variance_args(self) -> dict | None:
        """(scale, mode, distribution) when the scheme is a variance_scaling preset."""
        sch = SCHEMES[self.scheme]
        if self.scheme != "variance_scaling" and not sch.preset:
            return None
        kw = {**sch.preset, **self.kwargs}
        return {"scale": _gain_scale(kw), "mode": kw["mode"], "distribution": kw["distribution"]}

    def sample(self, shape, rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
        """Draw the values. The data-driven schemes draw their starting point here (LSUV: an
        orthogonal matrix; critical: N(0, 1/fan_in)); actstats.datainit rescales them."""
        with np.errstate(over="ignore"):  # e.g. normal:std=1e308: inf is measured, not warned about
            return self._sample(shape, rng, fan_in, fan_out)

    def _sample(self, shape, rng, fan_in, fan_out):
        vs = self.variance_args()
        if vs is not None:
            return variance_scaling(shape, rng, fan_in=fan_in, fan_out=fan_out, **vs)
        if self.scheme == "lsuv":
            return orthogonal(shape, rng)
        if self.scheme == "critical":
            return variance_scaling(shape, rng, fan_in=fan_in, fan_out=fan_out, distribution="normal")
        return _PRIMITIVES[self.scheme](shape, rng, **self.kwargs)

    def moments(self, fan_in: int, fan_out: int) -> tuple[float, float]:
        """(mean, variance) of one entry of a (fan_in, fan_out) matrix drawn from this init."""
        kw = self.kwargs
        vs = self.variance_args()
        if vs is not None:
            return 0.0, vs["scale"] / _fan(vs["mode"], fan_in, fan_out)
        if self.scheme in ("zeros", "ones", "constant"):
            return {"zeros": 0.0, "ones": 1.0}.get(self.scheme, kw.get("value", 0.0)), 0.0
        if self.scheme == "normal":
            return kw["mean"], kw["std"] ** 2
        if self.scheme == "uniform":
            return (kw["low"] + kw["high"]) / 2, (kw["high"] - kw["low"]) ** 2 / 12
        if self.scheme == "truncated_normal":
            return kw["mean"], (kw["std"] * TRUNC_STD) ** 2
        if self.scheme == "critical":
            return 0.0, 1.0 / fan_in  # before datainit scales it by sigma_w^2
        return 0.0, kw.get("gain", 1.0) ** 2 / max(fan_in, fan_out)  # orthogonal, lsuv

    def bounds(self, fan_in: int, fan_out: int) -> tuple[float, float]:
        """The interval every sample lies in (infinite for normal distributions)."""
        kw = self.kwargs
        vs = self.variance_args()
        if vs is not None:
            s = vs["scale"] / _fan(vs["mode"], fan_in, fan_out)
            half = {"normal": math.inf, "uniform": math.sqrt(3 * s),
                    "truncated_normal": 2 * math.sqrt(s) / TRUNC_STD}[vs["distribution"]]
            return -half, half
        mean, var = self.moments(fan_in, fan_out)
        if self.scheme == "uniform":
            return kw["low"], kw["high"]
        if self.scheme == "truncated_normal":
            return mean - 2 * kw["std"], mean + 2 * kw["std"]
        if self.scheme in ("zeros", "ones", "constant"):
            return mean, mean
        if self.scheme in ("orthogonal", "lsuv"):
            return -abs(kw.get("gain", 1.0)), abs(kw.get("gain", 1.0))
        return -math.inf, math.inf


PLAIN = ("normal", "uniform", "truncated_normal", "constant")  # their defaults are worth spelling out


def label(spec) -> str:
    """The spec for people: ``normal`` (whose canonical form drops the default std=1) reads
    ``normal:mean=0,std=1``; other specs as they are."""
    init = resolve(spec)
    if init.scheme in PLAIN and ":" not in init.spec and init.values:
        return init.scheme + ":" + ",".join(f"{k}={v:g}" for k, v in init.values)
    return init.spec


def resolve(spec, what: str = "init") -> Init:
    """Parse and validate an init spec: names, keys and values, with clear errors."""
    parsed = specs.parse(spec, what)
    scheme = ALIASES.get(parsed.name, parsed.name)
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown {what} '{parsed.name}'{did_you_mean(parsed.name, [*SCHEMES, *ALIASES])}")
    values = specs.check_keys(parsed, SCHEMES[scheme].params, what)
    for key in values:
        if key == "mode":
            specs.choice(values, key, MODES, parsed, what)
        elif key == "distribution":
            specs.choice(values, key, DISTRIBUTIONS, parsed, what)
        elif key == "nonlinearity":
            specs.choice(values, key, NONLINEARITIES, parsed, what)
        else:
            values[key] = specs.number(values, key, parsed, what,
                                       nonneg=key in ("std", "scale"), positive=False)
    if scheme == "uniform" and values["low"] > values["high"]:
        raise ConfigError(f"{what} 'uniform': low == {values['low']:g} > high == {values['high']:g}.")
    if scheme == "uniform" and not math.isfinite(values["high"] - values["low"]):
        raise ConfigError(f"{what} 'uniform': high - low overflows; keep the range below 1.8e308.")
    if scheme == "lsuv" and not (values["tol"] > 0 and values["max_iter"] >= 1
                                 and float(values["max_iter"]).is_integer()):
        raise ConfigError(f"{what} 'lsuv': tol must be > 0 and max_iter an integer >= 1.")
    if scheme == "critical" and not values["q_star"] > 0:
        raise ConfigError(f"{what} 'critical': q_star == {values['q_star']:g}, must be > 0.")
    if scheme in DATA_DRIVEN and what != "init":
        raise ConfigError(f"{what} '{scheme}' is a weight init; it cannot initialize biases.")
    if scheme == "variance_scaling" and values["scale"] <= 0:
        raise ConfigError(f"{what} 'variance_scaling': scale == {values['scale']:g}, must be > 0.")
    canonical = specs.Spec(parsed.name, tuple(sorted(
        (k, v) for k, v in values.items() if v != SCHEMES[scheme].params[k])))
    return Init(scheme, tuple(sorted(values.items())), str(canonical))


def init_weights(spec, fan_in: int, fan_out: int, *, seed=None, dtype=None) -> np.ndarray:
    """A (fan_in, fan_out) weight matrix drawn from ``spec``.

    ``seed`` is an int, a ``numpy.random.SeedSequence`` or a ``Generator``; the values are drawn in
    float64 and then cast to ``dtype`` (default float64), so float32 gets the same weights, rounded.
    """
    for name, n in (("fan_in", fan_in), ("fan_out", fan_out)):
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ConfigError(f"{name} == {n}, must be an integer >= 1.")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    init = resolve(spec)
    return init.sample((fan_in, fan_out), rng, fan_in, fan_out).astype(dtype or np.float64, copy=False)


def init_bias(spec, fan_in: int, fan_out: int, rng: np.random.Generator, dtype=None) -> np.ndarray:
    """A (fan_out,) bias vector; fan-dependent schemes use the layer's fans (as nn.Linear does)."""
    init = resolve(spec, "bias init")
    return init.sample((fan_out,), rng, fan_in, fan_out).astype(dtype or np.float64, copy=False)
