"""Theory beside measurement: mean-field predictions against actstats' own runs, and the
data-driven inits (LSUV, critical) against what they promise."""

import math

import numpy as np
import pytest

from actstats import RunConfig, run_experiment
from actstats.errors import ConfigError

WIDE = dict(layers=10, width=2000, batch=1000, backward=False)  # the wide net
INITS = ["xavier", "lecun_normal", "he", "normal:std=0.01", "normal:std=1"]


@pytest.mark.slow
@pytest.mark.parametrize("act, tol", [("tanh", 0.03), ("sigmoid", 0.03), ("relu", 0.10)])
@pytest.mark.parametrize("init", INITS)
def test_theory_matches_a_wide_net(act, tol, init):
    """Per layer, the measured pre-activation std averaged over three seeds is within 3% (tanh,
    sigmoid) or 10% (ReLU, whose finite-width fluctuations compound with depth) of sqrt(q_l)."""
    measured = []
    for seed in range(3):
        r = run_experiment({**WIDE, "init": init, "act": act, "seed": seed})
        measured.append(r.column("pre", "std"))
    predicted = [layer["theory"]["pre_std"] for layer in r.layers]
    mean = np.mean(measured, axis=0)
    for l, (m, p) in enumerate(zip(mean, predicted), start=1):
        assert m == pytest.approx(p, rel=tol), f"layer {l}: measured {m:.4g}, predicted {p:.4g}"


def test_theory_column_and_phase_line_in_a_default_run():
    r = run_experiment({"init": "xavier", "act": "tanh"})
    # the classic CS231n net: sigma_w^2 = 1, sigma_b^2 = 0 is tanh's critical point, q* = 0
    assert r.extra["theory"]["phase"] == "critical" and r.extra["theory"]["q_star"] == 0
    line = next(f for f in r.diagnosis["findings"] if f["code"] == "theory")
    assert line["text"].startswith("theory: critical phase, χ₁ = 1,")
    for layer in r.layers:
        assert layer["post"]["std"] == pytest.approx(layer["theory"]["post_std"], rel=0.03)


def test_relu_he_is_critical_with_chi_one_exactly():
    r = run_experiment({"init": "he", "act": "relu", "layers": 3, "width": 100, "batch": 100})
    t = r.extra["theory"]
    # sigma_w^2 = 100 * (2/100) is 2 up to one rounding, so chi_1 and q* are 1 and 2 up to rounding
    assert t["phase"] == "critical"
    assert t["chi_1"] == pytest.approx(1.0, abs=1e-15) and t["q_star"] == pytest.approx(2.0, abs=1e-15)
    # E[a^2] = q/2 = 1 every layer; post std = sqrt(1 - q/(2 pi)) = sqrt(1 - 1/pi)
    assert all(layer["theory"]["post_std"] == pytest.approx(math.sqrt(1 - 1 / math.pi)) for layer in r.layers)


def test_departure_from_theory_is_named():
    # orthogonal-free constant-free case that departs: 3 units per layer are far from the wide limit
    r = run_experiment({"init": "he", "act": "relu", "layers": 10, "width": 3, "batch": 2000, "seed": 1})
    found = [f for f in r.diagnosis["findings"] if f["code"] == "theory_departs"]
    assert found, r.diagnosis
    layer = found[0]["layer"]
    m, p = r.layers[layer - 1]["post"]["std"], r.layers[layer - 1]["theory"]["post_std"]
    assert abs(m / p - 1) > 0.10
    assert all(abs(r.layers[i]["post"]["std"] / r.layers[i]["theory"]["post_std"] - 1) <= 0.10
               for i in range(layer - 1))
    assert f"departs from theory at layer {layer}" in found[0]["text"]


def test_constant_init_gets_no_prediction_and_says_why():
    r = run_experiment({"init": "ones", "act": "tanh", "layers": 2, "width": 10, "batch": 10})
    assert r.extra["theory"] == {"applies": False, "reason": (
        "constant init 'ones': weights are not zero-mean i.i.d., so every unit of a layer is "
        "identical; mean-field theory does not apply.")}
    assert not any("theory" in layer for layer in r.layers)


@pytest.mark.parametrize("act", ["tanh", "relu", "sigmoid"])
def test_lsuv_output_std_is_one_within_tolerance(act):
    # calibration uses the first 1000 rows of the run's input; measure on 2000 rows
    r = run_experiment({"init": "lsuv", "act": act, "layers": 6, "width": 200, "batch": 2000,
                        "backward": False})
    info = r.extra["init"]
    assert info["scheme"] == "lsuv" and len(info["iterations"]) == 6
    assert all(abs(s - 1) < 0.1 for s in info["calibrated_std"])
    assert all(0 <= n <= 10 for n in info["iterations"])
    # on the larger batch the std is 1 within the tolerance (plus a sampling error far below it)
    assert all(abs(layer["pre"]["std"] - 1) < 0.1 for layer in r.layers)


def test_lsuv_tolerance_and_rounds_are_parameters():
    r = run_experiment({"init": "lsuv:tol=0.001,max_iter=20", "act": "tanh", "layers": 4,
                        "width": 100, "batch": 1000})
    assert all(abs(s - 1) < 0.001 for s in r.extra["init"]["calibrated_std"])
    assert all(abs(layer["pre"]["std"] - 1) < 0.001 for layer in r.layers)  # batch == calibration


def test_lsuv_prediction_keeps_the_bias_variance():
    # LSUV rescales W, not b: q_l = sigma_w2_l E[a_{l-1}^2] + Var[b_l]. Layer 1 in closed form (input
    # N(0, 1): E[x^2] = 1, Var[b] = 0.5^2); each layer within 3% of a 1000-wide net (the bias alone:
    # the mean of 1000 b_j^2 is off by sqrt(2/1000) of 0.25, about 0.6% of the std). Predicting
    # without the bias said 0.894 at layer 1 where the net measures 1.025.
    r = run_experiment({"init": "lsuv", "act": "tanh", "bias_init": "normal:std=0.5", "layers": 3,
                        "width": 1000, "batch": 1000, "backward": False})
    sigma_w2 = r.extra["init"]["sigma_w2"]
    assert r.layers[0]["theory"]["pre_std"] == pytest.approx(math.sqrt(sigma_w2[0] * 1.0 + 0.25), rel=1e-12)
    for layer in r.layers:
        assert layer["pre"]["std"] == pytest.approx(layer["theory"]["pre_std"], rel=0.03)
    assert r.extra["theory"]["sigma_b2"] == 0.25


def test_lsuv_with_a_shifted_bias_has_no_prediction():
    r = run_experiment({"init": "lsuv", "act": "tanh", "bias_init": "ones", "layers": 2, "width": 50})
    assert r.extra["theory"] == {"applies": False, "reason": "bias init 'ones' has mean 1 != 0: a shift "
                                 "shared by every unit is outside the zero-mean mean-field theory, so no prediction."}
    assert not any("theory" in layer for layer in r.layers)


def test_critical_tanh_holds_its_fixed_point_from_20_to_50():
    # finite width makes each layer's realized q wander around q* (the biases alone: the mean of
    # 1000 b_j^2 is off by sqrt(2/1000) = 4.5% of sigma_b^2); at width 1000 that stays well in 10%
    r = run_experiment({"init": "critical:q_star=1", "act": "tanh", "layers": 50, "width": 1000,
                        "batch": 500, "backward": False})
    info = r.extra["init"]
    assert info["q_star"] == pytest.approx(1.0)
    assert r.extra["theory"]["phase"] == "critical"
    assert r.extra["theory"]["chi_1"] == pytest.approx(1.0, abs=1e-9)
    for layer in r.layers[19:]:
        assert layer["pre"]["std"] == pytest.approx(1.0, rel=0.10)


def test_critical_errors():
    with pytest.raises(ConfigError, match=r"^init 'critical' sets the biases too"):
        run_experiment({"init": "critical", "bias_init": "normal:std=0.1", "layers": 2, "width": 10})
    with pytest.raises(ConfigError, match=r"^bias init 'lsuv' is a weight init; it cannot initialize biases\.$"):
        RunConfig.from_dict({"bias_init": "lsuv"})
