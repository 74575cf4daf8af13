"""The compiled kernels (actstats/_kernels.c) against the NumPy code they replace.

Every statistic is computed twice, once with the kernels and once with ``kernels.LIB = None`` (the
NumPy passes of stats.py and activations.py), and must agree: counts, extremes and histogram bins
exactly, moments to rounding (the sums are added in another order)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actstats import kernels, network
from actstats.config import RunConfig
from actstats.stats import TensorStats


def test_kernels_are_built_and_loaded():
    # the README's install builds them (setup.py); without a C compiler actstats falls back to NumPy,
    # but on CI's machine a missing build must fail here rather than pass slower
    assert kernels.LIB is not None, "actstats/_kernels.c was not built: pip install -e . with a C compiler"


def both(fn):
    """fn() with the kernels, then with the NumPy code."""
    fast = fn()
    with pytest.MonkeyPatch.context() as m:
        m.setattr(kernels, "LIB", None)
        slow = fn()
    return fast, slow


def stats_of(x, chunk, **kw):
    s = TensorStats(kw.pop("bins", 50), dtype=x.dtype, **kw)
    sat = 0
    for i in range(0, x.shape[0], chunk):
        sat += s.update(x[i:i + chunk], saturation=(-1.5, 2.0))[2]
    return s, sat


def same(fast, slow):
    (a, sat_a), (b, sat_b) = fast, slow
    assert sat_a == sat_b
    for key in ("count", "n", "min", "max", "n_zero", "m2_exp", "asymmetric", "samples"):
        assert getattr(a, key) == getattr(b, key), key
    assert np.array_equal(a.hist.counts, b.hist.counts)
    assert (a.hist.e, a.hist.start, a.hist.underflow, a.hist.overflow) == \
        (b.hist.e, b.hist.start, b.hist.underflow, b.hist.overflow)
    assert a.mean == pytest.approx(b.mean, rel=1e-12, abs=1e-300)
    # M2 to rounding: relative, and for equal values (M2 exactly 0 on one road) each value's
    # distance from the computed mean is a few ulp of the values (found by hypothesis: 12 equal
    # values of 7e-33 gave 0 and 2e-95)
    big = max(abs(a.min), abs(a.max)) if a.n and math.isfinite(a.min) and math.isfinite(a.max) else 0.0
    assert a.m2 == pytest.approx(b.m2, rel=1e-10, abs=max(1e-300, a.n * (8 * 2.3e-16 * big) ** 2))
    assert a.unit_std_sum == pytest.approx(b.unit_std_sum, rel=1e-9, abs=1e-300)
    assert (a.alive is None) == (b.alive is None)
    if a.alive is not None:
        assert np.array_equal(a.alive, b.alive)


@settings(max_examples=150, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 30), chunk=st.integers(1, 45),
       dtype=st.sampled_from([np.float64, np.float32]), scale=st.sampled_from([1e-30, 1e-3, 1, 7, 1e20]),
       mean=st.sampled_from([0.0, 3.0, -1e3]), zeros=st.floats(0, 1), fixed=st.booleans(),
       units=st.booleans(), special=st.sampled_from([None, np.inf, -np.inf, np.nan]),
       seed=st.integers(0, 2**32 - 1))
def test_kernels_give_the_numpy_statistics(rows, cols, chunk, dtype, scale, mean, zeros,
                                           fixed, units, special, seed):
    gen = np.random.default_rng(seed)
    x = ((gen.standard_normal((rows, cols)) + mean) * scale).astype(dtype)
    x[gen.random(x.shape) < zeros] = 0.0
    x[gen.random(rows) < 0.2] = x[0, 0]  # some constant (symmetric) rows
    if special is not None:
        x.flat[gen.integers(x.size)] = special
    kw = {"fixed_range": (-1.0, 1.0) if fixed else None, "units": units}
    same(*both(lambda: stats_of(x, chunk, **kw)))


def test_kernel_histograms_keep_the_edge_rules():
    # a tiny negative value whose product with 2**-e underflows to -0.0 belongs in bin -1; values
    # exactly on the fixed range's ends, and outside it, as numpy.histogram counts them
    tiny = np.array([[-1e-300, 0.0, 1e-300, 3e4, -5e3]])
    edges = np.array([[-1.0, -0.5, 0.0, 0.98, 1.0, 1.0 + 2**-52, -1.0 - 2**-52, 0.5]])
    # float32 bins in float arithmetic while the grid's indices stay below 2**24, in double beyond
    tiny32 = np.array([[-1.4e-45, 0.0, 1.4e-45, 3e4, -5e3]], np.float32)  # the smallest subnormal
    far32 = (np.float32(3e7) + np.arange(40, dtype=np.float32)).reshape(1, -1)  # start ~ 2**25
    for x, fixed in ((tiny, None), (edges, (-1.0, 1.0)), (tiny32, None), (far32, None)):
        same(*both(lambda: stats_of(x, 1, fixed_range=fixed)))
    s, _ = stats_of(far32, 40)
    assert abs(s.hist.start) + s.hist.bins > 2**24  # the double road was taken
    s, _ = stats_of(edges, 1, fixed_range=(-1.0, 1.0), bins=4)
    inside = edges[(edges >= -1) & (edges <= 1)]
    assert s.hist.counts.tolist() == np.histogram(inside, bins=4, range=(-1, 1))[0].tolist()
    assert (s.hist.underflow, s.hist.overflow) == (1, 1)


@pytest.mark.parametrize("fixed, bins", [((-1.0, 1.0), 50), ((0.0, 1.0), 50), ((-1.0, 1.0), 2),
                                         ((0.0, 1.0), 7), ((-1.0, 1.0), 64), ((-1.0, 1.0), 100_000),
                                         ((-1.0, 1.0), 51), ((0.0, 3.0), 50)])
def test_float32_fixed_grid_bins_equal_numpys_at_every_edge(fixed, bins):
    # float32 on tanh's and sigmoid's grids is binned in float (the product's floor from the float
    # product and its exact error); every edge of the grid and 8 floats either side of it, the ends,
    # tiny values of both signs and values outside: bin for bin NumPy's (which bins in double).
    # (51 bins: shift not whole; [0, 3]: scale 50/3 is not a float: both take the double road.)
    lo, hi = fixed
    edges = np.linspace(lo, hi, min(bins, 2000) + 1).astype(np.float32)
    near = [edges]
    for direction in (np.inf, -np.inf):
        step = edges
        for _ in range(8):
            step = np.nextafter(step, np.float32(direction))
            near.append(step)
    special = np.array([-0.0, 0.0, -1.4e-45, 1.4e-45, -1e-40, 1e-40, lo, hi, -5.0, 5.0], np.float32)
    tanhs = np.tanh(np.random.default_rng(bins).standard_normal(5000) * 2).astype(np.float32)
    x = np.concatenate(near + [special, tanhs]).reshape(1, -1)
    fast, slow = both(lambda: stats_of(x, 1, fixed_range=fixed, bins=bins))
    same(fast, slow)
    assert fast[0].hist.underflow + fast[0].hist.overflow == int(np.sum((x < lo) | (x > hi)))


@pytest.mark.parametrize("low, high", [(-2.6466524123622457, 2.6466524123622457), (-1.5, 2.0),
                                       (-1e300, 1e300), (-np.inf, 3.4028235677973366e38), (-0.1, np.inf)])
def test_float32_saturation_counts_compare_in_double(low, high):
    # float32 rows count in float lanes against the floats that compare alike with the double
    # thresholds; around each threshold (tanh's 2.6467 is no float: its nearest float32 lies above
    # it, and that float counts as saturated), the counts equal comparisons made in float64, and
    # NumPy's road (which once compared in float32, the Python float rounded to float32) agrees
    near = []
    for t in (low, high):
        if np.isfinite(t) and abs(t) < 3.4e38:
            f = np.float32(t)
            near += [np.nextafter(f, np.float32(np.inf * s)) if k else f for s in (1, -1) for k in range(4)]
            for _ in range(5):
                near.append(np.nextafter(near[-1], np.float32(-np.inf)))
    x = np.array(near + [0.0, -0.0, 1.0, -3.0, 3.4028235e38, -3.4028235e38, 1e-40], np.float32).reshape(1, -1)
    wide = x.astype(np.float64)
    above, below = int(np.sum(wide > high)), int(np.sum(wide < low))
    got = kernels.scan(x, low, high)
    assert got[6:8] == (above, below)
    assert (got[0], got[1]) == (float(wide.min()), float(wide.max()))
    with pytest.MonkeyPatch.context() as m:
        m.setattr(kernels, "LIB", None)
        assert TensorStats(10, dtype=np.float32).update(x, saturation=(low, high))[2] == above + below


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_backward_kernel_equals_the_numpy_step(act, dtype):
    # dL/dz = d * phi'(a) and the sum of phi'(a) in one pass: the same values as activations.py's
    # slope and NumPy's product, saturated posts (a = +-1, 0, 1), NaN, inf and -0.0 included
    from actstats import activations

    gen = np.random.default_rng(3)
    spec = activations.get(act)
    z = np.concatenate([gen.standard_normal(3000) * 3, [0.0, -0.0, 40.0, -40.0, np.nan]]).astype(dtype)
    a = spec.phi(z.astype(np.float64)).astype(dtype)
    d = np.concatenate([gen.standard_normal(3000), [-1.0, 2.0, -np.inf, 3.0, 1.0]]).astype(dtype)
    fast, slow = np.empty_like(a), np.empty_like(a)
    total = kernels.backward(act, d, a, fast)
    slope = spec.dphi(None, a, out=np.empty_like(a))
    with np.errstate(invalid="ignore"):  # -inf * 0: NaN, as the engine's threads compute it
        np.multiply(d, slope, out=slow)
    assert np.array_equal(fast, slow, equal_nan=True)
    assert np.array_equal(np.signbit(fast), np.signbit(slow))
    expected = float(np.sum(slope, dtype=np.float64))
    assert total == pytest.approx(expected, rel=1e-12, nan_ok=True)
    with pytest.MonkeyPatch.context() as m, np.errstate(invalid="ignore"):  # the NumPy steps
        m.setattr(kernels, "LIB", None)
        numpy_road = np.empty_like(a)
        assert activations.grad_pre(spec, d, a, numpy_road, np.empty_like(a)) == pytest.approx(expected, nan_ok=True)
    assert np.array_equal(numpy_road, fast, equal_nan=True)


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_run_with_kernels_equals_the_numpy_run(act, dtype):
    config = RunConfig(act=act, init="xavier_normal", layers=4, width=64, batch=300, chunk_size=128,
                       dtype=dtype, backward=True)
    fast, slow = both(lambda: network.run(config))
    for a, b in zip(fast.layers, slow.layers):
        for name in ("pre", "post", "grad_pre", "grad_weight"):
            sa, sb = getattr(a, name).summary(saturation=True), getattr(b, name).summary(saturation=True)
            assert sa.keys() == sb.keys()
            rel = 1e-5 if dtype == "float32" else 1e-9
            for key in sa:
                # the activations differ by a few ulp (kernels' tanh and sigmoid vs NumPy's), and so
                # everything computed from them, by about as much; a mean near 0 (dL/dW's) to its std
                tol = rel * sb["std"] if key == "mean" else 0
                assert sa[key] == pytest.approx(sb[key], rel=rel, abs=tol), (name, key)
            if act == "relu":  # phi is the same function on both roads: the bins are equal
                assert np.array_equal(getattr(a, name).hist.counts, getattr(b, name).hist.counts)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_activations_match_long_double_references(dtype):
    gen = np.random.default_rng(7)
    z = np.concatenate([gen.standard_normal(30000) * s for s in (1e-300, 1e-6, 0.1, 1, 5, 30, 400)]).astype(dtype)
    # around the limits of sigmoid's one-factor road (|z| < 86 in float32, 700 in float64): a few
    # hundred floats either side, where e^-|z| turns subnormal for float32
    for limit in (86.0, 700.0):
        near = np.array([limit], dtype)
        for direction in (np.inf, -np.inf):
            step = near[:1]
            for _ in range(300):
                step = np.nextafter(step, dtype(direction))
                near = np.concatenate([near, step])
        z = np.concatenate([z, near, -near, -near * 1.2])
    ref_t = np.tanh(z.astype(np.longdouble))
    ref_s = 1 / (1 + np.exp(-z.astype(np.longdouble)))
    for got, ref in ((kernels.tanh(z), ref_t), (kernels.sigmoid(z), ref_s)):
        ref = ref.astype(dtype)
        ulps = np.abs(got.astype(np.longdouble) - ref) / np.spacing(np.abs(ref))
        # a few ulp: the truncated expm1 (13 terms in float64, 8 in float32), 2**k exact, one division
        assert float(np.max(ulps)) <= 4
    assert math.isnan(kernels.tanh(np.array([np.nan]))[0])


@pytest.mark.parametrize("value, loaded", [("0", False), ("off", False), ("False", False), ("1", True)])
def test_actstats_kernels_turns_them_off_and_results_say_which_ran(value, loaded):
    import os
    import subprocess
    import sys

    code = ("from actstats import RunConfig, run_experiment; "
            "print(run_experiment(RunConfig(layers=1, width=4, batch=4)).versions['kernels'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "ACTSTATS_KERNELS": value})
    assert out.stdout.strip() == str(loaded)


def test_many_bins_on_a_small_thread_stack():
    # --bins allows 100,000: the counts live on the heap, not the stack (an 800 KB stack array would
    # overflow a 256 KiB thread stack); the counts equal the NumPy road's
    import threading

    x = np.random.default_rng(5).standard_normal((40, 500))
    box = {}
    old = threading.stack_size(256 * 1024)
    try:
        worker = threading.Thread(target=lambda: box.update(fast=stats_of(x, 40, bins=100_000)))
        worker.start()
        worker.join()
    finally:
        threading.stack_size(old)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(kernels, "LIB", None)
        slow = stats_of(x, 40, bins=100_000)
    same(box["fast"], slow)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scan_measures_the_spread_across_units_of_every_row(dtype):
    # units statistics from the one pass: each sample's std across units (NumPy's np.std of the
    # row), summed, and every row counted as asymmetric; with a dominant mean the kernel leaves the
    # chunk to the caller (clear -1), which centres it first
    gen = np.random.default_rng(11)
    x = (gen.standard_normal((37, 23)) * gen.uniform(0.5, 3, (37, 1))).astype(dtype)
    got = kernels.scan(x, units=(1e-3, 32.0))
    assert got.clear == 37
    assert got.spread == pytest.approx(float(np.sum(np.std(x.astype(np.float64), axis=1))), rel=1e-12)
    assert got.total == pytest.approx(float(np.sum(x, dtype=np.float64)), rel=1e-12)
    assert got.sum_sq == pytest.approx(float(np.sum(x.astype(np.float64) ** 2)), rel=1e-12)
    assert kernels.scan(x + dtype(100), units=(1e-3, 32.0)).clear == -1  # mean^2/var ~ 1e4 > 32
    assert kernels.scan(x).clear == -1  # not asked
    s = TensorStats(10, dtype=dtype, units=True)
    s.update(x)
    assert (s.asymmetric, s.samples) == (37, 37)
    assert s.unit_std_sum == pytest.approx(got.spread, rel=1e-15)


def test_normal_kernel_draws_numpys_numbers_bit_for_bit():
    # the engine's input and loss projection rows are, block by block,
    # Generator(SFC64(SeedSequence(seed, spawn_key=...))).standard_normal; the kernel seeds and draws
    # them three times faster and must give the same bits. 100,000 draws leave the ziggurat's fast
    # path (wedges, tail) about 1,500 times: those are NumPy's own code on the kernel's state
    for seed, key in ((3, (1, 0, 0)), (0, (2, 0, 7)), (2**40 + 9, (3, 0, 2**33 + 1)), (12345678901, (2,))):
        theirs = np.random.Generator(np.random.SFC64(np.random.SeedSequence(seed, spawn_key=key)))
        expected = theirs.standard_normal(100_000 + 77)
        entropy = kernels.seed_entropy(seed, key)
        x = np.empty((800, 125))
        assert kernels.normal_rows(entropy, 77, x)  # draws 77 .. 100,076
        assert np.array_equal(x.reshape(-1).view(np.uint64), expected[77:].view(np.uint64))
        x32 = np.empty(1000, np.float32)  # float32: the same draws, rounded
        assert kernels.normal_rows(entropy, 0, x32)
        assert np.array_equal(x32, expected[:1000].astype(np.float32))
    assert not kernels.normal_rows(kernels.seed_entropy(0, (1,)), 0, np.empty(10, np.int64))


def test_engine_input_is_numpys_normal_draws():
    # rows of block k come from Generator(SFC64(SeedSequence(seed, spawn_key=(INPUT, 0, k)))),
    # whichever road draws them
    config = RunConfig(layers=1, width=8, input_dim=300, batch=250, seed=5)
    block = network.rows_per_block(300)
    seq = np.random.SeedSequence(5, spawn_key=(network.INPUT, 0, 1))
    expected = np.random.Generator(np.random.SFC64(seq)).standard_normal((block, 300))  # rows 109-217
    assert np.array_equal(network.input_rows(config, 250)[block: 2 * block], expected)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_kernel_is_numpys_maximum_bit_for_bit(dtype):
    specials = np.array([-0.0, 0.0, np.nan, -np.nan, np.inf, -np.inf, 1e-45, -1e-45, 3.0, -2.0], dtype)
    z = np.concatenate([specials, np.random.default_rng(2).standard_normal(1000).astype(dtype)])
    bits = np.uint32 if dtype == np.float32 else np.uint64
    assert np.array_equal(kernels.relu(z).view(bits), np.maximum(z, 0).view(bits))  # +0 for -0, NaN kept


def _grid(values, bins, dtype):
    """The adaptive grid (scale, start) a histogram of ``bins`` bins takes for these values."""
    from actstats.stats import Histogram

    return Histogram(bins, None, dtype).prepare(float(values.min()), float(values.max()))


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bins", [50, 7])
def test_layer_pass_equals_phi_and_the_two_histograms(act, dtype, bins):
    # phi and both histograms in one pass, each value counted once in a table of (pre bin, post bin)
    # pairs: the post bit for bit phi's kernel, the counts those of each histogram on its own, and
    # the pre's those of floor(z * 2**-e) - start computed here; grid edges, +-0, tiny negatives
    # (bin -1), saturated and huge values included
    gen = np.random.default_rng(bins)
    z = np.concatenate([gen.standard_normal(20000) * 3, [0.0, -0.0, -1e-30, 1e-30, 25.0, -25.0, 1e4, -1e4]])
    scale, start = _grid(z.astype(dtype), bins, dtype)
    steps = np.arange(start, start + bins + 1) / scale  # the grid's edges, and a step either side
    z = np.concatenate([z, steps, np.nextafter(steps, np.inf), np.nextafter(steps, -np.inf)])
    z = z[(z >= z[:20008].min()) & (z <= z[:20008].max())].astype(dtype).reshape(1, -1)
    pre = _grid(z, bins, dtype)
    phi = getattr(kernels, act)
    a = phi(z, np.empty_like(z))
    if act == "relu":
        post = _grid(a, bins, dtype)
        post_counts = (kernels.hist_adaptive(a, *post, bins), 0, 0)
    else:
        from actstats.stats import _fixed_level

        lo, hi = (-1.0, 1.0) if act == "tanh" else (0.0, 1.0)
        post = (lo, hi, *_fixed_level(lo, hi, bins))
        post_counts = kernels.hist_fixed(a, *post, bins)
    out = np.full_like(z, np.nan)
    got = kernels.layer(act, z, out, pre, post, bins)
    assert np.array_equal(out.view(np.uint8), a.view(np.uint8))
    ours = np.floor(z.astype(np.float64) * pre[0])
    ours[(ours == 0) & (z < 0)] = -1  # a product that underflowed to -0.0 (none here: a guard)
    ours -= pre[1]
    assert got[0].tolist() == np.bincount(ours.astype(int).ravel(), minlength=bins).tolist()
    assert got[0].tolist() == kernels.hist_adaptive(z, *pre, bins).tolist()
    assert got[1].tolist() == post_counts[0].tolist() and got[2:] == tuple(post_counts[1:])
    assert got[0].sum() == z.size == got[1].sum() + got[2] + got[3]


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_run_with_the_layer_pass_equals_one_without(act, dtype):
    # the engine with kernels.layer (phi and both histograms in one pass) and with the separate
    # passes: every number and every count the same, chunk after chunk (the last one smaller)
    config = RunConfig(act=act, init="normal:std=0.3", layers=4, width=64, batch=300, chunk_size=128,
                       dtype=dtype, bins=10, backward=True)
    assert kernels.layer_usable(np.empty((22, 64), dtype), 10)
    fused = network.run(config)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(kernels, "layer_usable", lambda z, bins: False)
        apart = network.run(config)
    for a, b in zip(fused.layers, apart.layers):
        for name in ("pre", "post", "grad_pre", "grad_weight"):
            sa, sb = getattr(a, name), getattr(b, name)
            assert sa.summary(saturation=True) == sb.summary(saturation=True), name
            assert np.array_equal(sa.hist.edges(), sb.hist.edges()), name
            assert np.array_equal(sa.hist.counts, sb.hist.counts), name


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_alive_kernel_is_numpys_any_nonzero(dtype):
    # units alive where some row is not zero: NaN counts, -0.0 does not, a unit first alive in the
    # last row is found, units already marked stay marked; the count left is the units never seen
    gen = np.random.default_rng(5)
    x = np.where(gen.random((70, 40)) < 0.9, 0.0, gen.standard_normal((70, 40))).astype(dtype)
    x[:, :6] = 0.0
    x[:, 1] = -0.0
    x[69, 2] = 3.0
    x[30, 3] = np.nan
    x[:, 4] = -0.0
    alive = np.zeros(40, bool)
    alive[4] = True
    left = kernels.alive(x, alive)
    expected = np.any(x != 0, axis=0)
    expected[4] = True
    assert alive.tolist() == expected.tolist()
    assert left == int(np.sum(~expected))
    assert kernels.alive(np.ones((3, 5), dtype), np.zeros(5, bool)) == 0
    assert kernels.alive(np.zeros((0, 5), dtype), np.array([1, 0, 1, 0, 0], bool)) == 3  # no rows
