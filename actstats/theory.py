"""Mean-field theory of signal propagation through a deep MLP with zero-mean i.i.d. weights.

Layer l computes ``z_l = a_{l-1} @ W_l + b_l`` and ``a_l = phi(z_l)``, with Var[W_l] = sigma_w2 / fan_in
and Var[b_l] = sigma_b2. For wide layers every pre-activation is Gaussian, z_l ~ N(0, q_l), and

    q_l = sigma_w2 * E_{u~N(0,1)}[phi(sqrt(q_{l-1}) u)^2] + sigma_b2        (the length map)
    chi_1 = sigma_w2 * E[phi'(sqrt(q_star) u)^2]                            (gradient growth per layer)

Poole, Lahiri, Raghu, Sohl-Dickstein & Ganguli (2016), "Exponential expressivity in deep neural networks
through transient chaos"; Schoenholz, Gilmer, Ganguli & Sohl-Dickstein (2017), "Deep information
propagation". chi_1 < 1 is the ordered phase (gradients vanish), > 1 the chaotic one (they explode).

The Gaussian expectations use closed forms where they exist (ReLU, leaky ReLU, linear, ELU, SELU) and
otherwise a composite Gauss-Legendre rule on u in [0, 12], graded geometrically toward u = 0 (panel
edges 12 * 2^-k, k = 0..48). For large q, phi(sqrt(q) u) bends on a scale 1/sqrt(q) that some panel
always matches: against 20-digit mpmath integrals the relative error is below 1e-11 for q from 1e-8
to 1e24 (E[phi] of GELU and small-q ELU, odd at leading order, loses ~1e-16/sqrt(q) below 1e-8).

Example::

    >>> fp = fixed_point("tanh", sigma_w2=1.5, sigma_b2=0.05)
    >>> round(fp.q_star, 4), round(fp.chi_1, 4), fp.phase
    (0.418, 0.9386, 'ordered')
    >>> critical_point("tanh", sigma_b2=0.0).sigma_w2, fixed_point("relu", 2.0, 0.0).phase
    (1.0, 'critical')
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

from . import activations, inits
from .errors import ConfigError

CRITICAL_TOL = 1e-6  # |chi_1 - 1| below this counts as critical
FUNCTIONS = ("phi2", "phi", "dphi2", "var", "slope")  # phi^2, phi, phi'^2, Var[phi], d/dq E[phi^2]

_U_MAX, _PANELS, _NODES = 12.0, 48, 12
_ELU_CLOSED_FROM = 1e-3  # below this q the ELU closed form cancels; quadrature is exact enough there
_Q_TABLE = np.concatenate([[0.0], np.logspace(-30, 30, 241)])  # bracketing grid for q_star
_GOLDEN = (math.sqrt(5) - 1) / 2
_cache: dict = {}


class FixedPoint(NamedTuple):
    q_star: float    # limit of q_l (inf if the length map diverges)
    chi_1: float     # sigma_w2 * E[phi'(z)^2] at q_star
    xi_c: float      # correlation depth scale -1/ln chi_1 (ordered), inf (critical), nan (chaotic)
    xi_grad: float   # gradient depth scale -1/ln chi_1, any phase; < 0: gradients grow e-fold per |xi|
    phase: str       # "ordered", "critical" or "chaotic"


class CriticalPoint(NamedTuple):
    sigma_w2: float
    sigma_b2: float
    q_star: float


def _rule() -> tuple[np.ndarray, np.ndarray]:
    """Nodes u and weights w (with the N(0,1) density, doubled) on [0, U]: sum w f(u) = E[f(|u|)]."""
    if "rule" not in _cache:
        edges = np.concatenate([[0.0], _U_MAX * 2.0 ** -np.arange(_PANELS, -1, -1)])
        x, w = np.polynomial.legendre.leggauss(_NODES)
        lo, hi = edges[:-1, None], edges[1:, None]
        u = (0.5 * (hi - lo) * x + 0.5 * (hi + lo)).ravel()
        w = (0.5 * (hi - lo) * w).ravel() * np.exp(-0.5 * u * u) * math.sqrt(2 / math.pi)
        _cache["rule"] = (u, w / w.sum())  # the mass beyond U = 12 is 2e-32
    return _cache["rule"]


def _quadrature(act, q: np.ndarray, f: str) -> np.ndarray:
    u, w = _rule()
    phi0 = float(act.phi(np.zeros(1))[0])
    out = np.empty_like(q)
    step = max(1, 2**20 // u.size)  # rows per chunk: (step, nodes) arrays of ~8 MB
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(0, q.size, step):
            sigma = np.sqrt(q[i:i + step, None])
            if f == "dphi2":  # at q = 0, phi'(+-0) is taken as its one-sided limits (ELU, SELU kinks)
                sigma = np.maximum(sigma, 1e-150)
            total, total_2 = 0.0, 0.0
            for z in (sigma * u, -sigma * u):  # E over u ~ N(0,1) as E over |u| of f(+z) + f(-z), halved
                a = act.phi(z)
                if f == "dphi2":
                    total = total + act.dphi(z, a) ** 2
                elif f == "slope":  # d/dq E[phi(sigma u)^2] = E[phi phi'(sigma u) u] / sigma
                    total = total + a * act.dphi(z, a) * z
                elif f == "var":  # centred on phi(0): no cancellation when Var[phi] << phi(0)^2
                    total, total_2 = total + (a - phi0) ** 2, total_2 + (a - phi0)
                else:
                    total = total + (a * a if f == "phi2" else a)
            e = 0.5 * (total @ w)
            out[i:i + step] = e - (0.5 * (total_2 @ w)) ** 2 if f == "var" else e
    if f == "slope":
        with np.errstate(divide="ignore", invalid="ignore"):
            out /= q
    if act.kind == "gelu":  # at q = inf, z * Phi(z) gives inf * 0; use the limits
        out[np.isinf(q)] = {"phi2": np.inf, "phi": np.inf, "dphi2": 0.5, "var": np.inf, "slope": 0.5}[f]
    return out


def _closed(act, q: np.ndarray, f: str) -> np.ndarray:
    if act.kind in ("relu", "leaky_relu", "linear"):  # phi(z) = z (z > 0), s z (z < 0)
        s = {"relu": 0.0, "linear": 1.0}.get(act.kind, act.params[0] if act.params else 0.0)
        if f == "phi2":
            return q * (1 + s * s) / 2
        if f == "phi":
            return (1 - s) * np.sqrt(q / (2 * math.pi)) if s != 1 else np.zeros_like(q)
        if f in ("dphi2", "slope"):
            return np.full_like(q, (1 + s * s) / 2)
        return q * ((1 + s * s) / 2 - (1 - s) ** 2 / (2 * math.pi))
    # ELU/SELU, phi = lam z (z > 0), lam alpha (e^z - 1) (z < 0). With z = sigma u,
    # g_k = E[e^{kz}; z < 0] = e^{k^2 q/2} Phi(-k sigma) = erfcx(k sigma / sqrt 2) / 2.
    from scipy.special import erfcx

    alpha, lam = act.params[0], (activations.SELU_SCALE if act.kind == "selu" else 1.0)
    sigma = np.sqrt(q)
    g_1, g_2 = 0.5 * erfcx(sigma / math.sqrt(2)), 0.5 * erfcx(sigma * math.sqrt(2))
    e_phi = lam * (sigma / math.sqrt(2 * math.pi) + alpha * (g_1 - 0.5))
    e_phi2 = lam**2 * (q / 2 + alpha**2 * (g_2 - 2 * g_1 + 0.5))
    if f == "dphi2":
        return lam**2 * (0.5 + alpha**2 * g_2)
    if f == "var":
        with np.errstate(invalid="ignore"):
            return np.where(np.isinf(q), np.inf, e_phi2 - e_phi**2)
    return e_phi2 if f == "phi2" else e_phi


def expectation(act, q, f: str = "phi2"):
    """E_{u~N(0,1)}[f(sqrt(q) u)] for f = phi^2 ("phi2"), phi, phi'^2 ("dphi2"), or Var[phi(sqrt(q) u)].

    Closed forms: ReLU/leaky ReLU with slope s: E[phi^2] = q (1+s^2)/2, E[phi] = (1-s) sqrt(q/2pi),
    E[phi'^2] = (1+s^2)/2; ELU/SELU through erfcx (no overflow for large q). tanh, sigmoid, GELU (and
    ELU for q < 1e-3): graded Gauss-Legendre, see the module docstring. ``q`` may be an array.
    """
    act = activations.get(act)
    if f not in FUNCTIONS:
        raise ConfigError(f"unknown expectation '{f}'; valid values: {', '.join(FUNCTIONS)}.")
    q_arr = np.asarray(q, dtype=float)
    if not np.all(q_arr >= 0):
        raise ConfigError(f"q == {q_arr[~(q_arr >= 0)].ravel()[0]:g}, must be >= 0.")
    flat = q_arr.ravel()
    if act.kind in ("relu", "leaky_relu", "linear"):
        out = _closed(act, flat, f)
    elif act.kind in ("elu", "selu"):
        out = np.empty_like(flat)
        big = (flat >= _ELU_CLOSED_FROM) & (f != "slope")  # the slope by quadrature throughout
        out[big], out[~big] = _closed(act, flat[big], f), _quadrature(act, flat[~big], f)
    else:
        out = _quadrature(act, flat, f)
    return float(out[0]) if q_arr.ndim == 0 else out.reshape(q_arr.shape)


def length_map(act, q, sigma_w2: float, sigma_b2: float = 0.0):
    """q -> sigma_w2 * E[phi(sqrt(q) u)^2] + sigma_b2 (Poole et al. 2016, eq. 3)."""
    return sigma_w2 * expectation(act, q, "phi2") + sigma_b2


def _turning_points(act) -> list[float]:
    """The q where d/dq E[phi(sqrt(q) u)^2] has a local extremum (GELU: a maximum 0.5043 at q ~ 3.37;
    none for the other activations): sign changes of its differences on a grid of 16 points per
    decade (changes below 1e-9 of it are rounding), each refined by golden-section search in ln q.
    The grid spans q = 1e-8 to 1e24, where the quadrature holds 1e-11; outside, the slope is at its
    limit for q -> 0 or inf to that precision (sigmoid's slope is rounding noise below 1e-15).
    """
    q = np.logspace(-8, 24, 513)
    slope = expectation(act, q, "slope")
    diff = np.diff(slope)
    steps = np.flatnonzero(np.abs(diff) > 1e-9 * np.abs(slope[1:]))
    turns = []
    for i, j in zip(steps[:-1], steps[1:]):
        if np.sign(diff[i]) == np.sign(diff[j]):
            continue
        sign, a, b = np.sign(diff[i]), math.log(q[i]), math.log(q[j + 1])  # sign +1: a maximum
        for _ in range(60):
            c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
            s_c, s_d = expectation(act, np.exp([c, d]), "slope") * sign
            a, b = (a, d) if s_c > s_d else (c, b)
        turns.append(math.exp(0.5 * (a + b)))
    return turns


def _table(act) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grid q on which _solve_q_star brackets fixed points, with E[phi^2] and d/dq E[phi^2] there.

    A log grid (4 points per decade) plus the turning points of d/dq E[phi^2]: between neighbours that
    slope is then monotone, so the slope of M(q) - q, sigma_w2 d/dq E[phi^2] - 1, changes sign at most
    once, and a local extremum of M(q) - q shows as a sign change at the cell's ends.
    """
    if ("table", act.name) not in _cache:
        q = np.sort(np.concatenate([_Q_TABLE, _turning_points(act)]))
        slope = expectation(act, q, "slope")
        slope[0] = slope[1]  # its limit at q = 0 (0/0 there), to 1e-30
        _cache["table", act.name] = (q, expectation(act, q, "phi2"), slope)
    return _cache["table", act.name]


def _illinois(f, lo, hi, f_lo, f_hi):
    """Roots of f(c, i) (c: points, i: the rows they belong to) with f_lo, f_hi of opposite signs at
    the 1-D arrays lo, hi, by Illinois regula falsi: a stale endpoint's value is halved."""
    root, active, side = np.full(lo.size, np.nan), np.arange(lo.size), np.zeros(lo.size)
    for _ in range(100):
        if active.size == 0:
            break
        a, b, fa, fb = lo[active], hi[active], f_lo[active], f_hi[active]
        c = (a * fb - b * fa) / (fb - fa)
        fc = f(c, active)
        same_hi = np.sign(fc) == np.sign(fb)
        f_lo[active] = np.where(same_hi & (side[active] == -1), fa / 2, np.where(same_hi, fa, fc))
        f_hi[active] = np.where(~same_hi & (side[active] == 1), fb / 2, np.where(same_hi, fc, fb))
        lo[active], hi[active] = np.where(same_hi, a, c), np.where(same_hi, c, b)
        side[active] = np.where(same_hi, -1, 1)
        done = (fc == 0) | (hi[active] - lo[active] <= 4e-16 * c) | (c == a) | (c == b)
        root[active[done]] = c[done]
        active = active[~done]
    root[active] = 0.5 * (lo[active] + hi[active])
    return root


def _solve_q_star(act, sigma_w2: np.ndarray, sigma_b2: np.ndarray, q_1: np.ndarray) -> np.ndarray:
    """Vectorised limit of the length map iterated from q_1 (1-D arrays, same shape).

    The map M is increasing, so the iterates move monotonically to the nearest fixed point in the
    direction of M(q_1) - q_1. Bracket it on the grid of :func:`_table`, refine with Illinois regula
    falsi. Two close fixed points between grid points give no sign change there; they show as a
    local minimum of M(q) - q below 0 (or maximum above 0) in a cell on the way, so where the slope
    of M(q) - q changes sign in such a cell, its root joins that row's grid.
    """
    Q, E, D = _table(act)
    rows = np.arange(q_1.size)
    G_table = sigma_w2[:, None] * E + sigma_b2[:, None] - Q  # M(q) - q, (P, N)
    G_1 = length_map(act, q_1, sigma_w2, sigma_b2) - q_1
    q_star = np.where(np.abs(G_1) <= 1e-12 * q_1, q_1, np.nan)  # marginal maps: every q is fixed
    up, down = np.isnan(q_star) & (G_1 > 0), np.isnan(q_star) & (G_1 < 0)

    def search(Q, G):
        # up: the first grid q above q_1 with M(q) <= q; k = 0 means none, the map diverges.
        # down: the last grid q below q_1 with M(q) >= q, clearly so (rounding must not fake a root
        # near q = 0); q = 0 always qualifies, as M(0) >= 0
        k = np.argmax((Q > q_1[:, None]) & (G <= 0), axis=1)
        return k, Q.shape[-1] - 1 - np.argmax(((Q < q_1[:, None]) & (G >= 1e-13 * Q))[:, ::-1], axis=1)

    k, m = search(Q, G_table)
    # cells on the way with a minimum of M(q) - q while M(q) > q at both ends (up), or a maximum
    # while M(q) < q (down): the slope sigma_w2 D - 1 changes sign there, once at most (see _table);
    # |slope| < 1e-12 is rounding: M(q) - q changes by less than 1e-12 q across such a cell
    S, j = sigma_w2[:, None] * D - 1, np.arange(Q.size - 1)
    r, j = np.nonzero(
        (up[:, None] & (Q[1:] > q_1[:, None]) & (j < np.where(k == 0, Q.size, k)[:, None])
         & (S[:, :-1] < -1e-12) & (S[:, 1:] > 1e-12) & (G_table[:, :-1] > 0) & (G_table[:, 1:] > 0))
        | (down[:, None] & (Q[:-1] < q_1[:, None]) & (j >= m[:, None])
           & (S[:, :-1] > 1e-12) & (S[:, 1:] < -1e-12) & (G_table[:, :-1] < 0) & (G_table[:, 1:] < 0)))
    Q = np.broadcast_to(Q, G_table.shape)
    if r.size:  # each such row's grid gets its extrema, the others q = inf (no test holds there)
        x = _illinois(lambda c, i: sigma_w2[r[i]] * expectation(act, c, "slope") - 1, Q[r, j],
                      Q[r, j + 1], S[r, j], S[r, j + 1])
        shape = (q_1.size, np.bincount(r).max())
        X, G_X = np.full(shape, np.inf), np.full(shape, np.nan)
        nth = np.arange(r.size) - np.searchsorted(r, r)  # r is sorted
        X[r, nth], G_X[r, nth] = x, length_map(act, x, sigma_w2[r], sigma_b2[r]) - x
        Q = np.concatenate([Q, X], axis=1)
        order = np.argsort(Q, axis=1, kind="stable")
        Q, G_table = np.take_along_axis(Q, order, 1), np.take_along_axis(np.hstack([G_table, G_X]), order, 1)
        k, m = search(Q, G_table)
    last = Q.shape[1] - 1
    q_star[up & (k == 0)] = np.inf
    i_lo, i_hi = np.where(up, k - 1, m), np.where(up, k, np.minimum(m + 1, last))
    lo_is_q1, hi_is_q1 = up & (Q[rows, i_lo] <= q_1), down & ((Q[rows, i_hi] >= q_1) | (m == last))
    lo, G_lo = np.where(lo_is_q1, q_1, Q[rows, i_lo]), np.where(lo_is_q1, G_1, G_table[rows, i_lo])
    hi, G_hi = np.where(hi_is_q1, q_1, Q[rows, i_hi]), np.where(hi_is_q1, G_1, G_table[rows, i_hi])
    q_star[down & (lo == 0) & (G_lo == 0)] = 0.0  # M(0) = 0 and M(q) < q above: q_l -> 0
    near = down & np.isnan(q_star) & (G_hi >= 0)  # 0 <= M(hi) - hi < 1e-13 hi: hi is fixed enough
    q_star[near] = hi[near]
    active = np.flatnonzero(np.isnan(q_star))
    q_star[active] = _illinois(lambda c, i: length_map(act, c, sigma_w2[active[i]], sigma_b2[active[i]]) - c,
                               lo[active], hi[active], G_lo[active], G_hi[active])
    return q_star


def _phase(chi_1: float) -> tuple[float, float, str]:
    """(xi_c, xi_grad, phase) for one chi_1 (Schoenholz et al. 2017, eqs. 9 and 15)."""
    if abs(chi_1 - 1) < CRITICAL_TOL:
        return math.inf, math.inf, "critical"
    xi_grad = -1 / math.log(chi_1) if chi_1 > 0 else 0.0
    return (xi_grad, xi_grad, "ordered") if chi_1 < 1 else (math.nan, xi_grad, "chaotic")


def fixed_point(act, sigma_w2: float, sigma_b2: float = 0.0, q0: float = 1.0) -> FixedPoint:
    """The fixed point q_star of q -> sigma_w2 E[phi(sqrt(q) u)^2] + sigma_b2, with chi_1 and phase.

    q_star is the limit of q_l from q_1 = sigma_w2 q0 + sigma_b2 (q0 = E[x^2] of the input): inf when
    the map diverges (ReLU, sigma_w2 > 2), 0 when it collapses (tanh, sigma_w2 <= 1, sigma_b2 = 0).
    A marginal map whose every q is fixed (ReLU at sigma_w2 = 2, sigma_b2 = 0) gives q_star = q_1.
    chi_1 = sigma_w2 E[phi'(sqrt(q_star) u)^2]; ordered if chi_1 < 1 - 1e-6, chaotic if > 1 + 1e-6.
    xi_c = -1/ln chi_1 in the ordered phase and inf at criticality; in the chaotic phase the
    correlation depth scale needs the correlation fixed point c* < 1 (a 2-D integral), not computed
    here, so xi_c is nan there. xi_grad = -1/ln chi_1 always (Schoenholz et al. 2017).
    Poole et al. 2016, "Exponential expressivity ..."; Schoenholz et al. 2017, "Deep information ...".
    """
    act = activations.get(act)
    args = [np.array([float(v)]) for v in (sigma_w2, sigma_b2, sigma_w2 * q0 + sigma_b2)]
    q_star = float(_solve_q_star(act, *args)[0])
    chi_1 = sigma_w2 * expectation(act, q_star, "dphi2")
    return FixedPoint(q_star, chi_1, *_phase(chi_1))


def phase_diagram(act, sigma_w2, sigma_b2, q0: float = 1.0) -> dict:
    """q_star, chi_1 and xi_c over the grid sigma_b2 (rows) x sigma_w2 (columns), as Poole et al.'s
    Fig. 1 / Schoenholz et al.'s Fig. 1. Arrays of shape (len(sigma_b2), len(sigma_w2))."""
    act = activations.get(act)
    w, b = np.asarray(sigma_w2, dtype=float), np.asarray(sigma_b2, dtype=float)
    W, B = np.meshgrid(w, b)
    q_star = _solve_q_star(act, W.ravel(), B.ravel(), W.ravel() * q0 + B.ravel()).reshape(W.shape)
    chi_1 = W * expectation(act, q_star, "dphi2")
    xi_c = np.array([_phase(c)[0] for c in chi_1.ravel()]).reshape(W.shape)
    return {"sigma_w2": w, "sigma_b2": b, "q_star": q_star, "chi_1": chi_1, "xi_c": xi_c}


def _on_critical_line(act, q):
    """For q > 0 (a float or an array), the (sigma_w2, sigma_b2) whose fixed point is q with chi_1 = 1, and the length
    map's slope there, sigma_w2 d/dq E[phi^2]. chi_1 = 1 fixes sigma_w2 and M(q) = q then fixes
    sigma_b2, so a target q has exactly one candidate. It is a stable fixed point (layers converge to
    it) iff the slope is < 1; the slope is 1 + sigma_w2 E[phi phi''], so phi phi'' < 0 on average
    (tanh, ELU) gives < 1, and GELU, whose phi phi'' = z Phi(z) phi(z) (2 - z^2) is > 0 for small z,
    gives > 1 below q ~ 3.55. ReLU-like maps are linear, slope 1: every q is fixed, none attracts."""
    dphi2 = expectation(act, q, "dphi2")
    sigma_w2 = 1 / dphi2
    sigma_b2 = q - sigma_w2 * expectation(act, q, "phi2")
    if act.kind in ("relu", "leaky_relu", "linear"):
        return sigma_w2, sigma_b2, 0.0 * q  # marginal, accepted: q_star is the first layer's q
    return sigma_w2, sigma_b2, sigma_w2 * expectation(act, q, "slope")


def _working_q(act) -> str:
    """Which critical:q_star=Q work for ``act``: from the lowest q above which every q on a log grid
    (1e-6 to 1e12, four per decade) has sigma_b2 >= 0 and slope < 1, refined by bisection and
    rounded up to 4 digits (tanh, ELU, SELU: any; sigmoid: >= 44.7x; GELU: >= 3.55x)."""
    key = ("working_q", act.name)
    if key not in _cache:
        def ok(q):
            _, sigma_b2, slope = _on_critical_line(act, q)
            return (sigma_b2 >= -1e-12 * q) & (slope < 1)

        grid = np.logspace(-6, 12, 73)
        bad = np.flatnonzero(~ok(grid))
        if bad.size == 0 or bad[-1] == grid.size - 1:
            _cache[key] = "no q_star from 1e-06 to 1e+12 works" if bad.size else ""
        else:
            lo, hi = grid[bad[-1]], grid[bad[-1] + 1]
            while hi - lo > 1e-9 * hi:
                mid = math.sqrt(lo * hi)
                lo, hi = (lo, mid) if ok(np.array([mid]))[0] else (mid, hi)
            step = 10.0 ** (math.floor(math.log10(hi)) - 3)
            _cache[key] = f"q_star must be >= {math.ceil(hi / step) * step:.4g}"
    return _cache[key]


def critical_point(act, sigma_b2: float = 0.0, target_q: float | None = None,
                   q0: float = 1.0) -> CriticalPoint:
    """A point (sigma_w2, sigma_b2, q_star) on the critical line chi_1 = 1 (Schoenholz et al. 2017).

    With ``target_q``: sigma_w2 = 1 / E[phi'(sqrt(q) u)^2] and sigma_b2 = q - sigma_w2 E[phi(sqrt(q) u)^2],
    so that q = target_q is the fixed point; an error if that needs sigma_b2 < 0 or if q is an unstable
    fixed point (layers move away from it, GELU below q ~ 3.55), naming the q_star that work. Otherwise: the
    sigma_w2 whose fixed point (reached from q0) has chi_1 = 1, by Brent's method. tanh at
    sigma_b2 = 0 gives sigma_w2 = 1 with q_star -> 0. For ReLU-like maps the line is sigma_w2 = 2/(1+s^2),
    sigma_b2 = 0, where every q is fixed (q_star = sigma_w2 q0).
    """
    act = activations.get(act)
    if target_q is not None:
        if sigma_b2 != 0:
            raise ConfigError("give sigma_b2 or target_q, not both.")
        if not target_q > 0:
            raise ConfigError(f"target_q == {target_q:g}, must be > 0.")
        sigma_w2, sigma_b2, slope = (float(v) for v in _on_critical_line(act, float(target_q)))
        if sigma_b2 < -1e-12 * target_q:
            raise ConfigError(f"{act.name} has no critical point with q_star == {target_q:g}: "
                              f"it would need sigma_b2 == {sigma_b2:.3g} < 0; {_working_q(act)}.")
        if not slope < 1:
            raise ConfigError(f"{act.name} has no stable critical point with q_star == {target_q:g}: "
                              f"the length map's slope there is {slope:.4g} >= 1, so q_l moves away "
                              f"from it; {_working_q(act)}.")
        return CriticalPoint(sigma_w2, max(sigma_b2, 0.0), float(target_q))
    if act.kind in ("relu", "leaky_relu", "linear"):
        sigma_w2 = 1 / expectation(act, 1.0, "dphi2")
        if sigma_b2 > 0:
            raise ConfigError(f"{act.name} has no critical point with sigma_b2 == {sigma_b2:g} > 0: "
                              f"at sigma_w2 == {sigma_w2:g} the length map grows without bound.")
        return CriticalPoint(sigma_w2, 0.0, sigma_w2 * q0)
    z = np.array([1e-150, -1e-150])
    sigma_w2 = 1 / float(np.mean(act.dphi(z, act.phi(z)) ** 2))  # 1 / phi'(0)^2
    if sigma_b2 == 0 and act.phi(np.zeros(1))[0] == 0 and fixed_point(act, sigma_w2, 0.0, q0).q_star == 0:
        return CriticalPoint(sigma_w2, 0.0, 0.0)  # q = 0 attracts and chi_1 = sigma_w2 phi'(0)^2 = 1
    from scipy.optimize import brentq

    def excess(sigma_w2):
        return fixed_point(act, sigma_w2, sigma_b2, q0).chi_1 - 1

    lo = 0.5 / act.max_slope**2  # chi_1 <= sigma_w2 * max_slope^2 < 1
    hi = 2 * lo
    while excess(hi) < 0:
        if hi > 1e8:
            raise ConfigError(f"{act.name} reaches no chi_1 = 1 for sigma_w2 <= 1e8.")
        lo, hi = hi, 2 * hi
    sigma_w2 = brentq(excess, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps)
    point = fixed_point(act, sigma_w2, sigma_b2, q0)
    if abs(point.chi_1 - 1) > CRITICAL_TOL:
        raise ConfigError(f"{act.name} with sigma_b2 == {sigma_b2:g} has no critical point: chi_1 "
                          f"jumps across 1 at sigma_w2 == {sigma_w2:.6g}.")
    return CriticalPoint(sigma_w2, float(sigma_b2), point.q_star)


def predict(act, sigma_w2: Sequence[float], sigma_b2: float | Sequence[float] = 0.0, q0: float = 1.0,
            sigma_w2_back: Sequence[float] | None = None) -> list[dict]:
    """Per-layer mean-field predictions for an MLP with zero-mean i.i.d. weights and biases.

    ``sigma_w2[l-1]`` = fan_in_l Var[W_l]; ``sigma_w2_back[l-1]`` = fan_out_l Var[W_l] (default: the
    same, square layers); ``sigma_b2`` = Var[b_l] (one value or one per layer); ``q0`` = E[x^2] of
    the input (N(0,1): 1, U(-1,1): 1/3, half ones and half zeros: 0.5). Forward (Glorot & Bengio
    2010, He et al. 2015): q_l = sigma_w2_l E[a_{l-1}^2] + sigma_b2_l, E[a_0^2] = q0, z_l ~ N(0, q_l).
    Backward from L = sum(a_L * g), g ~ N(0, 1): Var[dL/da_L] = 1, Var[grad_pre_l] = Var[dL/da_l]
    E[phi'(z_l)^2], Var[dL/da_{l-1}] = sigma_w2_back_l Var[grad_pre_l] (gradient independence,
    Schoenholz et al. 2017). Returns one dict per layer: layer, q, pre_mean, pre_std, post_mean,
    post_std, grad_post_std (of dL/da_l), grad_pre_std.
    """
    act = activations.get(act)
    sigma_w2 = [float(v) for v in sigma_w2]
    n = len(sigma_w2)
    back = sigma_w2 if sigma_w2_back is None else [float(v) for v in sigma_w2_back]
    b2 = [float(sigma_b2)] * n if np.ndim(sigma_b2) == 0 else [float(v) for v in sigma_b2]
    if n == 0 or len(back) != n or len(b2) != n:
        raise ConfigError(f"sigma_w2, sigma_w2_back and sigma_b2 have {n}, {len(back)} and "
                          f"{len(b2)} layers, must be equal and >= 1.")
    if not all(v >= 0 for v in [*sigma_w2, *back, *b2, q0]):
        raise ConfigError("sigma_w2, sigma_w2_back, sigma_b2 and q0 must be >= 0.")
    layers, e_a2 = [], float(q0)
    for l in range(n):
        q = (sigma_w2[l] * e_a2 if sigma_w2[l] > 0 else 0.0) + b2[l]  # not 0 * inf
        e_a2 = expectation(act, q, "phi2")
        layers.append({"layer": l + 1, "q": q, "pre_mean": 0.0, "pre_std": math.sqrt(q),
                       "post_mean": expectation(act, q, "phi"),
                       "post_std": math.sqrt(max(expectation(act, q, "var"), 0.0)),
                       "_dphi2": expectation(act, q, "dphi2")})
    var_post = 1.0  # Var[dL/da_L]
    for l in reversed(range(n)):
        var_pre = var_post * layers[l].pop("_dphi2")
        layers[l].update(grad_post_std=math.sqrt(var_post), grad_pre_std=math.sqrt(var_pre))
        var_post = back[l] * var_pre
    return layers


def predict_for_init(init_spec, bias_spec, act_spec, widths: Sequence[int], input_dim: int,
                     q0: float = 1.0) -> tuple[list[dict] | None, str | None]:
    """:func:`predict` for an MLP input_dim -> widths[0] -> ... -> widths[-1] built from init specs.

    sigma_w2_l = fan_in Var[W_l] and sigma_w2_back_l = fan_out Var[W_l] from
    ``inits.resolve(spec).moments(fan_in, fan_out)``. Returns ``(layers, None)``, or ``(None, reason)``
    when the theory does not apply: constant weights (zeros/ones/constant: every unit is identical),
    weights or biases of non-zero mean (a shift shared by every unit, outside this zero-mean theory).
    Orthogonal weights are treated as i.i.d. of the same variance (their forward length map is the
    same in the wide limit).
    """
    init, bias = inits.resolve(init_spec), inits.resolve(bias_spec, "bias init")
    fans = [int(input_dim), *[int(v) for v in widths]]
    sigma_w2, back, b2 = [], [], []
    for fan_in, fan_out in zip(fans[:-1], fans[1:]):
        reason = why_no_prediction(init, bias, fan_in, fan_out)
        if reason:
            return None, reason
        var = init.moments(fan_in, fan_out)[1]
        sigma_w2.append(fan_in * var)
        back.append(fan_out * var)
        b2.append(bias.moments(fan_in, fan_out)[1])
    return predict(act_spec, sigma_w2, b2, q0, back), None


def why_no_prediction(init, bias, fan_in: int, fan_out: int) -> str | None:
    """Why a (fan_in, fan_out) layer of these resolved inits is outside the zero-mean theory, if it is."""
    mean, var = init.moments(fan_in, fan_out)
    if var == 0:
        return (f"constant init '{init}': weights are not zero-mean i.i.d., so every unit of "
                "a layer is identical; mean-field theory does not apply.")
    if mean != 0:
        return (f"init '{init}' has mean {mean:g} != 0: every unit gets the same shift; "
                "the zero-mean mean-field theory does not apply.")
    b_mean = bias.moments(fan_in, fan_out)[0]
    if b_mean != 0:
        return (f"bias init '{bias}' has mean {b_mean:g} != 0: a shift shared by every unit "
                "is outside the zero-mean mean-field theory, so no prediction.")
    return None


def classic_inits(act) -> list[str]:
    """The named inits that ``actstats theory`` lists and its phase diagram marks, for ``act``:
    the source documents' N(0, 0.01^2) and N(0, 1), PyTorch's nn.Linear default, Xavier, LeCun, He,
    PyTorch's Kaiming gain for ``act`` where it has one of its own, critical and LSUV."""
    act = activations.get(act)
    names = ["normal:std=0.01", "pytorch_linear", "xavier", "lecun", "he"]
    if act.kind in ("tanh", "selu"):
        names.append(f"kaiming_normal:nonlinearity={act.kind}")
    elif act.kind == "leaky_relu":
        names.append(f"kaiming_normal:a={act.params[0] if act.params else 0.01:g}")
    return names + ["normal:std=1", "critical:q_star=1", "lsuv"]


def init_summary(act, init_spec, bias_spec="zeros", width: int = 500, q0: float = 1.0) -> dict:
    """Where an init puts a square net of ``width`` units on the phase diagram, and its fixed point.

    ``{"init", "bias_init", "sigma_w2", "sigma_b2", "q_star", "chi_1", "xi_c", "xi_grad", "phase"}``
    with sigma_w2 = width Var[W] and sigma_b2 = Var[b]; or ``{"init", "bias_init", "reason"}`` when
    the theory makes no prediction. ``critical:q_star=Q`` is its point on the critical line; ``lsuv``
    its wide limit, where one rescaling makes every layer's q exactly 1: sigma_w2 E[phi(u)^2] +
    sigma_b2 = 1 (after the first layer, which sees the input).
    """
    act = activations.get(act)
    init, bias = inits.resolve(init_spec), inits.resolve(bias_spec, "bias init")
    named = [v.strip() if isinstance(v, str) else str(r) for v, r in ((init_spec, init), (bias_spec, bias))]
    out = {"init": named[0], "bias_init": named[1]}
    reason = why_no_prediction(init, bias, width, width)
    sigma_b2 = bias.moments(width, width)[1]
    if init.scheme == "critical":
        if bias.scheme != "zeros":
            return {**out, "reason": "init 'critical' sets the biases itself (N(0, sigma_b^2)); "
                                     "a bias init other than zeros does not go with it."}
        try:
            point = critical_point(act, target_q=init.kwargs["q_star"])
        except ConfigError as exc:
            return {**out, "reason": str(exc)}
        sigma_w2, sigma_b2 = point.sigma_w2, point.sigma_b2
    elif reason:
        return {**out, "reason": reason}
    elif init.scheme == "lsuv":
        if sigma_b2 >= 1:
            return {**out, "reason": f"lsuv cannot reach std 1 when Var[b] == {sigma_b2:g} >= 1."}
        sigma_w2 = (1 - sigma_b2) / expectation(act, 1.0, "phi2")
    elif init.variance_args():  # width Var[W] = width * scale / width: exactly scale on a square net
        sigma_w2 = init.variance_args()["scale"]
    else:
        sigma_w2 = width * init.moments(width, width)[1]
    fp = fixed_point(act, sigma_w2, sigma_b2, q0)
    return {**out, "sigma_w2": sigma_w2, "sigma_b2": sigma_b2, **fp._asdict()}
