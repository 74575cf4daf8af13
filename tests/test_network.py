"""The engine against an independent NumPy forward/backward pass on the same weights."""

import json
import re

import numpy as np
import pytest

from actstats import RunConfig, load_results, run_experiment
from actstats.errors import ConfigError
from actstats.activations import get as get_activation
from actstats.network import (INPUT, MIN_PART_ROWS, PARTS, PROJECTION, Network, Samples, auto_chunk, check_memory,
                              estimate_bytes, input_rows, make_input, memory_parts, rng)
from actstats.results import to_json_text

SMALL = dict(init="xavier", act="tanh", layers=4, width=30, input_dim=20, batch=64, bins=16)


def reference_pass(config: RunConfig):
    """Forward and backward written out plainly, one array per tensor and layer."""
    net = Network.build(config)
    x = input_rows(config, config.batch, config.dtype)
    g = Samples(config, PROJECTION, config.dims[-1]).draw(0, config.batch, np.empty((config.batch, config.dims[-1]), config.dtype))
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    acts = {"tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
            "sigmoid": (sig, lambda z: sig(z) * (1 - sig(z))),
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


TIGHT = ("mean", "std", "unit_std", "mean_slope", "min", "max")


def assert_same_run(whole, part, rel, moved=0):
    """Equal runs: moments to ``rel``, counts exactly; each layer's histogram may have ``moved``
    values in a neighbouring bin (a value within rounding of a bin edge), its total exactly."""
    for a, b in zip(whole.layers, part.layers):
        for tensor in ("pre", "post", "grad_pre", "grad_weight"):
            for key, value in a[tensor].items():
                if key in TIGHT:
                    assert b[tensor][key] == pytest.approx(value, rel=rel, abs=1e-15), (tensor, key)
                else:
                    assert b[tensor][key] == value, (tensor, key)
    for key, value in whole.histograms.items():
        if key.endswith("_counts"):
            diff = part.histograms[key] - value
            assert not diff.sum(axis=-1).any(), key
            assert (np.abs(diff).sum(axis=-1) <= 2 * moved).all(), key
        else:
            assert np.array_equal(part.histograms[key], value), key


@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("chunk", [1, 7, 64, 150])
def test_chunked_equals_unchunked(chunk, dtype, act):
    # BLAS sums a row's dot products in an order that depends on the number of rows (a single row
    # goes through gemv), so values, and with them moments and extremes, agree to rounding: 1e-12 in
    # float64, float32's rounding of the values themselves in float32; counts and histograms agree
    # exactly in float64; in float32 a value within its rounding (6e-8 relative) of a bin edge can
    # land in the neighbouring bin: seen once (layer 3's pre, chunks of 1 row, float32 ReLU), so
    # at most one value per histogram may move there.
    # A batch of 150: chunks of 7 and 64 leave a ragged last chunk (3 and 22 rows)
    config = {**SMALL, "act": act, "dtype": dtype, "bias_init": "normal:std=0.1", "batch": 150}
    whole = run_experiment(config.copy())  # automatic chunk: the whole batch at this size
    assert whole.extra["chunk_size"] == 150
    part = run_experiment({**config, "chunk_size": chunk})
    assert part.extra["chunk_size"] == chunk
    assert_same_run(whole, part, 1e-12 if dtype == "float64" else 1e-5, 0 if dtype == "float64" else 1)


@pytest.mark.parametrize("chunk", [1, 7, 64, 300])
def test_chunks_split_between_two_threads_equal_one_thread(chunk):
    # chunks of >= 2 * MIN_PART_ROWS rows are cut in two halves run by two threads (each with its own
    # statistics, merged at the end); the numbers equal a run in chunks too small to be cut
    assert 300 >= PARTS * MIN_PART_ROWS > 64
    config = {**SMALL, "act": "tanh", "batch": 300, "layers": 3}
    whole = run_experiment({**config, "chunk_size": 300})
    assert whole.extra["chunk_size"] == 300
    part = run_experiment({**config, "chunk_size": chunk})
    assert_same_run(whole, part, 1e-12)
    again = run_experiment({**config, "chunk_size": 300})
    assert again.layers == whole.layers  # and the threads never change a bit from run to run


def _run_in_child(config, queue):
    queue.put(run_experiment(config).layers)


def test_worker_threads_are_kept_between_runs_and_started_anew_in_a_forked_child():
    # the engine's two threads outlive a run (starting them cost ~1 ms a run); a child forked from
    # a process that ran the engine has no such threads and must start its own, not wait forever
    import multiprocessing
    import threading

    config = RunConfig.from_dict({**SMALL, "batch": 300, "layers": 3})
    first = run_experiment(config)
    names = {t.name for t in threading.enumerate() if t.name.startswith("actstats")}
    second = run_experiment(config)
    assert second.layers == first.layers
    assert {t.name for t in threading.enumerate() if t.name.startswith("actstats")} == names != set()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_run_in_child, args=(config, queue))
    child.start()
    child.join(60)
    assert child.exitcode == 0 and queue.get(timeout=5) == first.layers


def test_a_failing_thread_lets_the_other_finish_before_the_run_raises(monkeypatch):
    # the work arrays go back to the process's pool when a run ends: a run that fails in one thread
    # must not end (and hand them to the next run) while the other thread still writes into them
    import time

    from actstats import network

    finished = []

    def chunk(self, start, stop):
        if start == 0:
            raise RuntimeError("boom")
        time.sleep(0.3)
        finished.append(stop)

    monkeypatch.setattr(network._Part, "_chunk", chunk)
    config = RunConfig.from_dict({**SMALL, "batch": 300, "layers": 3, "chunk_size": 300})
    with pytest.raises(RuntimeError, match="boom"):
        network.run(config)
    assert finished == [300]


def test_engine_fast_paths_equal_direct_numpy_with_symmetric_and_saturated_layers():
    # constant weights: every unit equal (the symmetric fallback of the units statistics); normal:std=3
    # saturates tanh (the saturated count's pruning by min/max); relu with a negative bias kills units
    for config in ({**SMALL, "init": "constant:value=0.05", "act": "tanh"},
                   {**SMALL, "init": "normal:std=3", "act": "tanh"},
                   {**SMALL, "init": "he", "act": "relu", "bias_init": "constant:value=-0.5"},
                   {**SMALL, "init": "xavier", "act": "sigmoid", "dtype": "float32"}):
        config = RunConfig.from_dict(config)
        result = run_experiment(config)
        ref = reference_pass(config)
        act = get_activation(config.act)
        for l, layer in enumerate(result.layers):
            z, post = ref["pre"][l], ref["post"][l]
            s = layer["post"]
            assert s["frac_saturated"] == np.mean(act.saturated(z)), (config.init, l)
            assert s["frac_zero"] == np.mean(post == 0)
            assert s["frac_dead_units"] == np.mean(np.all(post == 0, axis=0))
            assert s["symmetric"] == bool(np.all(np.ptp(post, axis=1) <= 1e-6 * np.abs(post).max(axis=1)))
            assert s["unit_std"] == pytest.approx(post.std(axis=1).mean(), rel=1e-6, abs=1e-12)
            assert s["std"] == pytest.approx(post.std(), rel=1e-6, abs=1e-12)
            # the same values as the engine's only where phi is computed the same way (relu, and the
            # first layer's pre; tanh and sigmoid differ from numpy's by an ulp, which moves equal
            # values across the fine bins of a constant-weight net)
            checked = ("pre", "post", "grad_pre", "grad_weight") if config.act == "relu" else ("pre",) * (l == 0)
            for tensor in checked:
                edges = result.histograms[f"{tensor}_edges"][l]
                counts = result.histograms[f"{tensor}_counts"][l]
                x = ref[tensor][l]
                assert np.array_equal(counts, np.histogram(x, bins=edges)[0]), (config.init, tensor, l)


def test_float32_runs_and_matches_float64_loosely():
    a = run_experiment({**SMALL, "dtype": "float32"})
    b = run_experiment(SMALL)
    for la, lb in zip(a.layers, b.layers):
        assert la["post"]["std"] == pytest.approx(lb["post"]["std"], rel=1e-4)


def test_half_input_has_exactly_half_ones():
    x = make_input("half", np.random.default_rng(0), 5, 1000)
    assert np.all(x.sum(axis=1) == 500) and set(np.unique(x)) == {0.0, 1.0}


@pytest.mark.parametrize("kind", ["normal", "half"])
def test_input_is_drawn_in_blocks_with_their_own_streams_whatever_the_pieces(kind):
    # block k of 2**15 // dim rows comes from SFC64(SeedSequence(seed, spawn_key=(INPUT, 0, k))): drawn
    # here independently and concatenated, it must equal the engine's rows, whichever pieces they
    # are asked in (across block edges, out of order, by two Samples as the two threads do) and
    # whatever the batch size (a shorter batch sees the first samples of a longer one)
    config = RunConfig.from_dict({**SMALL, "input": kind, "input_dim": 300, "batch": 1000})
    rows_per_block = 2**15 // 300
    assert rows_per_block == 109
    streams = [np.random.Generator(np.random.SFC64(np.random.SeedSequence(config.seed, spawn_key=(INPUT, 0, k))))
               for k in range(10)]
    blocks = [make_input(kind, gen, min(rows_per_block, 1000 - k * rows_per_block), 300)
              for k, gen in enumerate(streams)]
    expected = np.concatenate(blocks)
    assert expected.shape == (1000, 300)
    assert np.array_equal(input_rows(config, 1000), expected)
    one, two = Samples(config, INPUT, 300), Samples(config, INPUT, 300)
    got = np.empty((1000, 300))
    for start, stop, samples in [(500, 1000, two), (0, 3, one), (3, 110, one), (110, 500, one)]:
        samples.draw(start, stop, got[start:stop])
    assert np.array_equal(got, expected)
    shorter = config.replace(batch=150)
    assert np.array_equal(input_rows(shorter, 150), expected[:150])
    as_float32 = input_rows(config, 1000, np.float32)
    assert as_float32.dtype == np.float32 and np.array_equal(as_float32, expected.astype(np.float32))


def estimate_gib(message) -> float:
    match = re.match(r"this run needs an estimated ([0-9.]+) GiB of memory", str(message))
    assert match, message
    return float(match.group(1))


def test_memory_estimate_refuses_what_cannot_fit():
    config = RunConfig.from_dict({"width": 20000, "layers": 10})
    with pytest.raises(ConfigError) as err:
        check_memory(config, available=4 * 2**30)
    assert str(err.value).startswith("this run needs an estimated ")
    assert "of memory but only 4.0 GiB is available; lower --width or --layers" in str(err.value)
    # the estimate covers at least the weights and each of the two threads' sums of dL/dW
    # (10 layers of 20000 x 20000 float64, three copies: 89.4 GiB), and does not double it
    assert 3 * 10 * 20000**2 * 8 / 2**30 <= estimate_gib(err.value) < 2 * 89.4
    small = RunConfig.from_dict(SMALL)
    assert check_memory(small, available=4 * 2**30) < 4 * 2**30
    # a chunk that cannot fit: the chunk size is what to lower
    big_chunk = RunConfig.from_dict({"width": 1024, "layers": 20, "batch": 32768, "chunk_size": 32768})
    with pytest.raises(ConfigError) as err:
        check_memory(big_chunk, available=2**30)
    assert "lower --chunk-size, --width or --layers, or use --dtype float32." in str(err.value)
    # every layer's post of the 32768 rows is held for the backward pass (tanh's phi' is computed
    # from it): 5 GiB at least, and not twice that
    assert 20 * 1024 * 32768 * 8 / 2**30 <= estimate_gib(err.value) < 2 * 5


def test_automatic_chunk_keeps_the_big_float32_run_within_1_gib():
    # 20 x 1024, batch 32768, float32, forward and backward: over 5 GB if every activation were held;
    # the automatic chunk bounds it (measured: python benchmarks/bench.py --memory)
    config = RunConfig.from_dict({"width": 1024, "layers": 20, "batch": 32768, "dtype": "float32"})
    assert auto_chunk(config) < config.batch
    assert estimate_bytes(config) < 2**30
    assert check_memory(config, available=2**30) == sum(memory_parts(config).values())
    # (pre and post of 20 layers of 32768 x 1024 float32: 5.4 GB.) Unchunked, the engine would hold
    # every post at least (2.7 GB): the estimate counts them
    whole_batch = config.replace(chunk_size=32768)
    assert estimate_bytes(whole_batch) > 20 * 32768 * 1024 * 4


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


def test_tanh_and_sigmoid_are_accurate_to_a_few_ulp_with_exact_limits():
    from actstats.activations import relu, relu_slope, sigmoid, sigmoid_slope, tanh, tanh_slope

    gen = np.random.default_rng(3)
    # every scale from subnormal to past the point where tanh rounds to 1
    z = np.concatenate([gen.standard_normal(20000) * 3,
                        np.exp(gen.uniform(-740, 6, 20000)) * gen.choice([-1, 1], 20000)])
    ulp = np.spacing(np.abs(np.tanh(z)))
    # numpy's tanh (glibc) is itself within ~1 ulp; ours within 3 of it
    assert np.max(np.abs(tanh(z) - np.tanh(z)) / ulp) <= 4
    w = np.abs(z) < 700  # the sigmoid reference 1/(1+exp(-z)) in long double
    s_ref = (1 / (1 + np.exp(-z[w].astype(np.longdouble)))).astype(np.float64)
    assert np.max(np.abs(sigmoid(z[w]) - s_ref) / np.spacing(s_ref)) <= 4
    big = np.array([-np.inf, -1e308, -800.0, -25.0, 25.0, 800.0, 1e308, np.inf])
    assert tanh(big).tolist() == [-1, -1, -1, -1, 1, 1, 1, 1]
    assert sigmoid(big)[[0, 1, 2, 5, 6, 7]].tolist() == [0, 0, 0, 1, 1, 1]
    assert np.isnan(tanh(np.array([np.nan]))[0]) and np.isnan(sigmoid(np.array([np.nan]))[0])
    # in place (the engine's buffers) equals the allocating call; float32 within a few of its ulp
    zz = z.reshape(200, 200)
    out, work = np.empty_like(zz), (np.empty_like(zz), np.empty_like(zz))
    assert np.array_equal(tanh(zz, out=out, work=work), tanh(zz)) and out is not zz
    z32 = zz.astype(np.float32)
    t32 = np.tanh(z32.astype(np.longdouble)).astype(np.float32)
    assert np.max(np.abs(tanh(z32) - t32) / np.spacing(np.abs(t32))) <= 4
    assert np.allclose(sigmoid(z32), 1 / (1 + np.exp(-z32.astype(np.float64))), rtol=1e-6, atol=1e-37)
    a = tanh(zz)
    # 1 - a^2 to 2 ulp of its value for the float a, computed in long double (where 1 - a and 1 + a
    # are exact); 1 - a*a in float64 rounded a*a first and lost up to hundreds of ulp near |a| = 1
    long = a.astype(np.longdouble)
    slope, exact = tanh_slope(zz, a, out=np.empty_like(zz)), (1 - long) * (1 + long)
    assert float(np.max(np.abs((1 - a * a) - exact) / np.spacing(exact.astype(np.float64)))) > 100
    assert float(np.max(np.abs(slope - exact) / np.spacing(exact.astype(np.float64)))) <= 2
    s = sigmoid(zz)
    assert np.array_equal(sigmoid_slope(zz, s, out=np.empty_like(zz)), s * (1 - s))
    assert np.array_equal(relu(zz, out=np.empty_like(zz)), np.maximum(zz, 0))
    # from a = max(z, 0) alone (the backward pass keeps a, not z): 1 exactly where z > 0
    assert np.array_equal(relu_slope(None, np.maximum(zz, 0), out=np.empty_like(zz)), (zz > 0) * 1.0)


def test_blas_gemm_adds_as_it_multiplies():
    # the backward pass's dL/dW += a.T @ gp in one BLAS call (beta = 1) against NumPy; beta = 0 must
    # not read out (NaN there would survive 0 * NaN); arrays BLAS cannot take as they are are declined
    from actstats.network import _openblas_gemm_tn

    gemm_tn = _openblas_gemm_tn()
    assert gemm_tn is not None  # NumPy's wheels ship scipy-openblas; CI installs them
    gen = np.random.default_rng(3)
    for dtype, rel in ((np.float64, 1e-13), (np.float32, 1e-5)):
        a, b = gen.standard_normal((7, 5)).astype(dtype), gen.standard_normal((7, 3)).astype(dtype)
        out = np.full((5, 3), np.nan, dtype)
        assert gemm_tn(a, b, out, 0.0)
        np.testing.assert_allclose(out, a.T @ b, rtol=rel)
        before = out.copy()
        assert gemm_tn(a, b, out, 1.0)
        np.testing.assert_allclose(out, before + a.T @ b, rtol=rel)
        assert not gemm_tn(a[:, ::2], b, np.empty((3, 3), dtype), 1.0)  # not contiguous
        assert not gemm_tn(a, b.astype(np.float64 if dtype == np.float32 else np.float32), out, 1.0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_weight_gradients_through_blas_equal_numpy_products(dtype, monkeypatch):
    # several chunks, so dL/dW accumulates; with BLAS's gemm (beta = 1) and with NumPy's product and sum
    from actstats import network

    assert 2 * MIN_PART_ROWS <= 130 and 40 < 2 * MIN_PART_ROWS  # chunks of 130 rows are cut in two, 40 not
    config = {**SMALL, "act": "tanh", "batch": 300, "layers": 3, "chunk_size": 130, "dtype": dtype}
    fast = run_experiment(config.copy())
    network.run(RunConfig(**config))  # fills the cache of BLAS functions
    threads, gemm_tn = network._BLAS[0]
    assert gemm_tn is not None
    calls = []
    monkeypatch.setattr(network, "_BLAS", [(threads, lambda *args: calls.append(1) or gemm_tn(*args))])
    assert run_experiment(config.copy()).layers == fast.layers  # the same road: the same numbers
    assert len(calls) == 3 * (2 + 2 + 1)  # 3 layers x chunks of 130, 130 (two halves each) and 40 rows
    monkeypatch.setattr(network, "_BLAS", [(threads, None)])
    slow = run_experiment(config.copy())
    assert_same_run(fast, slow, 1e-12 if dtype == "float64" else 1e-5)
