"""The claim grammar of expect:, evaluated on synthetic results whose numbers are set by hand, so every
expected value is a hand computation (no network is run here)."""

import math

import pytest

from actstats.claims import evaluate, resolve_layers
from actstats.experiment import RunResult
from actstats.sweep import SweepConfig


def fake(config, post_std, post_mean=None, grad_std=None, verdict="healthy", findings=("healthy",),
         symmetric=False, pre_std=None):
    """A RunResult with the given per-layer numbers (only what claims read)."""
    L = len(post_std)
    post_mean = post_mean or [0.0] * L
    grad_std = grad_std or [1.0] * L
    pre_std = pre_std or [2 * s for s in post_std]
    layers = []
    for i in range(L):
        layers.append({
            "layer": i + 1, "fan_in": 10, "fan_out": 10,
            "pre": {"mean": 0.0, "std": pre_std[i]},
            "post": {"mean": post_mean[i], "std": post_std[i], "frac_saturated": 0.1 * i,
                     "symmetric": symmetric, "mean_slope": 0.5},
            "grad_pre": {"mean": 0.0, "std": grad_std[i], "symmetric": symmetric},
            "grad_weight": {"mean": 0.0, "std": 1.0},
        })
    diag = {"verdict": verdict, "findings": [{"code": c, "text": c} for c in findings]}
    return RunResult(config, layers, {}, diag)


def plan(expect, seeds=None, inits=("xavier", "he")):
    data = {"name": "c", "base": {"layers": 4, "width": 10, "batch": 5},
            "grid": {"init": list(inits)}, "expect": expect}
    if seeds:
        data["seeds"] = seeds
    return SweepConfig.from_dict(data, where="c.yaml")


def check(expect, results_by_init, seeds=None):
    s = plan(expect, seeds)
    results = {r.name: results_by_init(r) for r in s.runs}
    return evaluate(s.claims, s, results)


HALVING = [1.0, 0.5, 0.25, 0.125]


def test_layers_resolve_like_python_indices_with_names_and_ranges():
    assert resolve_layers(3, 10) == [3]
    assert resolve_layers(-1, 10) == [10] and resolve_layers(-10, 10) == [1]
    assert resolve_layers("first", 10) == [1] and resolve_layers("last", 10) == [10]
    assert resolve_layers("all", 4) == [1, 2, 3, 4]
    assert resolve_layers("2..last", 5) == [2, 3, 4, 5] and resolve_layers("first..-2", 5) == [1, 2, 3, 4]
    assert resolve_layers([1, "last", -2], 6) == [1, 6, 5]
    for bad in (0, 11, -11, "5..2"):
        with pytest.raises(ValueError):
            resolve_layers(bad, 10)


def test_a_stat_at_a_layer_against_numbers():
    results = check([
        {"check": {"stat": "post.std", "layer": 2, "approx": 0.5, "rel": 1e-12}},
        {"check": {"stat": "post.std", "layer": "last", "lt": 0.125}},                # 0.125 < 0.125: no
        {"check": {"stat": "post.std", "layer": "last", "le": 0.125}},
        {"check": {"stat": "post.std", "layer": -2, "between": [0.2, 0.3]}},
        {"check": {"stat": "post.std", "layer": 1, "approx": 1.05, "rel": 0.04}},     # 5% off: no
        {"check": {"stat": "post.std", "layer": 1, "approx": 1.05, "abs": 0.06}},
    ], lambda r: fake(r.config, HALVING))
    assert [c.passed for c in results] == [True, False, True, True, False, True]
    assert results[1].failures == ["init=xavier: layer 4: 0.125, expected < 0.125",
                                   "init=he: layer 4: 0.125, expected < 0.125"]
    assert results[0].expected == "≈ 0.5 (±1e-10%)" and results[3].expected == "in [0.2, 0.3]"


def test_every_selected_layer_must_hold_unless_reduced():
    results = check([
        {"check": {"stat": "post.std", "layer": "all", "gt": 0.2}},            # 0.125 fails
        {"check": {"stat": "post.std", "layer": "all", "reduce": "mean", "approx": 0.46875, "rel": 1e-12}},
        {"check": {"stat": "post.std", "layer": "all", "reduce": "min", "eq": 0.125}},
    ], lambda r: fake(r.config, HALVING))
    assert [c.passed for c in results] == [False, True, True]
    assert results[0].failures[0] == "init=xavier: layer 4: 0.125, expected > 0.2"


def test_ratios_between_layers_and_per_layer_factors():
    results = check([
        {"check": {"stat": "post.std", "layer": "last", "over": "first", "approx": 0.125, "rel": 1e-12}},
        {"check": {"stat": "post.std", "layer": "last", "over": "first", "per_layer": True,
                   "approx": 0.5, "rel": 1e-12}},
        {"check": {"stat": "post.std", "layer": "first..-2", "over": "next", "approx": 2.0, "rel": 1e-12}},
        {"check": {"stat": "post.std", "layer": "all", "over": "previous", "approx": 0.5, "rel": 1e-12}},
        # m2 = std² + mean²: with mean 1 everywhere, m2 = [2, 1.25, 1.0625, 1.015625]
        {"check": {"stat": "post.m2", "layer": 2, "over": 1, "approx": 0.625, "rel": 1e-12}},
        # another stat as the denominator: pre.std is 2 x post.std of the same layer, so / previous post = 1
        {"check": {"stat": "pre.std", "layer": "2..last", "over": {"stat": "post.std", "layer": "previous"},
                   "approx": 1.0, "rel": 1e-12}},
        {"check": {"stat": "pre.var", "layer": 1, "over": {"stat": "post.var"}, "approx": 4.0, "rel": 1e-12}},
    ], lambda r: fake(r.config, HALVING, post_mean=[1.0] * 4))
    assert [c.passed for c in results] == [True] * 7, [c.failures for c in results]


def test_comparison_with_a_counterpart_run():
    def results_by_init(run):
        return fake(run.config, HALVING if run.config.init == "xavier" else [1.0, 1.0, 1.0, 1.0])

    results = check([
        {"where": {"init": "xavier"},
         "check": {"stat": "post.std", "layer": "last", "lt": {"where": {"init": "he"}, "scale": 0.2}}},
        {"where": {"init": "xavier"},       # 0.125 < 0.1 x 1: no
         "check": {"stat": "post.std", "layer": "last", "lt": {"where": {"init": "he"}, "scale": 0.1}}},
        {"where": {"init": "xavier"},       # layer by layer: 1 vs 1 is not < 1
         "check": {"stat": "post.std", "layer": "all", "lt": {"where": {"init": "he"}}}},
        {"where": {"init": "xavier"},       # the counterpart can use its own stat and layer
         "check": {"stat": "post.std", "layer": 2, "approx": {"where": {"init": "he"}, "layer": 1,
                                                                "scale": 0.5}, "rel": 1e-12}},
    ], results_by_init)
    assert [c.passed for c in results] == [True, False, False, True]
    assert results[0].expected == "< [init=he] × 0.2"
    assert results[2].failures == ["init=xavier: layer 1: 1, expected < 1"]


def test_mean_over_seeds():
    # per-seed ratios last/first of 0.5 and 1.5 average to 1.0, although neither is within 10% of it
    def results_by_seed(run):
        last = 0.5 if run.config.seed == 0 else 1.5
        return fake(run.config, [1.0, 1.0, 1.0, last])

    expect = [{"where": {"init": "he"}, "check": {"stat": "post.std", "layer": "last", "over": "first",
                                                  "approx": 1.0, "rel": 0.1, "over_seeds": "mean"}},
              {"where": {"init": "he"}, "check": {"stat": "post.std", "layer": "last", "over": "first",
                                                  "approx": 1.0, "rel": 0.1}},
              {"where": {"init": "he"}, "check": {"stat": "post.std", "layer": "last", "over": "first",
                                                  "approx": 1.5, "rel": 1e-12, "over_seeds": "max"}}]
    results = check(expect, results_by_seed, seeds=2)
    assert [c.passed for c in results] == [True, False, True]
    assert results[0].observed == "1"
    assert results[1].failures == ["init=he, seed=0: layer 4/1: 0.5, expected ≈ 1",
                                   "init=he, seed=1: layer 4/1: 1.5, expected ≈ 1"]


def test_verdicts_findings_and_booleans():
    def results_by_init(run):
        if run.config.init == "xavier":
            return fake(run.config, HALVING, verdict="collapse", findings=("collapse", "grad_vanish"))
        return fake(run.config, [0.0] * 4, verdict="symmetric", findings=("symmetric",), symmetric=True)

    results = check([
        {"where": {"init": "xavier"}, "check": [{"verdict": "collapse"}, {"finding": "grad_vanish"}]},
        {"where": {"init": "xavier"}, "check": {"verdict": ["healthy", "explode"]}},
        {"where": {"init": "he"}, "check": [{"verdict": "symmetric"},
                                            {"stat": "post.symmetric", "layer": "all", "eq": True},
                                            {"stat": "grad_pre.symmetric", "layer": "first..-2", "eq": True}]},
        {"check": {"finding": "grad_vanish"}},
    ], results_by_init)
    assert [c.passed for c in results] == [True, False, True, False]
    assert results[1].failures == ["init=xavier: verdict collapse"]
    assert results[3].failures == ["init=he: no grad_vanish (found symmetric)"]
    assert results[2].observed == "symmetric; all true; all true"


def test_a_run_without_results_fails_its_claims():
    s = plan([{"where": {"init": "he"}, "check": {"verdict": "healthy"}}])
    results = {s.runs[0].name: fake(s.runs[0].config, HALVING)}  # the he run failed
    (claim,) = evaluate(s.claims, s, results)
    assert not claim.passed and claim.observed == "no result for 1 run(s): init=he"


def test_nan_and_infinite_values_never_pass():
    results = check([{"check": {"stat": "post.std", "layer": "last", "lt": 1e300}},
                     {"check": {"stat": "post.std", "layer": 1, "gt": 0}},
                     {"check": {"stat": "post.std", "layer": 2, "over": 1, "gt": 1e300}}],
                    lambda r: fake(r.config, [0.0, 1.0, math.inf, math.nan]))
    assert [c.passed for c in results] == [False, False, True]  # 1/0 is +inf
