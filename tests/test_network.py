"""The engine against an independent NumPy forward/backward pass on the same weights."""

import json

import numpy as np
import pytest

from actstats import RunConfig, load_results, run_experiment
from actstats.errors import ConfigError
from actstats.network import INPUT, PROJECTION, Network, check_memory, make_input, rng
from actstats.results import to_json_text

SMALL = dict(init="xavier", act="tanh", layers=4, width=30, input_dim=20, batch=64, bins=16)


def reference_pass(config: RunConfig):
    """Forward and backward written out plainly, one array per tensor and layer."""
    net = Network.build(config)
    x = make_input(config.input, rng(config.seed, INPUT), config.batch, config.dims[0])
    g = rng(config.seed, PROJECTION).standard_normal((config.batch, config.dims[-1]))
    acts = {"tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
            "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0) * 1.0)}
    phi, dphi = acts[config.act]
    a, pres, posts = x, [], [x]
    for W, b in zip(net.weights, net.biases):
        z = a @ W + b
        a = phi(z)
        pres.append(z)
        posts.append(a)
    d, grad_pre, grad_weight = g, [None] * len(pres), [None] * len(pres)
    for l in range(len(pres) - 1, -1, -1):
        grad_pre[l] = d * dphi(pres[l])
        grad_weight[l] = posts[l].T @ grad_pre[l]
        d = grad_pre[l] @ net.weights[l].T
    return {"pre": pres, "post": posts[1:], "grad_pre": grad_pre, "grad_weight": grad_weight}


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_statistics_equal_direct_numpy(act):
    config = RunConfig.from_dict({**SMALL, "act": act, "bias_init": "normal:std=0.1"})
    result = run_experiment(config)
    ref = reference_pass(config)
    for l, layer in enumerate(result.layers):
        for tensor in ("pre", "post", "grad_pre", "grad_weight"):
            x, s = ref[tensor][l], layer[tensor]
            assert s["count"] == x.size
            assert s["mean"] == pytest.approx(x.mean(), rel=1e-9, abs=1e-12)
            assert s["std"] == pytest.approx(x.std(), rel=1e-9)
            assert s["min"] == pytest.approx(x.min(), rel=1e-12) and s["max"] == pytest.approx(x.max(), rel=1e-12)
            assert s["frac_zero"] == np.mean(x == 0)
            edges = result.histograms[f"{tensor}_edges"][l]
            counts = result.histograms[f"{tensor}_counts"][l]
            assert np.array_equal(counts, np.histogram(x, bins=edges)[0]), (tensor, l)
        post = ref["post"][l]
        assert layer["post"]["unit_std"] == pytest.approx(post.std(axis=1).mean(), rel=1e-9)
        if act == "tanh":
            assert layer["post"]["frac_saturated"] == np.mean(1 - np.tanh(ref["pre"][l]) ** 2 < 0.02)
            assert layer["post"]["mean_slope"] == pytest.approx(np.mean(1 - post**2), rel=1e-9)
        else:
            assert layer["post"]["frac_dead_units"] == np.mean(np.all(post == 0, axis=0))
    # tanh's post histogram has the fixed range [-1, 1]
    if act == "tanh":
        assert result.histograms["post_edges"][0][0] == -1 and result.histograms["post_edges"][0][-1] == 1


def test_same_seed_same_numbers_bit_for_bit():
    a = to_json_text(run_experiment(SMALL))
    b = to_json_text(run_experiment(SMALL))
    strip = lambda t: {k: v for k, v in json.loads(t).items() if k != "timings"}  # noqa: E731
    assert strip(a) == strip(b)
    c = strip(to_json_text(run_experiment({**SMALL, "seed": 1})))
    assert c["layers"] != strip(a)["layers"]


def test_batch_size_and_depth_do_not_change_the_weights():
    base = Network.build(RunConfig.from_dict(SMALL))
    bigger = Network.build(RunConfig.from_dict({**SMALL, "batch": 999}))
    deeper = Network.build(RunConfig.from_dict({**SMALL, "layers": 6}))
    for W, W2, W3 in zip(base.weights, bigger.weights, deeper.weights):
        assert np.array_equal(W, W2) and np.array_equal(W, W3)


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_equals_unchunked(chunk):
    # BLAS sums a row's dot products in an order that depends on the number of rows (a single row
    # goes through gemv), so values, and with them moments and extremes, agree to rounding (1e-12);
    # counts and histograms agree exactly
    whole = run_experiment({**SMALL, "chunk_size": 64})
    part = run_experiment({**SMALL, "chunk_size": chunk})
    for a, b in zip(whole.layers, part.layers):
        for tensor in ("pre", "post", "grad_pre", "grad_weight"):
            for key, value in a[tensor].items():
                if key in ("mean", "std", "unit_std", "mean_slope", "min", "max"):
                    assert b[tensor][key] == pytest.approx(value, rel=1e-12, abs=1e-15), (tensor, key)
                else:
                    assert b[tensor][key] == value, (tensor, key)
    for key, value in whole.histograms.items():
        assert np.array_equal(part.histograms[key], value), key


def test_float32_runs_and_matches_float64_loosely():
    a = run_experiment({**SMALL, "dtype": "float32"})
    b = run_experiment(SMALL)
    for la, lb in zip(a.layers, b.layers):
        assert la["post"]["std"] == pytest.approx(lb["post"]["std"], rel=1e-4)


def test_half_input_has_exactly_half_ones():
    x = make_input("half", np.random.default_rng(0), 5, 1000)
    assert np.all(x.sum(axis=1) == 500) and set(np.unique(x)) == {0.0, 1.0}


def test_memory_estimate_refuses_what_cannot_fit():
    config = RunConfig.from_dict({"width": 20000, "layers": 10})
    with pytest.raises(ConfigError) as err:
        check_memory(config, available=4 * 2**30)
    assert str(err.value).startswith("this run needs an estimated ")
    assert "of memory but only 4.0 GiB is available; lower --width or --layers" in str(err.value)
    small = RunConfig.from_dict(SMALL)
    assert check_memory(small, available=4 * 2**30) < 4 * 2**30


def test_save_and_load_round_trip(tmp_path):
    result = run_experiment(SMALL)
    path = result.save(tmp_path / "run", plots=False)
    back = load_results(path)
    assert back.config == result.config
    assert back.layers == result.layers
    assert back.diagnosis == result.diagnosis
    for key, value in result.histograms.items():
        assert np.array_equal(back.histograms[key], value)
    rows = (path / "stats.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 * 4  # header + layers x tensors
    header = rows[0].split(",")
    first = dict(zip(header, rows[1].split(",")))
    assert first["tensor"] == "pre" and float(first["std"]) == pytest.approx(result.layers[0]["pre"]["std"])
    assert RunConfig.from_yaml(path / "config.yaml") == result.config
