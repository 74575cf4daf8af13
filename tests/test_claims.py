"""Claims C1-C12 of ../shared/reference.md, each on the run that shows it, against formulas.

Default net: 10 layers of 500 units, batch 1000, unit-Gaussian input (the CS231n setting). Where a
tolerance is a few percent it covers the finite-width fluctuation of one random net: a layer's
realized variance differs from its expectation by about sqrt(2/width) = 6% of one unit's variance,
averaged over 500 units, so ~0.3% per layer, compounding over depth.
"""

import math

import numpy as np
import pytest

from actstats import run_experiment

PHI = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731  standard normal CDF


@pytest.fixture(scope="module")
def runs():
    cache = {}

    def get(**kw):
        key = tuple(sorted(kw.items()))
        if key not in cache:
            cache[key] = run_experiment(kw)
        return cache[key]

    return get


def second_moment(post):
    return post["std"] ** 2 + post["mean"] ** 2


def test_c1_zero_weights_are_symmetric_and_zero_bias_is_fine(runs):
    r = runs(init="zeros", act="tanh")
    assert all(layer["post"]["symmetric"] for layer in r.layers)
    # every hidden unit gets the same gradient (the output layer's g breaks the tie only there)
    assert all(layer["grad_pre"]["symmetric"] for layer in r.layers[:-1])
    assert r.diagnosis["verdict"] == "symmetric"
    healthy = runs(init="he", act="relu", bias_init="zeros")
    assert not any(layer["post"]["symmetric"] for layer in healthy.layers)
    assert healthy.diagnosis["verdict"] == "healthy"


@pytest.mark.parametrize("init", ["ones", "constant:value=0.5", "constant:value=-0.01"])
def test_c2_any_constant_is_symmetric(runs, init):
    r = runs(init=init, act="tanh")
    assert all(layer["post"]["symmetric"] for layer in r.layers)
    assert all(layer["grad_pre"]["symmetric"] for layer in r.layers[:-1])
    assert r.diagnosis["verdict"] == "symmetric"


def test_c3_small_normal_collapses_tanh_to_zero(runs):
    r = runs(init="normal:std=0.01", act="tanh")
    # layer 1: z = x @ W with E[x^2] = 1, so std(z) = 0.01 * sqrt(500) = 0.2236
    assert r.layers[0]["pre"]["std"] == pytest.approx(0.01 * math.sqrt(500), rel=0.02)
    # later layers: tanh is nearly linear near 0, so the std shrinks by 0.2236 per layer
    stds = r.column("post", "std")
    for prev, cur in zip(stds[1:], stds[2:]):
        assert cur / prev == pytest.approx(0.01 * math.sqrt(500), rel=0.03)
    finding = r.diagnosis["findings"][0]
    assert finding["code"] == "collapse" and finding["factor"] == pytest.approx(0.2236, rel=0.03)
    assert "activations collapse toward 0: std ×0.22 per layer" in finding["text"]
    # almost linear: tanh'(z) = 1 - tanh(z)^2 = 1 - z^2 + O(z^4), so the mean slope is 1 - Var[z]
    for layer in r.layers[2:]:
        assert layer["post"]["mean_slope"] == pytest.approx(1 - layer["pre"]["std"] ** 2, abs=1e-6)
    grads = r.column("grad_pre", "std")
    assert grads[0] < 1e-5 * grads[-1]


def test_c4_unit_normal_saturates_tanh(runs):
    r = runs(init="normal:std=1", act="tanh")
    # layer 1: z ~ N(0, 500); saturated where |z| > atanh(sqrt(0.98)) = 2.644, i.e. |a| > 0.99
    t = math.atanh(math.sqrt(0.98))
    expected1 = 2 * (1 - PHI(t / math.sqrt(500)))
    assert expected1 == pytest.approx(0.906, abs=0.001)
    for layer in r.layers:
        sigma = layer["pre"]["std"]
        assert layer["post"]["frac_saturated"] == pytest.approx(2 * (1 - PHI(t / sigma)), abs=0.005)
    assert r.layers[0]["post"]["frac_saturated"] == pytest.approx(expected1, abs=0.005)
    assert r.diagnosis["verdict"] == "saturates"
    # values sit near -1 and +1: the two outer bins of [-1, 1] hold most of the mass
    counts = r.histograms["post_counts"][-1]
    assert (counts[0] + counts[-1]) / counts.sum() > 0.85
    # the local gradient phi'(z) is near 0: mean slope below 0.05 in every layer
    assert all(layer["post"]["mean_slope"] < 0.05 for layer in r.layers)


def mean_field_tanh(q0, sigma_w2, layers):
    """q_l = sigma_w^2 E[tanh(sqrt(q_{l-1}) u)^2], by a 200-node Gauss-Hermite rule (exact enough for q <= 1)."""
    u, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / w.sum()
    q, out = q0 * sigma_w2, []
    for _ in range(layers):
        m2 = float(np.sum(w * np.tanh(np.sqrt(q) * u) ** 2))
        out.append(math.sqrt(m2))  # post std (mean 0 by symmetry)
        q = sigma_w2 * m2
    return out


def test_c5_lecun_xavier_keeps_tanh_spread(runs):
    for init in ("xavier", "lecun"):  # fan_in == fan_out: both have variance 1/500
        r = runs(init=init, act="tanh")
        predicted = mean_field_tanh(1.0, 1.0, 10)
        for measured, expected in zip(r.column("post", "std"), predicted):
            assert measured == pytest.approx(expected, rel=0.04)
        assert r.layers[-1]["post"]["std"] > 0.2
        assert max(r.column("post", "frac_saturated")) < 0.01
        assert r.diagnosis["verdict"] == "healthy"


def test_c6_xavier_halves_relu_second_moment(runs):
    r = runs(init="xavier", act="relu")
    m2 = [second_moment(layer["post"]) for layer in r.layers]
    # E[a_l^2] = fan_in Var[W] E[a_{l-1}^2] / 2 = E[a_{l-1}^2] / 2
    per_layer = (m2[-1] / m2[0]) ** (1 / 9)
    assert per_layer == pytest.approx(0.5, rel=0.05)
    # by layers 5-6 the std is already below a fifth of layer 1's (0.5^(5/2) = 0.18)
    assert r.layers[5]["post"]["std"] < 0.2 * r.layers[0]["post"]["std"]
    assert r.diagnosis["verdict"] == "collapse"


def test_c7_he_keeps_relu_second_moment(runs):
    r = runs(init="he", act="relu")
    m2 = [second_moment(layer["post"]) for layer in r.layers]
    assert (m2[-1] / m2[0]) ** (1 / 9) == pytest.approx(1.0, rel=0.05)
    # E[a_1^2] = Var[z_1] / 2 = 2 * E[x^2] / 2 = 1
    assert m2[0] == pytest.approx(1.0, rel=0.02)
    assert r.diagnosis["verdict"] == "healthy"


DOUBLING = dict(act="relu", input_dim=50, width="100,200,400,800,1600", batch=400)


def test_c8_kaiming_fan_out_keeps_backward_variance(runs):
    # Var[dL/da_{l-1}] = fan_out Var[W] E[phi'^2] Var[dL/da_l]: with fan_out mode 2/fan_out * 1/2 = 1,
    # with fan_in mode fan_out/fan_in = 2 per layer on widths that double
    out = runs(init="kaiming_normal:mode=fan_out", **DOUBLING).column("grad_pre", "std")
    inn = runs(init="kaiming_normal:mode=fan_in", **DOUBLING).column("grad_pre", "std")
    for a, b in zip(out, out[1:]):
        assert a / b == pytest.approx(1.0, rel=0.1)
    for a, b in zip(inn, inn[1:]):
        assert a / b == pytest.approx(math.sqrt(2), rel=0.1)
    # and fan_in keeps the forward pass: E[a^2] constant. One narrow net's realized E[a^2] drifts by
    # ~10% over these layers (ReLU nets' squared norms fluctuate ~sqrt(5/width) per layer), so average
    # the last/first ratio over four seeds
    ratios = []
    for seed in range(4):
        fwd = runs(init="kaiming_normal:mode=fan_in", seed=seed, **DOUBLING)
        m2 = [second_moment(layer["post"]) for layer in fwd.layers]
        ratios.append(m2[-1] / m2[0])
    assert np.mean(ratios) == pytest.approx(1.0, rel=0.1)


def test_c9_glorot_balances_forward_and_backward(runs):
    # linear net on doubling widths: forward variance factor fan_in*Var[W], backward fan_out*Var[W]
    kw = dict(DOUBLING, act="linear")
    factors = {}
    for init in ("xavier_normal", "xavier_uniform", "lecun_normal"):
        r = runs(init=init, **kw)
        fwd = [second_moment(layer["pre"]) for layer in r.layers]
        bwd = [layer["grad_pre"]["std"] ** 2 for layer in r.layers]
        f = (fwd[-1] / fwd[0]) ** (1 / 4)
        b = (bwd[0] / bwd[-1]) ** (1 / 4)
        factors[init] = (f, b)
    for init in ("xavier_normal", "xavier_uniform"):
        f, b = factors[init]
        # fan_in * 2/(fan_in+fan_out) = 2/3 and fan_out * 2/(fan_in+fan_out) = 4/3
        assert f == pytest.approx(2 / 3, rel=0.05) and b == pytest.approx(4 / 3, rel=0.05)
    f, b = factors["lecun_normal"]
    assert f == pytest.approx(1.0, rel=0.05) and b == pytest.approx(2.0, rel=0.05)
    worst = {k: max(abs(math.log(f)), abs(math.log(b))) for k, (f, b) in factors.items()}
    assert worst["xavier_normal"] < worst["lecun_normal"]


def test_c10_pytorch_linear_suits_sigmoid(runs):
    r = runs(init="pytorch_linear", act="sigmoid", width=2000, batch=500)
    # Var[z_l] = fan_in * (1/(3 fan_in)) * E[a_{l-1}^2] = E[a_{l-1}^2] / 3. Sigmoid's mean 0.5 gives
    # each unit a fixed offset 0.5 * sum_k w_kj, whose mean square over 2000 units is off by
    # sqrt(2/2000) = 3% (of 3/4 of the variance): 8% is about 3 standard errors
    assert r.layers[0]["pre"]["std"] == pytest.approx(math.sqrt(1 / 3), rel=0.02)
    for prev, layer in zip(r.layers, r.layers[1:]):
        assert layer["pre"]["std"] ** 2 == pytest.approx(second_moment(prev["post"]) / 3, rel=0.08)
    assert max(r.column("post", "frac_saturated")) == 0
    # healthy activations, but sigma' <= 1/4 still vanishes the gradients: the run is not "healthy"
    assert r.diagnosis["forward"] == "healthy" and r.diagnosis["verdict"] == "grad_vanish"


def test_c11_one_thousand_half_inputs_into_sigmoid(runs):
    common = dict(act="sigmoid", input="half", input_dim=1000, width=2000, layers=1, batch=500)
    wide = runs(init="normal:std=1", bias_init="normal:std=1", **common)
    narrow = runs(init="normal:std=" + repr(1 / math.sqrt(1000)), bias_init="normal:std=1", **common)
    # Var[z] = 500 * 1 + 1 = 501 and 500 * (1/1000) + 1 = 1.5; the bias term averages over 2000
    # units (relative error sqrt(2/2000) of a variance of 1), so 4% on 1.5 and 1% on 501
    z_wide, z_narrow = wide.layers[0]["pre"]["std"], narrow.layers[0]["pre"]["std"]
    assert z_wide == pytest.approx(math.sqrt(501), rel=0.01)
    assert z_narrow == pytest.approx(math.sqrt(1.5), rel=0.04)
    t = wide.layers[0]["post"]  # saturated where |z| > 5.288 (sigma' < 2% of 1/4)
    assert t["frac_saturated"] == pytest.approx(2 * (1 - PHI(5.2882 / math.sqrt(501))), abs=0.01)
    assert narrow.layers[0]["post"]["frac_saturated"] < 1e-3
    assert wide.diagnosis["verdict"] == "saturates" and narrow.diagnosis["verdict"] == "healthy"


def test_c12_too_small_vanishes_too_large_explodes(runs):
    small = runs(init="normal:std=0.01", act="tanh")
    codes = [f["code"] for f in small.diagnosis["findings"]]
    assert "grad_vanish" in codes
    large = runs(init="normal:std=1", act="relu")
    codes = [f["code"] for f in large.diagnosis["findings"]]
    assert large.diagnosis["verdict"] == "explode" and "grad_explode" in codes
    # forward factor per layer: sqrt(fan_in * Var[W] / 2) = sqrt(250)
    f = next(f for f in large.diagnosis["findings"] if f["code"] == "explode")
    assert f["factor"] == pytest.approx(math.sqrt(250), rel=0.05)


def test_exploding_values_are_measured_not_fatal(runs):
    r = runs(init="ones", act="relu", layers=170, width=100, batch=200)
    first = next(f for f in r.diagnosis["findings"] if f["code"] == "nonfinite")
    # all-ones weights: z_1 = sum(x) (std 10), then every layer multiplies by 100 (the unit count),
    # so values pass the float limit 1.8e308 where 100^(l-1) * max(z_1) does
    z1_max = r.layers[0]["pre"]["max"]
    expected = next(l for l in range(1, 171) if 100.0 ** (l - 1) * z1_max > np.finfo(float).max)
    assert first["layer"] == expected
    assert r.layers[expected - 2]["pre"]["max"] == pytest.approx(100.0 ** (expected - 2) * z1_max, rel=1e-9)
    assert r.diagnosis["verdict"] == "nonfinite"
