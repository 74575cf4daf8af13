"""Tests for actstats.theory.

Every expected number comes from a source independent of the code under test: a closed form, a
paper, scipy's adaptive quadrature over z ~ N(0, q) of pure-Python phi and phi' written here from
their textbook definitions (theory.py integrates over u ~ N(0, 1) with a fixed graded Gauss-Legendre
rule and numpy's activations), or a NumPy simulation of the network.
"""

import math

import numpy as np
import pytest
from scipy import integrate

from actstats import activations, inits, theory
from actstats.errors import ConfigError

Q_GRID = (1e-8, 1e-4, 1e-2, 1.0, 10.0, 100.0, 1e4)
# Klambauer, Unterthiner, Mayr & Hochreiter 2017, "Self-Normalizing Neural Networks"
SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def math_functions(spec):
    """(phi, phi') for one float, in pure Python, written so that no |z| overflows."""
    act = activations.get(spec)
    if act.kind == "tanh":
        def dphi(z):  # sech(z)^2
            e = math.exp(-2 * abs(z))
            return 4 * e / (1 + e) ** 2
        return math.tanh, dphi
    if act.kind == "sigmoid":
        def phi(z):
            e = math.exp(-abs(z))
            return 1 / (1 + e) if z >= 0 else e / (1 + e)

        def dphi(z):
            e = math.exp(-abs(z))
            return e / (1 + e) ** 2
        return phi, dphi
    if act.kind == "gelu":
        def cdf(z):
            return 0.5 * math.erfc(-z / math.sqrt(2))
        return (lambda z: z * cdf(z)), (lambda z: cdf(z) + z * math.exp(-z * z / 2) / math.sqrt(2 * math.pi))
    if act.kind in ("elu", "selu"):
        alpha, lam = (act.params[0], 1.0) if act.kind == "elu" else (SELU_ALPHA, SELU_SCALE)
        return (lambda z: lam * (z if z > 0 else alpha * math.expm1(z))), \
               (lambda z: lam * (1.0 if z > 0 else alpha * math.exp(z)))
    s = {"relu": 0.0, "linear": 1.0}.get(act.kind, act.params[0] if act.params else 0.0)
    return (lambda z: z if z > 0 else s * z), (lambda z: 1.0 if z > 0 else s)


def quad_expect(spec, q, f):
    """E[f(z)], z ~ N(0, q), by scipy.integrate.quad over z on +-12 sqrt(q), cut where phi bends.

    Checked against 20-digit mpmath integrals while writing these tests: they agree to 5e-11.
    "var" integrates (phi - E[phi])^2, so it does not cancel when Var[phi] << E[phi]^2.
    """
    phi, dphi = math_functions(spec)
    if f == "var":
        mean = quad_expect(spec, q, "phi")
        g = lambda z: (phi(z) - mean) ** 2  # noqa: E731
    else:
        g = {"phi2": lambda z: phi(z) ** 2, "phi": phi, "dphi2": lambda z: dphi(z) ** 2}[f]
    sd = math.sqrt(q)
    norm = 1 / (sd * math.sqrt(2 * math.pi))
    cuts = sorted({0.0, *(c for c in (-5.0, -1.0, 1.0, 5.0) if abs(c) < 12 * sd)})
    # epsabs: E[phi] of an odd-ish phi cancels to ~0 (tanh, SELU at q = 1); 1e-14 sqrt(q) is enough
    return integrate.quad(lambda z: g(z) * math.exp(-z * z / (2 * q)) * norm, -12 * sd, 12 * sd,
                          points=cuts, epsabs=1e-14 * sd, epsrel=1e-12, limit=500)[0]


# --- Gaussian expectations ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["tanh", "sigmoid", "gelu", "elu", "selu", "elu:alpha=0.5", "relu",
                                  "leaky_relu:negative_slope=0.2"])
def test_expectations_match_quadrature_to_1e6(spec):
    for q in Q_GRID:
        scale = math.sqrt(quad_expect(spec, q, "phi2"))
        for f in ("phi2", "phi", "dphi2", "var"):
            want, got = quad_expect(spec, q, f), theory.expectation(spec, q, f)
            # E[phi] is exactly 0 for tanh and ~0 for SELU at q = 1: compare on phi's own scale there
            assert abs(got - want) <= 1e-6 * abs(want) + 1e-12 * scale, (spec, q, f, got, want)


def test_expectation_closed_forms():
    q = np.array([1e-8, 0.3, 7.0, 1e4])
    assert np.array_equal(theory.expectation("relu", q, "phi2"), q / 2)  # He et al. 2015
    assert np.allclose(theory.expectation("relu", q, "phi"), np.sqrt(q / (2 * np.pi)), rtol=1e-15)
    assert np.array_equal(theory.expectation("relu", q, "dphi2"), np.full(4, 0.5))
    assert np.array_equal(theory.expectation("linear", q, "phi2"), q)
    s = 0.2
    assert np.allclose(theory.expectation(f"leaky_relu:negative_slope={s}", q, "phi2"),
                       q * (1 + s * s) / 2, rtol=1e-15)


@pytest.mark.parametrize("spec, at_zero, at_inf", [
    ("tanh", (0, 0, 1), (1, 0, 0)),
    ("sigmoid", (0.25, 0.5, 1 / 16), (0.5, 0.5, 0)),
    ("gelu", (0, 0, 0.25), (math.inf, math.inf, 0.5)),
    ("relu", (0, 0, 0.5), (math.inf, math.inf, 0.5)),
    ("elu", (0, 0, 1), (math.inf, math.inf, 0.5)),
    # q -> 0+: phi' is lam on one side and lam * alpha on the other
    ("selu", (0, 0, SELU_SCALE**2 * (1 + SELU_ALPHA**2) / 2), (math.inf, math.inf, SELU_SCALE**2 / 2)),
])
def test_expectation_limits(spec, at_zero, at_inf):
    for q, want in ((0.0, at_zero), (math.inf, at_inf)):
        got = [theory.expectation(spec, q, f) for f in ("phi2", "phi", "dphi2")]
        assert got == pytest.approx(want, rel=1e-12, abs=1e-300), (spec, q)


def test_expectation_shapes_and_errors():
    assert theory.expectation("tanh", np.ones((3, 2))).shape == (3, 2)
    assert isinstance(theory.expectation("tanh", 1.0), float)
    with pytest.raises(ConfigError, match="must be >= 0"):
        theory.expectation("tanh", -1.0)
    with pytest.raises(ConfigError, match="valid values: phi2, phi, dphi2, var"):
        theory.expectation("tanh", 1.0, "phi3")


# --- fixed point, chi_1, phases ---------------------------------------------------------------------


def test_relu_he_is_critical_and_keeps_q_constant():
    # He et al. 2015: sigma_w2 = 2 makes Var[z_l] the same in every layer and chi_1 = 2 * 1/2 = 1
    fp = theory.fixed_point("relu", 2.0, 0.0)
    assert (fp.q_star, fp.chi_1, fp.xi_c, fp.phase) == (2.0, 1.0, math.inf, "critical")
    layers = theory.predict("relu", [2.0] * 20, 0.0, q0=1.0)
    assert [r["q"] for r in layers] == [2.0] * 20
    assert [r["grad_pre_std"] for r in layers] == [math.sqrt(0.5)] * 20


def test_kaiming_gain_for_leaky_relu_is_critical():
    gain = inits.calculate_gain("leaky_relu", 0.2)  # PyTorch: sqrt(2 / (1 + slope^2))
    fp = theory.fixed_point("leaky_relu:negative_slope=0.2", gain**2, 0.0)
    assert fp.chi_1 == pytest.approx(1.0, abs=1e-14) and fp.phase == "critical"


@pytest.mark.parametrize("spec, sigma_w2, sigma_b2", [
    ("tanh", 1.0, 0.05), ("tanh", 1.5, 0.05), ("tanh", 2.5, 0.3), ("tanh", 4.0, 0.0),
    ("sigmoid", 4.0, 0.1), ("elu", 1.5, 0.1), ("gelu", 1.5, 0.05),
])
def test_fixed_point_satisfies_the_map(spec, sigma_w2, sigma_b2):
    fp = theory.fixed_point(spec, sigma_w2, sigma_b2)
    assert 0 < fp.q_star < math.inf
    mapped = sigma_w2 * quad_expect(spec, fp.q_star, "phi2") + sigma_b2
    assert abs(fp.q_star - mapped) <= 1e-10 * fp.q_star
    chi_1 = sigma_w2 * quad_expect(spec, fp.q_star, "dphi2")
    assert fp.chi_1 == pytest.approx(chi_1, rel=1e-9)


@pytest.mark.parametrize("sigma_w2, sigma_b2, q0", [(4.0, 0.0, 1.0), (1.0, 0.05, 1.0), (1.0, 0.05, 0.01)])
def test_fixed_point_is_the_limit_of_the_iterated_map(sigma_w2, sigma_b2, q0):
    q = sigma_w2 * q0 + sigma_b2  # q_1; then q_l = sigma_w2 E[tanh(z_{l-1})^2] + sigma_b2
    for _ in range(400):
        q, previous = sigma_w2 * quad_expect("tanh", q, "phi2") + sigma_b2, q
        if abs(q - previous) < 1e-15:
            break
    assert theory.fixed_point("tanh", sigma_w2, sigma_b2, q0).q_star == pytest.approx(q, rel=1e-9)


def test_tanh_phases():
    # sigma_b2 = 0, sigma_w2 < 1: q_l -> 0, where tanh'(0) = 1, so chi_1 = sigma_w2 (Poole et al. 2016)
    fp = theory.fixed_point("tanh", 0.5, 0.0)
    assert fp.q_star == 0.0 and fp.phase == "ordered"
    assert fp.chi_1 == pytest.approx(0.5, rel=1e-14)
    assert fp.xi_c == pytest.approx(1 / math.log(2), rel=1e-14)
    for sigma_b2 in (0.0, 0.05):
        fp = theory.fixed_point("tanh", 4.0, sigma_b2)
        chi_1 = 4.0 * quad_expect("tanh", fp.q_star, "dphi2")
        assert fp.phase == "chaotic" and chi_1 > 1
        assert fp.chi_1 == pytest.approx(chi_1, rel=1e-9)
        assert math.isnan(fp.xi_c) and fp.xi_grad == pytest.approx(-1 / math.log(chi_1), rel=1e-8)
    fp = theory.fixed_point("tanh", 0.5, 0.05)
    chi_1 = 0.5 * quad_expect("tanh", fp.q_star, "dphi2")
    assert fp.phase == "ordered" and fp.xi_c == pytest.approx(-1 / math.log(chi_1), rel=1e-8)


def test_relu_fixed_points_in_closed_form():
    # q = sigma_w2 q / 2 + sigma_b2: q_star = sigma_b2 / (1 - sigma_w2 / 2) below 2, divergence above
    fp = theory.fixed_point("relu", 1.0, 0.1)
    assert fp.q_star == pytest.approx(0.2, rel=1e-13) and fp.chi_1 == 0.5
    fp = theory.fixed_point("relu", 3.0, 0.1)
    assert fp.q_star == math.inf and fp.chi_1 == 1.5 and fp.phase == "chaotic"


# --- critical line ----------------------------------------------------------------------------------


def test_tanh_critical_point_at_zero_bias_is_one():
    # Poole et al. 2016 / Schoenholz et al. 2017: the critical line starts at (sigma_w2, sigma_b2) = (1, 0)
    point = theory.critical_point("tanh", sigma_b2=0.0)
    assert point == (1.0, 0.0, 0.0)


@pytest.mark.parametrize("sigma_b2", [0.01, 0.05, 0.3])
def test_tanh_critical_line(sigma_b2):
    sigma_w2, _, q_star = theory.critical_point("tanh", sigma_b2=sigma_b2)
    assert sigma_w2 > 1 and q_star > 0
    assert sigma_w2 * quad_expect("tanh", q_star, "dphi2") == pytest.approx(1, abs=1e-7)
    mapped = sigma_w2 * quad_expect("tanh", q_star, "phi2") + sigma_b2
    assert mapped == pytest.approx(q_star, rel=1e-9)


@pytest.mark.parametrize("spec, target_q", [("tanh", 0.5), ("tanh", 2.0), ("sigmoid", 60.0)])
def test_critical_point_for_a_target_fixed_point(spec, target_q):
    sigma_w2, sigma_b2, q_star = theory.critical_point(spec, target_q=target_q)
    assert q_star == target_q and sigma_b2 >= 0
    assert sigma_w2 * quad_expect(spec, target_q, "dphi2") == pytest.approx(1, rel=1e-9)
    mapped = sigma_w2 * quad_expect(spec, target_q, "phi2") + sigma_b2
    assert mapped == pytest.approx(target_q, rel=1e-9)
    fp = theory.fixed_point(spec, sigma_w2, sigma_b2)  # ... and the network actually gets there
    assert fp.q_star == pytest.approx(target_q, rel=1e-8) and fp.phase == "critical"


def test_critical_point_errors_and_relu():
    assert theory.critical_point("relu") == (2.0, 0.0, 2.0)
    with pytest.raises(ConfigError, match="no critical point with sigma_b2 == 0.1 > 0"):
        theory.critical_point("relu", sigma_b2=0.1)
    with pytest.raises(ConfigError, match="not both"):
        theory.critical_point("tanh", sigma_b2=0.1, target_q=1.0)


def quad_slope(spec, q, h=1e-4):
    """d/dq E[phi(z)^2], z ~ N(0, q), as a central difference quotient of quad_expect (error ~1e-8)."""
    return (quad_expect(spec, q * (1 + h), "phi2") - quad_expect(spec, q * (1 - h), "phi2")) / (2 * q * h)


@pytest.mark.parametrize("spec", ["tanh", "sigmoid", "gelu", "elu", "selu"])
def test_length_map_slope_matches_a_difference_quotient(spec):
    for q in (0.1, 1.0, 4.0, 100.0):
        assert theory.expectation(spec, q, "slope") == pytest.approx(quad_slope(spec, q), rel=1e-6)


def gelu_phi_phi2(z):
    """phi(z) phi''(z) for GELU: phi = z Phi(z), phi' = Phi(z) + z pdf(z), phi'' = pdf(z) (2 - z^2)."""
    pdf = math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    return z * 0.5 * math.erfc(-z / math.sqrt(2)) * pdf * (2 - z * z)


def lowest_working(f, lo, hi):
    """The root of f in [lo, hi] rounded up to 4 significant digits, as the error message says it."""
    from scipy.optimize import brentq

    root = brentq(f, lo, hi, xtol=1e-13)
    step = 10.0 ** (math.floor(math.log10(root)) - 3)
    return f"{math.ceil(root / step) * step:.4g}"


def test_gelu_critical_q_star_1_is_an_unstable_fixed_point_and_is_refused():
    # chi_1 = 1 fixes sigma_w2 and M(1) = 1 fixes sigma_b2: the only candidate for q_star = 1
    sigma_w2 = 1 / quad_expect("gelu", 1.0, "dphi2")
    sigma_b2 = 1 - sigma_w2 * quad_expect("gelu", 1.0, "phi2")
    M = lambda q: sigma_w2 * quad_expect("gelu", q, "phi2") + sigma_b2  # noqa: E731
    assert M(1.0) == pytest.approx(1.0, rel=1e-12)
    assert M(1.05) > 1.05 and M(0.95) < 0.95  # q_l moves away from 1 on both sides
    slope = sigma_w2 * quad_slope("gelu", 1.0)
    assert slope > 1
    # slope = 1 + sigma_w2 E[phi phi'']: stable exactly where E[phi phi''] < 0, q > 3.5616 for GELU
    def e_phi_phi2(q):
        sd = math.sqrt(q)
        return integrate.quad(lambda u: gelu_phi_phi2(sd * u) * math.exp(-u * u / 2), -12, 12,
                              points=[0.0], epsabs=1e-13, limit=200)[0]
    bound = lowest_working(e_phi_phi2, 2.0, 5.0)
    assert bound == "3.562"
    for target in (0.1, 1.0):
        sigma_w2 = 1 / quad_expect("gelu", target, "dphi2")
        slope = sigma_w2 * quad_slope("gelu", target)
        with pytest.raises(ConfigError) as err:
            theory.critical_point("gelu", target_q=target)
        assert str(err.value) == (
            f"gelu has no stable critical point with q_star == {target:g}: the length map's slope "
            f"there is {slope:.4g} >= 1, so q_l moves away from it; q_star must be >= {bound}.")


def test_gelu_critical_q_star_4_is_reached_from_below_and_above():
    sigma_w2 = 1 / quad_expect("gelu", 4.0, "dphi2")
    sigma_b2 = 4 - sigma_w2 * quad_expect("gelu", 4.0, "phi2")
    point = theory.critical_point("gelu", target_q=4.0)
    assert point.sigma_w2 == pytest.approx(sigma_w2, rel=1e-10) and point.q_star == 4.0
    assert point.sigma_b2 == pytest.approx(sigma_b2, rel=1e-9)
    assert 0.99 < sigma_w2 * quad_slope("gelu", 4.0) < 1  # attracts, slowly: ~270 layers per e-fold
    # iterate the length map with a 101-node Gauss-Hermite rule (phi is smooth; M(4) - 4 ~ 3e-11)
    from scipy.special import ndtr

    u, w = np.polynomial.hermite_e.hermegauss(101)
    w = w / w.sum()
    for q0 in (1.0, 10.0):  # input E[x^2]: from q_1 = 2.16 below and 19.9 above
        q = sigma_w2 * q0 + sigma_b2
        for _ in range(6000):
            z = math.sqrt(q) * u
            q = sigma_w2 * float(w @ (z * ndtr(z)) ** 2) + sigma_b2
        assert q == pytest.approx(4.0, abs=1e-7)
    fp = theory.fixed_point("gelu", point.sigma_w2, point.sigma_b2)
    assert fp.q_star == pytest.approx(4.0, rel=1e-9) and fp.phase == "critical"


@pytest.mark.parametrize("spec", list(activations.ACTIVATIONS))
@pytest.mark.parametrize("target", [0.1, 1.0, 4.0])
def test_critical_q_star_for_every_activation(spec, target):
    phi2, dphi2 = quad_expect(spec, target, "phi2"), quad_expect(spec, target, "dphi2")
    sigma_b2 = target - phi2 / dphi2
    if spec == "sigmoid":  # sigma_b2 < 0 until q ~ 45.6, where E[phi^2] / E[phi'^2] = q
        bound = lowest_working(lambda q: q - quad_expect(spec, q, "phi2") / quad_expect(spec, q, "dphi2"),
                               10.0, 100.0)
        with pytest.raises(ConfigError) as err:
            theory.critical_point(spec, target_q=target)
        assert str(err.value) == (f"sigmoid has no critical point with q_star == {target:g}: it would "
                                  f"need sigma_b2 == {sigma_b2:.3g} < 0; q_star must be >= {bound}.")
        return
    if spec == "gelu" and target < 3.5:  # the unstable ones, above
        with pytest.raises(ConfigError, match="^gelu has no stable critical point"):
            theory.critical_point(spec, target_q=target)
        return
    point = theory.critical_point(spec, target_q=target)
    fp = theory.fixed_point(spec, point.sigma_w2, point.sigma_b2)
    assert point.sigma_w2 == pytest.approx(1 / dphi2, rel=1e-9) and fp.phase == "critical"
    if spec in ("relu", "leaky_relu", "linear"):  # every q is fixed: q_star is the first layer's
        assert point.sigma_b2 == 0 and fp.q_star == pytest.approx(point.sigma_w2, rel=1e-12)
    else:
        assert point.sigma_b2 == pytest.approx(sigma_b2, rel=1e-8, abs=1e-12)
        assert point.sigma_w2 * quad_slope(spec, target) < 1
        assert fp.q_star == pytest.approx(target, rel=1e-8)


def test_two_fixed_points_1e3_apart_in_one_grid_cell_are_both_seen():
    # GELU's E[phi^2] is convex up to q ~ 3.4: choose sigma_w2 so that M(q) - q has its minimum at
    # q = 1.5 and sigma_b2 so that the minimum is -7e-9. Two fixed points 1.5e-3 apart straddle it,
    # inside one cell of the 4-per-decade grid (1 to 1.78), where M(q) - q > 0 at both ends
    from scipy.optimize import brentq

    sigma_w2 = 1 / quad_slope("gelu", 1.5)
    sigma_b2 = 1.5 - sigma_w2 * quad_expect("gelu", 1.5, "phi2") - 7e-9
    G = lambda q: sigma_w2 * quad_expect("gelu", q, "phi2") + sigma_b2 - q  # noqa: E731
    r_1, r_2 = brentq(G, 1.49, 1.5, xtol=1e-14), brentq(G, 1.5, 1.51, xtol=1e-14)
    assert 5e-4 < (r_2 - r_1) / r_1 < 2e-3
    q_1 = sigma_w2 * 0.1 + sigma_b2  # input E[x^2] = 0.1: q_1 = 0.35 below r_1
    assert all(G(q) > 0 for q in np.linspace(q_1, r_1 - 1e-4, 40))  # iterates rise to r_1 and stop
    assert sigma_w2 > 2  # and beyond r_2 they grow without bound: M(q) - q ~ (sigma_w2 / 2 - 1) q
    # G'(r) ~ 1e-4 and the two integrals agree to ~1e-11: roots agree to ~1e-7
    assert theory.fixed_point("gelu", sigma_w2, sigma_b2, 0.1).q_star == pytest.approx(r_1, rel=1e-6)
    grid = theory.phase_diagram("gelu", [sigma_w2], [sigma_b2], q0=0.1)  # the vectorised path
    assert grid["q_star"][0, 0] == pytest.approx(r_1, rel=1e-6)
    between = (1.5 - sigma_b2) / sigma_w2  # q_1 = 1.5, where M(q) < q: down to r_1
    assert theory.fixed_point("gelu", sigma_w2, sigma_b2, between).q_star == pytest.approx(r_1, rel=1e-6)
    above = (r_2 * 1.001 - sigma_b2) / sigma_w2
    assert theory.fixed_point("gelu", sigma_w2, sigma_b2, above).q_star == math.inf


def test_gelu_just_above_its_critical_bound_has_three_fixed_points_and_each_is_reached():
    # on the critical line at q = 3.5617 (stable: slope < 1) GELU's map has two more fixed points,
    # 3.0428 (stable) and 3.5516 (unstable), the last two in one grid cell (3.16 to 5.62) whose ends
    # see M(q) < q; there M(q) - q has a minimum and a maximum, where d/dq E[phi^2] peaks (q ~ 3.37)
    from scipy.optimize import brentq

    sigma_w2 = 1 / quad_expect("gelu", 3.5617, "dphi2")
    sigma_b2 = 3.5617 - sigma_w2 * quad_expect("gelu", 3.5617, "phi2")
    G = lambda q: sigma_w2 * quad_expect("gelu", q, "phi2") + sigma_b2 - q  # noqa: E731
    assert G(2.9) > 0 > G(3.2) and G(3.54) < 0 < G(3.5566) and G(3.58) < 0 and G(20.0) < 0
    low, unstable, top = (brentq(G, a, b, xtol=1e-14) for a, b in ((2.9, 3.2), (3.54, 3.5566), (3.5566, 3.58)))
    assert top == pytest.approx(3.5617, rel=1e-5) and 2e-3 < (top - unstable) / top < 4e-3
    # from q_1 = 2.16 (q0 = 1) up to the first one; from q_1 = 20 (q0 = 10) down to the top one.
    # G'(top) = -1.4e-6, so integrals that agree to ~1e-11 put the roots ~3e-5 apart
    assert theory.fixed_point("gelu", sigma_w2, sigma_b2, 1.0).q_star == pytest.approx(low, rel=1e-8)
    assert theory.fixed_point("gelu", sigma_w2, sigma_b2, 10.0).q_star == pytest.approx(top, rel=1e-4)
    between = (3.5566 - sigma_b2) / sigma_w2  # q_1 = 3.5566, between the close pair: up to the top
    assert theory.fixed_point("gelu", sigma_w2, sigma_b2, between).q_star == pytest.approx(top, rel=1e-4)


# --- phase diagram ----------------------------------------------------------------------------------


def test_phase_diagram_tanh_and_relu():
    sigma_w2, sigma_b2 = np.linspace(0.05, 4.0, 60), np.linspace(0.0, 0.5, 60)
    grid = theory.phase_diagram("tanh", sigma_w2, sigma_b2)
    assert grid["chi_1"].shape == grid["q_star"].shape == (60, 60)
    ordered = sigma_w2 < 1  # first row, sigma_b2 = 0: q_star = 0 and chi_1 = sigma_w2
    assert np.array_equal(grid["q_star"][0, ordered], np.zeros(ordered.sum()))
    assert np.allclose(grid["chi_1"][0, ordered], sigma_w2[ordered], rtol=1e-14)
    i, j = 20, 45
    q_star = grid["q_star"][i, j]
    mapped = sigma_w2[j] * quad_expect("tanh", q_star, "phi2") + sigma_b2[i]
    assert mapped == pytest.approx(q_star, rel=1e-10)
    chi_1 = sigma_w2[j] * quad_expect("tanh", q_star, "dphi2")
    assert grid["chi_1"][i, j] == pytest.approx(chi_1, rel=1e-9)
    # ReLU: chi_1 = sigma_w2 / 2 everywhere; q_star = sigma_b2 / (1 - sigma_w2/2), or inf above 2
    grid = theory.phase_diagram("relu", sigma_w2, sigma_b2)
    W, B = np.meshgrid(sigma_w2, sigma_b2)
    assert np.allclose(grid["chi_1"], W / 2, rtol=1e-15)
    below = (W < 2) & (B > 0)
    assert np.allclose(grid["q_star"][below], (B / (1 - W / 2))[below], rtol=1e-12)
    assert np.all(np.isinf(grid["q_star"][(W > 2) & (B > 0)]))


# --- per-layer predictions --------------------------------------------------------------------------


@pytest.mark.parametrize("weights, bias, words", [
    ("zeros", "zeros", "constant init 'zeros'"),
    ("ones", "zeros", "constant init 'ones'"),
    ("constant:value=0.5", "zeros", "every unit of a layer is identical"),
    ("uniform", "zeros", "has mean 0.5 != 0"),
    ("kaiming_normal", "constant:value=0.1", "bias init 'constant:value=0.1' has mean 0.1"),
])
def test_predict_for_init_refuses_when_theory_does_not_apply(weights, bias, words):
    layers, reason = theory.predict_for_init(weights, bias, "tanh", [100, 100], 100)
    assert layers is None and words in reason


@pytest.mark.parametrize("weights, q0", [("kaiming_normal", 1.0), ("xavier_uniform", 1 / 3)])
def test_predict_for_init_relu_by_hand(weights, q0):
    widths, input_dim = [300, 500, 200, 400], 100
    layers, reason = theory.predict_for_init(weights, "zeros", "relu", widths, input_dim, q0)
    assert reason is None
    fans = [input_dim, *widths]
    var = [2 / fi if weights == "kaiming_normal" else 2 / (fi + fo) for fi, fo in zip(fans, fans[1:])]
    q, e_a2 = [], q0  # Glorot & Bengio 2010, He et al. 2015: q_l = fan_in Var[W] E[a^2], E[relu^2] = q/2
    for fan_in, v in zip(fans, var):
        q.append(fan_in * v * e_a2)
        e_a2 = q[-1] / 2
    assert [r["q"] for r in layers] == pytest.approx(q, rel=1e-13)
    grad_var, want = 1.0, []  # Var[dL/da_{l-1}] = fan_out Var[W_l] Var[dL/da_l] / 2
    for fan_out, v in zip(reversed(widths), reversed(var)):
        want.append(grad_var / 2)
        grad_var = fan_out * v * grad_var / 2
    assert [r["grad_pre_std"] ** 2 for r in layers] == pytest.approx(want[::-1], rel=1e-13)


def test_reference_claim_c11_sigmoid_neuron():
    # 1000 inputs, half ones and half zeros (E[x^2] = 0.5): N(0,1) weights and bias give Var[z] = 501;
    # weights N(0, 1/n_in) give 500/1000 + 1 = 1.5 (reference.md, claim C11)
    layers, _ = theory.predict_for_init("normal", "normal", "sigmoid", [1], 1000, q0=0.5)
    assert layers[0]["pre_std"] == pytest.approx(math.sqrt(501), rel=1e-14)
    layers, _ = theory.predict_for_init("variance_scaling:distribution=normal", "normal", "sigmoid",
                                        [1], 1000, q0=0.5)
    assert layers[0]["pre_std"] == pytest.approx(math.sqrt(1.5), rel=1e-14)


def test_predict_checks_its_arguments():
    with pytest.raises(ConfigError, match="must be equal and >= 1"):
        theory.predict("tanh", [1.0, 1.0], [0.0], sigma_w2_back=[1.0, 1.0])
    with pytest.raises(ConfigError, match="must be >= 0"):
        theory.predict("tanh", [1.0], 0.0, q0=-1.0)


STATS = ("pre_std", "post_mean", "post_std", "grad_pre_std")


def simulate(spec, sigma_w2, sigma_b2, seed, width, batch, layers):
    """One square MLP on N(0,1) inputs: per layer the STATS over all (batch, width) entries."""
    act = activations.get(spec)
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((batch, width), dtype=np.float32)
    weights, pre, post, rows = [], [], [], []
    for _ in range(layers):
        W = rng.standard_normal((width, width), dtype=np.float32) * np.float32(math.sqrt(sigma_w2 / width))
        b = rng.standard_normal(width, dtype=np.float32) * np.float32(math.sqrt(sigma_b2))
        z = a @ W + b  # (batch, width)
        a = act.phi(z)
        weights.append(W), pre.append(z), post.append(a)
        rows.append([z.std(dtype=np.float64), a.mean(dtype=np.float64), a.std(dtype=np.float64)])
    grad = rng.standard_normal((batch, width), dtype=np.float32)  # dL/da_L for L = sum(a_L * g)
    for l in reversed(range(layers)):
        grad_pre = grad * act.dphi(pre[l], post[l])
        rows[l].append(grad_pre.std(dtype=np.float64))
        grad = grad_pre @ weights[l].T
    return np.array(rows)  # (layers, STATS)


@pytest.mark.parametrize("spec, sigma_w2, sigma_b2", [
    ("tanh", 1.0, 0.05),         # LeCun / CS231n "Xavier" weights N(0, 1/fan_in), bias variance 0.05
    ("tanh", 500 * 0.01**2, 0),   # weights N(0, 0.01^2) at width 500: collapse (claim C3)
    ("relu", 2.0, 0.0),          # He weights N(0, 2/fan_in) (claim C7)
])
def test_predict_matches_simulation(spec, sigma_w2, sigma_b2):
    """Mean of R = 16 independent nets (width 500, batch 64, 5 layers) against the prediction.

    One net's statistics fluctuate with its weight draw: each unit's batch profile is one Gaussian
    draw, and through depth the inputs become correlated, so a layer's pooled variance has a
    relative error of order sqrt(kappa l / n) however large the batch (kappa = 2 for z^2, 5 for
    relu(z)^2: several percent at layer 5 of a ReLU net of width 500). Hence many small nets rather
    than one wide one, and a tolerance from their spread: 5 standard errors of the mean of R runs,
    plus 2/n for the O(1/n) finite-width corrections to the infinite-width theory.
    """
    width, batch, layers, R = 500, 64, 5, 16
    runs = np.array([simulate(spec, sigma_w2, sigma_b2, seed, width, batch, layers) for seed in range(R)])
    mean, se = runs.mean(axis=0), runs.std(axis=0, ddof=1) / math.sqrt(R)
    pred = theory.predict(spec, [sigma_w2] * layers, sigma_b2, q0=1.0)
    want = np.array([[row[k] for k in STATS] for row in pred])
    scale = np.abs(want)
    scale[:, 1] = np.where(want[:, 1] == 0, want[:, 2], scale[:, 1])  # zero mean: judge on post_std
    tol = 5 * se / scale + 2 / width
    assert np.all(tol < 0.15), tol  # a few percent: the comparison must still mean something
    assert np.all(np.abs(mean - want) / scale <= tol), (np.abs(mean - want) / scale, tol)
