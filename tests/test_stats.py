"""Streaming statistics against one-shot NumPy answers, for awkward chunk sizes."""

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from actstats.stats import Histogram, TensorStats, describe


def direct(x):
    finite = x[np.isfinite(x)]
    return {"count": x.size, "mean": finite.mean(), "std": finite.std(), "min": finite.min(),
            "max": finite.max(), "frac_zero": np.mean(finite == 0) * finite.size / x.size,
            "frac_nonfinite": 1 - finite.size / x.size}


def streamed(x, chunk, **kw):
    s = TensorStats(kw.pop("bins", 50), dtype=x.dtype, **kw)
    for i in range(0, x.shape[0], chunk):
        s.update(x[i:i + chunk])
    return s


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((203, 40)) * 3 + 100  # a large mean: a sum-of-squares formula would cancel
    x[rng.random(x.shape) < 0.1] = 0.0
    return x


@pytest.mark.parametrize("chunk", [1, 2, 50, 203, 203 + 42])
def test_chunked_moments_and_counts_equal_one_shot(data, chunk):
    s = streamed(data, chunk, units=True).summary()
    d = direct(data)
    for key in ("mean", "std"):
        assert s[key] == pytest.approx(d[key], rel=1e-12)
    assert (s["count"], s["min"], s["max"]) == (d["count"], d["min"], d["max"])
    assert s["frac_zero"] == d["frac_zero"] and s["frac_nonfinite"] == 0
    # the symmetry measure: the std across units of each sample, averaged over samples
    assert s["unit_std"] == pytest.approx(np.std(data, axis=1).mean(), rel=1e-12)
    assert s["symmetric"] is False


@pytest.mark.parametrize("chunk", [1, 2, 50, 203, 245])
def test_chunked_histogram_equals_one_shot_and_numpy(data, chunk):
    one = streamed(data, data.shape[0])
    s = streamed(data, chunk)
    assert np.array_equal(s.hist.counts, one.hist.counts)
    edges = s.hist.edges()
    assert np.array_equal(edges, one.hist.edges())
    # the same counts numpy.histogram gives on these edges, and every value is counted
    assert np.array_equal(s.hist.counts, np.histogram(data, bins=edges)[0])
    assert s.hist.counts.sum() == data.size
    # the grid covers [min, max] and the data fills at least half of the bins' span
    assert edges[0] <= data.min() and edges[-1] > data.max()
    assert (data.max() - data.min()) >= 0.5 * (edges[-1] - edges[0]) - 2 * (edges[1] - edges[0])


def test_fixed_range_counts_under_and_overflow():
    x = np.array([-1.5, -1.0, -0.2, 0.0, 0.99, 1.0, 1.2, 7.0])
    s = TensorStats(4, fixed_range=(-1.0, 1.0))
    s.update(x)
    # bins [-1,-.5) [-.5,0) [0,.5) [.5,1]; 1.0 belongs to the last bin, as in numpy.histogram
    assert s.hist.counts.tolist() == np.histogram(x, bins=4, range=(-1, 1))[0].tolist() == [1, 1, 1, 2]
    assert (s.hist.underflow, s.hist.overflow) == (1, 2)
    assert s.hist.counts.sum() + s.hist.underflow + s.hist.overflow == x.size


def test_nonfinite_values_are_counted_and_left_out():
    x = np.array([[1.0, np.inf, 3.0], [np.nan, -2.0, 0.0]])
    s = describe(x)
    finite = np.array([1.0, 3.0, -2.0, 0.0])
    assert s["frac_nonfinite"] == 2 / 6
    assert s["mean"] == pytest.approx(finite.mean()) and s["std"] == pytest.approx(finite.std())
    assert (s["min"], s["max"], s["frac_zero"]) == (-2.0, 3.0, 1 / 6)


def test_nothing_finite_gives_nan_not_an_error():
    s = describe(np.full((3, 3), np.nan))
    assert s["frac_nonfinite"] == 1 and math.isnan(s["mean"]) and math.isnan(s["std"])


def test_constant_data_is_symmetric_and_fits_one_bin():
    s = TensorStats(50, units=True)
    s.update(np.full((10, 7), 0.25))
    out = s.summary()
    assert out["std"] == 0 and out["symmetric"] is True and out["unit_std"] == 0
    assert s.hist.counts.sum() == 70 and np.count_nonzero(s.hist.counts) == 1
    edges = s.hist.edges()
    k = int(np.flatnonzero(s.hist.counts)[0])
    assert edges[k] <= 0.25 < edges[k + 1]


def test_dead_units_are_units_zero_for_every_sample():
    x = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    s = streamed(x, 1, units=True).summary()
    assert s["frac_dead_units"] == pytest.approx(1 / 3)


def test_float32_histogram_edges_are_exact():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((500, 30)) * 1e-3).astype(np.float32)
    s = streamed(x, 37)
    assert np.array_equal(s.hist.counts, np.histogram(x.astype(np.float64), bins=s.hist.edges())[0])


floats = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=64)


@settings(max_examples=150, deadline=None)
@given(st.lists(floats, min_size=0, max_size=60), st.lists(floats, min_size=0, max_size=60))
@example([19.0], [-5e-324])  # a subnormal: x * 2**-e underflows to -0.0, yet its bin is [-2**e, 0)
@example([1e200], [3.0])     # a first merge into empty moments: no inf * 0
def test_merge_of_two_parts_equals_their_union(a, b):
    a = np.array(a, dtype=np.float64).reshape(-1, 1)
    b = np.array(b, dtype=np.float64).reshape(-1, 1)
    left, right, union = TensorStats(20), TensorStats(20), TensorStats(20)
    left.update(a)
    right.update(b)
    union.update(np.concatenate([a, b]))
    merged = left.merge(right).summary()
    whole = union.summary()
    for key, value in whole.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(merged[key]), key
        elif key in ("mean", "std"):
            assert merged[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
        else:
            assert merged[key] == value, key
    assert np.array_equal(left.hist.counts, union.hist.counts)


def test_histogram_regrid_keeps_every_count():
    h = Histogram(8)
    h.update(np.array([0.1, 0.2]), 0.1, 0.2, 0.1, 0.2)
    h.update(np.array([-50.0, 300.0]), -50.0, 300.0, -50.0, 300.0)
    assert h.counts.sum() == 4
    edges = h.edges()
    assert np.array_equal(h.counts, np.histogram([0.1, 0.2, -50, 300], bins=edges)[0])


def test_fixed_grid_counts_equal_numpy_histogram_even_at_the_edges():
    # values on and one ulp either side of every edge, tiny values of both signs around the edge at 0,
    # and the ends of the range: floor(x * bins / 2) + bins / 2 steps exactly at edges()
    for bins, (lo, hi) in ((50, (-1.0, 1.0)), (51, (-1.0, 1.0)), (50, (0.0, 1.0)), (7, (0.0, 1.0))):
        s = TensorStats(bins, fixed_range=(lo, hi))
        edges = s.hist.edges()
        assert edges[0] == lo and edges[-1] == hi
        assert np.allclose(edges, np.linspace(lo, hi, bins + 1), rtol=0, atol=1e-15)
        lin = np.linspace(lo, hi, bins + 1)
        x = np.concatenate([lin, np.nextafter(lin, -2), np.nextafter(lin, 2), edges, np.nextafter(edges, -2),
                            [-1e-300, -1e-20, -0.0, 1e-20, 1e-300]])
        x = x[(x >= lo) & (x <= hi)]
        s.update(x.reshape(-1, 1))
        assert np.array_equal(s.hist.counts, np.histogram(x, bins=edges)[0]), (bins, lo, hi)
        assert s.hist.underflow == s.hist.overflow == 0
    # tanh's grid: tiny negative values fall left of 0, as numpy.histogram on linspace puts them
    s = TensorStats(50, fixed_range=(-1.0, 1.0))
    s.update(np.array([[-1e-20, 1e-20]]))
    assert s.hist.counts[24] == 1 and s.hist.counts[25] == 1


@pytest.mark.parametrize("units", [False, True])
@pytest.mark.parametrize("shift", [0.0, 0.5, 1e4])
def test_sum_of_squares_moments_fall_back_to_centred_when_the_mean_dominates(units, shift):
    # mean^2/var of 0, ~6 and 1e8: the one-pass formula would lose 8 digits on the last
    rng = np.random.default_rng(7)
    x = rng.standard_normal((300, 40)) * 0.2 + shift
    s = streamed(x, 64, units=units).summary()
    assert s["mean"] == pytest.approx(x.mean(), rel=1e-13)
    assert s["std"] == pytest.approx(x.std(), rel=1e-12)
    if units:
        assert s["unit_std"] == pytest.approx(x.std(axis=1).mean(), rel=1e-12)
        assert s["symmetric"] is False


def test_float32_chunks_are_summed_in_float64():
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((400, 50)) + 3).astype(np.float32)
    x64 = x.astype(np.float64)
    s = streamed(x, 33, units=True).summary()
    assert s["mean"] == pytest.approx(x64.mean(), rel=1e-13)
    assert s["std"] == pytest.approx(x64.std(), rel=1e-12)
    assert s["unit_std"] == pytest.approx(x64.std(axis=1).mean(), rel=1e-12)
    one = streamed(x, 400)
    assert np.array_equal(streamed(x, 33).hist.counts, one.hist.counts)
    assert np.array_equal(one.hist.counts, np.histogram(x64, bins=one.hist.edges())[0])


def test_rows_with_equal_units_are_symmetric_among_others():
    # a few samples whose units are all equal (up to 1e-9 relative) among ordinary ones: only those
    # go through the exact per-row passes, and the symmetry verdict and spread match the direct answer
    rng = np.random.default_rng(9)
    x = rng.standard_normal((50, 20))
    x[[3, 17]] = 2.5
    x[30] = 4.0 * (1 + 1e-9 * rng.standard_normal(20))
    s = streamed(x, 50, units=True).summary()
    assert s["unit_std"] == pytest.approx(x.std(axis=1).mean(), rel=1e-12)
    assert s["symmetric"] is False
    sym = streamed(np.repeat(x[[3, 17, 30]], 5, axis=0), 4, units=True)
    assert sym.asymmetric == 0 and sym.summary()["symmetric"] is True
    assert sym.summary()["unit_std"] == pytest.approx(np.repeat(x[[3, 17, 30]], 5, axis=0).std(axis=1).mean(), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rows_with_nan_or_inf_beside_other_values_are_not_symmetric(dtype):
    # an overflowed layer (ReLU at std 1e20): each sample a mix of 0, inf and NaN, which is no
    # symmetry; a row of one infinity throughout, like a row of one finite value, is
    inf, nan = np.inf, np.nan
    mixed = np.array([[0.0, inf, nan], [0.0, inf, inf], [nan, nan, nan], [-inf, inf, inf]], dtype)
    for chunk in (1, 4):
        assert streamed(mixed, chunk, units=True).asymmetric == 4
    same = np.array([[inf, inf, inf], [2.0, 2.0, 2.0], [-inf, -inf, -inf]], dtype)
    assert streamed(same, 3, units=True).summary()["symmetric"] is True
    assert streamed(np.vstack([same, mixed[:1]]), 2, units=True).summary()["symmetric"] is False


def test_dead_units_found_in_later_chunks():
    x = np.zeros((10, 4))
    x[0, 0] = 1.0   # unit 0 alive in the first chunk
    x[9, 2] = -3.0  # unit 2 only in the last
    s = streamed(x, 3, units=True)
    assert s.alive.tolist() == [True, False, True, False]
    assert s.summary()["frac_dead_units"] == 0.5


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=-1.0, max_value=1.0, width=64), min_size=1, max_size=40),
       st.lists(st.floats(min_value=-1.0, max_value=1.0, width=64), min_size=0, max_size=40),
       st.integers(min_value=500, max_value=1020))
def test_moments_of_values_near_the_float_limit_stay_finite_and_exact(a, b, e):
    """Values of 2**500 .. 2**1020 overflow a sum of squares; the oracle is NumPy on the values
    scaled down by an exact power of two."""
    a = np.ldexp(np.array(a), e).reshape(-1, 1)
    b = np.ldexp(np.array(b), e).reshape(-1, 1)
    both = np.concatenate([a, b]).ravel()
    mean = float(np.mean(np.ldexp(both, -e))) * 2.0**e
    std = float(np.std(np.ldexp(both, -e))) * 2.0**e
    left, right, union = TensorStats(20), TensorStats(20), TensorStats(20)
    left.update(a)
    right.update(b)
    union.update(both.reshape(-1, 1))
    for s in (union.summary(), left.merge(right).summary()):
        assert math.isfinite(s["std"]) and math.isfinite(s["mean"])
        tol = 1e-9 * 2.0**e  # relative to the values' scale: a mean near 0 is a difference of huge values
        assert abs(s["mean"] - mean) <= tol and abs(s["std"] - std) <= tol


def test_scratch_hands_out_views_of_its_current_buffer():
    # views are kept for the next request of the same name, shape and dtype; when a larger request
    # replaces a name's buffer, a later small request must see the new buffer, not the old one
    from actstats.stats import Scratch

    work = Scratch()
    small = work.get("a", (4,), np.float64)
    assert work.get("a", (4,), np.float64) is small
    big = work.get("a", (1000,), np.float64)
    again = work.get("a", (4,), np.float64)
    assert np.shares_memory(again, big) and not np.shares_memory(again, small)
    assert np.shares_memory(work.get("a", (2, 2), np.float32), big)  # another dtype: the same bytes
    assert work.nbytes == 1000 * 8


def test_one_adaptive_bin_is_refused_rather_than_searched_for_forever():
    # the adaptive grid's bins are aligned on 0, so no single bin holds -1 and 1: the search for
    # its width never ended (found by a fresh-eyes pass: `actstats run --bins 1` hung)
    with pytest.raises(ValueError, match=r"^bins == 1, must be >= 2\.$"):
        TensorStats(1).update(np.array([-1.0, 1.0]))
    s = TensorStats(2)
    s.update(np.array([-1.0, 1.0]))
    assert s.hist.counts.tolist() == [1, 1]
    assert Histogram(1, fixed=(0.0, 1.0)).bins == 1  # a fixed range has no such search


def test_adaptive_grid_follows_the_index_bound_when_more_data_arrives():
    # bins are at least 2**(exponent of max|x| - 50) wide (bin numbers below 2**50): values just
    # below 2**60 get bins of 2**10; one just above 2**60 needs 2**11, although the data would still
    # fit 50 bins of 2**10. The grid of the chunks is then the grid of all the data at once.
    a, b = np.array([2.0**60 - 2**12, 2.0**60 - 2**11]), np.array([2.0**60 + 2**12])
    chunked = TensorStats(50)
    chunked.update(a)
    assert chunked.hist.e == 10
    chunked.update(b)
    whole = TensorStats(50)
    whole.update(np.concatenate([a, b]))
    assert (chunked.hist.e, chunked.hist.start) == (whole.hist.e, whole.hist.start) == (11, 2**49 - 2)
    assert np.array_equal(chunked.hist.counts, whole.hist.counts)
