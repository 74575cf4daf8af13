"""Streaming, mergeable statistics of one tensor: moments, fractions, extremes and a histogram.

A tensor arrives in chunks (rows of the batch); ``TensorStats.update`` folds each chunk in and
``merge`` combines two partial results, so the answer never depends on how the batch was cut:

* moments merge as ``(count, mean, M2)`` in float64 (Chan, Golub & LeVeque 1979), each chunk computed
  two-pass (mean first, then centred squares) so a large mean does not cancel the variance;
* counts (zeros, non-finite, saturated) and extremes merge by addition and min/max;
* histograms either have fixed edges (tanh's post on [-1, 1], sigmoid's on [0, 1]; values outside are
  counted as underflow/overflow, never dropped) or an *adaptive* grid: bins of width ``2**e`` aligned
  on multiples of that width, ``e`` the smallest exponent for which ``bins`` bins cover [min, max].
  Coarsening such a grid merges whole pairs of bins, so the merged counts equal the one-shot counts
  exactly, and the data fills between half and all of the bins.

Non-finite values (inf, NaN) are counted in ``frac_nonfinite`` and left out of everything else.

Speed: with the compiled kernels (kernels.py) a chunk is read twice: one pass gives the extremes,
per-row sums and sums of squares, and the zero, non-finite and saturated counts; a second the
histogram (for a layer's pre and post under tanh, sigmoid and ReLU the engine counts both
histograms in the pass that computes the post: ``update(histogram=False)``, kernels.layer).
Without them (or for a chunk with a non-finite value) NumPy does the same a handful of passes at a
time, into reusable buffers (``Scratch``). Either way the moments come from sums and
sums of squares, falling back to the centred two-pass formula only when mean^2 / var is large enough
to cost precision, and the histogram bin of x is ``floor(x * 2**-e) - start`` (exact).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from . import kernels

E_FLOOR = {np.dtype(np.float64): -1000, np.dtype(np.float32): -100}  # 2**-e stays representable
INDEX_BITS = 50  # bin indices stay below 2**50: exact in float64 and in int64
# units equal up to rounding: relative spread across units below this. A sum of n products rounds
# differently in different columns (BLAS blocking): up to ~n eps relative, 5e-14 in float64 but 3e-5
# in float32 at n = 500, so float32 gets a looser bound
SYMMETRY_TOL = {np.dtype(np.float64): 1e-6, np.dtype(np.float32): 1e-3}
# sum/sum-of-squares moments lose about mean^2/var * eps of relative precision: above this ratio the
# centred two-pass formula is used instead (its error is a few eps whatever the mean)
CANCEL_RATIO = 32.0


class Scratch:
    """Reusable work arrays, one set per thread. A fresh multi-megabyte array costs a page fault per
    4 KiB page on every use; these are allocated once and grown when a larger chunk needs it. A name
    holds raw bytes, viewed as whatever dtype asks for it, so float64 and float32 work share them."""

    def __init__(self):
        self._bufs: dict = {}
        self._views: dict = {}  # (name, shape, dtype) -> the view last handed out

    def get(self, name: str, shape, dtype) -> np.ndarray:
        key = (name, shape, dtype)
        view = self._views.get(key)
        if view is not None:  # the engine asks for the same few views layer after layer
            return view
        dtype = np.dtype(dtype)
        n = math.prod(shape)
        nbytes = n * dtype.itemsize
        buf = self._bufs.get(name)
        if buf is None or buf.size * 8 < nbytes:  # float64 storage: aligned for every dtype
            buf = self._bufs[name] = np.empty(-(-nbytes // 8), np.float64)
            self._views = {k: v for k, v in self._views.items() if k[0] != name}  # views of the old one
        view = buf.view(np.uint8)[:nbytes].view(dtype).reshape(shape)
        if len(self._views) >= 256:  # a long sweep of many shapes keeps only the recent ones
            self._views.clear()
        self._views[key] = view
        return view

    @property
    def nbytes(self) -> int:
        return sum(buf.nbytes for buf in self._bufs.values())


def _huge_moments(x: np.ndarray) -> tuple[float, float, int]:
    """(mean, M2 / 4**k, k) of finite float64 values whose sum or sum of squares overflows: both
    from the values scaled by 2**-k, k the exponent of the largest |value| (exact power-of-two
    scaling), so the std stays measurable up to the float limit instead of becoming inf."""
    big = float(np.max(np.abs(x)))
    k = math.frexp(big)[1]
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        scaled = x.reshape(-1) * math.ldexp(1.0, -k)      # |scaled| <= 1
        mean_s = float(np.mean(scaled))
        d = scaled - mean_s
        return math.ldexp(mean_s, k), float(np.dot(d, d)), k


def _level(x: float, e: int) -> int:
    """floor(x / 2**e), exactly: ldexp rounds a tiny negative x to -0.0 when e > 0, but its bin is -1."""
    k = math.floor(math.ldexp(x, -e))
    return -1 if k == 0 and x < 0 else k


def _fixed_level(lo: float, hi: float, bins: int):
    """(scale, shift): the fixed grid's bin of x is floor(x * scale) + shift when lo * scale is a whole
    number (tanh's [-1, 1] with an even number of bins, sigmoid's [0, 1]: 0 is an exact edge and tiny
    negative values fall left of it), else floor((x - lo) * scale) (shift None)."""
    scale = bins / (hi - lo)
    shift = -lo * scale
    return scale, (shift if shift == math.floor(shift) else None)


@functools.lru_cache(maxsize=64)
def _fixed_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    """Edges of the fixed grid: edge k is the smallest float x whose bin (see _fixed_level, computed
    as Histogram.update computes it) is >= k. They are linspace(lo, hi, bins + 1) up to an ulp or two,
    and they make the binning exactly numpy.histogram's on these edges."""
    scale, shift = _fixed_level(lo, hi, bins)

    def key(x):  # floats -> integers in the same order
        b = np.asarray(x, np.float64).view(np.int64)
        return np.where(b < 0, np.int64(-(2**63)) - b, b)

    def value(k):
        return np.where(k < 0, np.int64(-(2**63)) - k, k).view(np.float64)

    def level(x):
        return np.floor(x * scale) + shift if shift is not None else np.floor((x - lo) * scale)

    k = np.arange(1, bins, dtype=np.float64)
    a = np.full(k.shape, key(lo), np.int64)  # level(a) < k <= level(b)
    b = np.full(k.shape, key(hi), np.int64)
    for _ in range(70):
        if np.all(b - a <= 1):
            break
        mid = a + (b - a) // 2
        up = level(value(mid)) >= k
        b = np.where(up, mid, b)
        a = np.where(up, a, mid)
    edges = np.concatenate([[lo], value(b), [hi]])
    edges.flags.writeable = False  # cached: shared by every histogram of this grid
    return edges


class Histogram:
    """Counts over ``bins`` bins; fixed edges when ``fixed=(lo, hi)``, else the adaptive 2**e grid."""

    def __init__(self, bins: int, fixed: tuple[float, float] | None = None, dtype=np.float64):
        if fixed is None and bins < 2:  # bins are aligned on 0: one cannot hold both signs
            raise ValueError(f"bins == {bins}, must be >= 2.")
        self.bins = bins
        self.fixed = fixed
        self.dtype = np.dtype(dtype)
        self.counts = np.zeros(bins, dtype=np.int64)
        self.underflow = 0
        self.overflow = 0
        self.e: int | None = None     # adaptive grid: width 2**e ...
        self.start = 0                # ... first bin covers [start, start+1) * 2**e
        if fixed is not None:
            self._scale, self._shift = _fixed_level(float(fixed[0]), float(fixed[1]), bins)
            self._edges = _fixed_edges(float(fixed[0]), float(fixed[1]), bins)

    # -- adaptive grid ----------------------------------------------------------------------------
    def _exponent(self, lo: float, hi: float) -> int:
        """Smallest e for which ``bins`` aligned bins of width 2**e cover [lo, hi]."""
        big = max(abs(lo), abs(hi))
        e_min = E_FLOOR[self.dtype] if big == 0 else max(math.frexp(big)[1] - INDEX_BITS,
                                                         E_FLOOR[self.dtype])
        span = hi / 2 - lo / 2  # halves: no overflow near the float limit
        e = e_min if span <= 0 else max(e_min, math.frexp(span)[1] - int(math.log2(self.bins)) - 1)
        while _level(hi, e) - _level(lo, e) + 1 > self.bins:
            e += 1
        return e

    def _regrid(self, e: int, start: int):
        """Move the counts to the coarser grid (e, start): whole bins merge, nothing is split."""
        if self.e is None:
            self.e, self.start = e, start
            return
        full = np.flatnonzero(self.counts)  # empty bins may lie outside the new range
        # |full + start| < 2**51, so a shift by 62 already gives floor's 0 or -1 (and numpy's shift
        # by 64 or more is undefined)
        idx = ((full + self.start) >> min(e - self.e, 62)) - start
        counts = np.zeros(self.bins, dtype=np.int64)
        np.add.at(counts, idx, self.counts[full])
        self.counts = counts
        self.e, self.start = e, start

    def update(self, x: np.ndarray, lo: float, hi: float, data_lo: float, data_hi: float,
               work: Scratch | None = None):
        """Count finite ``x``; (lo, hi) its own extremes, (data_lo, data_hi) those of all data so far.
        ``x`` is float64 or float32 (binned through float64, where every step below is exact)."""
        if x.size == 0:
            return
        x = x.reshape(-1)
        if kernels.usable(x):
            self._update_kernel(x, data_lo, data_hi)
            return
        work = work or Scratch()
        f = work.get("hist_f", x.shape, np.float64)
        idx = work.get("hist_i", x.shape, np.int64)
        if self.fixed is not None:
            flo, fhi = self.fixed
            if lo < flo or hi > fhi:  # values outside the range: counted apart, never dropped
                self.underflow += int(np.count_nonzero(x < flo))
                self.overflow += int(np.count_nonzero(x > fhi))
                x = x[(x >= flo) & (x <= fhi)]
                f, idx = f[: x.size], idx[: x.size]
            # the bin is a monotone function of x (_fixed_level); _fixed_edges are the exact points
            # where it steps, so the counts are numpy.histogram's on edges()
            if self._shift is not None:
                np.multiply(x, self._scale, out=f)
                np.floor(f, out=f)
                f += self._shift
            else:
                np.subtract(x, flo, out=f)
                f *= self._scale
                np.floor(f, out=f)
            np.copyto(idx, f, casting="unsafe")
            counts = np.bincount(idx, minlength=self.bins + 1)
            counts[self.bins - 1] += counts[self.bins]  # x == hi (or rounding to it): the last bin
            self.counts += counts[: self.bins]
            return
        scale, start = self.prepare(data_lo, data_hi)
        e = self.e
        # x * 2**-e is exact (a power-of-two scaling), and so are its floor and floor - start
        # (integers below 2**51); only then is it truncated to int64
        np.multiply(x, scale, out=f)
        np.floor(f, out=f)
        if e > 0 and lo < 0 and hi > -math.ldexp(1.0, e - 1074):
            # a negative x so close to 0 that x * 2**-e underflowed to -0.0 belongs in bin -1, not 0
            under = work.get("hist_under", x.shape, np.bool_)
            np.logical_and(np.equal(f, 0.0, out=under), x < 0, out=under)
            f[under] = -1.0
        f -= start
        np.copyto(idx, f, casting="unsafe")
        self.counts += np.bincount(idx, minlength=self.bins)[: self.bins]

    def _update_kernel(self, x: np.ndarray, data_lo: float, data_hi: float):
        """update's binning (the same bins), in one compiled pass."""
        grid = self.grid(data_lo, data_hi)  # may regrid: before self.counts is read
        if self.fixed is not None:
            self.add(*kernels.hist_fixed(x, *grid, self.bins))
        else:
            self.counts += kernels.hist_adaptive(x, *grid, self.bins)

    def grid(self, data_lo: float = math.nan, data_hi: float = math.nan) -> tuple:
        """The grid to count a chunk on, as the kernels take it: a fixed one's (lo, hi, scale,
        shift), or (scale, start) of the adaptive one that holds all data so far, [data_lo,
        data_hi] (``prepare``: it may regrid)."""
        if self.fixed is not None:
            return float(self.fixed[0]), float(self.fixed[1]), self._scale, self._shift
        return self.prepare(data_lo, data_hi)

    def prepare(self, data_lo: float, data_hi: float) -> tuple[float, int]:
        """Adaptive grid: move to the grid of all data so far, [data_lo, data_hi], and return its
        (2**-e, start) for binning a chunk as floor(x * 2**-e) - start."""
        # more data never needs a finer grid (both of _exponent's bounds grow with the range), so
        # the present exponent stays where it meets both for all the data (the common case: a few
        # us less a chunk and a merge); the index bound is checked first, as _level could overflow
        e = self.e
        if e is None or (math.frexp(max(abs(data_lo), abs(data_hi)))[1] - INDEX_BITS > e
                         or _level(data_hi, e) - _level(data_lo, e) + 1 > self.bins):
            e = self._exponent(data_lo, data_hi)
        start = _level(data_lo, e)
        if self.e != e or self.start != start:
            self._regrid(e, start)
        return math.ldexp(1.0, -e), start

    def add(self, counts: np.ndarray, underflow: int = 0, overflow: int = 0):
        """Counts binned on this histogram's grid (a fixed one's: a chunk's, or another part's)."""
        self.counts += counts
        self.underflow += underflow
        self.overflow += overflow

    def merge(self, other: "Histogram", data_lo: float, data_hi: float):
        if self.fixed is not None:
            self.add(other.counts, other.underflow, other.overflow)
            return
        if other.e is None:
            return
        self.prepare(data_lo, data_hi)
        if (other.e, other.start) == (self.e, self.start):
            self.counts += other.counts
            return
        theirs = Histogram(self.bins, None, self.dtype)
        theirs.counts, theirs.e, theirs.start = other.counts.copy(), other.e, other.start
        theirs._regrid(self.e, self.start)
        self.counts += theirs.counts

    def edges(self) -> np.ndarray:
        if self.fixed is not None:
            return self._edges.copy()
        if self.e is None:  # no finite data at all
            return np.linspace(-1.0, 1.0, self.bins + 1)
        with np.errstate(over="ignore"):  # the top edge may pass the largest float
            edges = np.ldexp(np.arange(self.start, self.start + self.bins + 1, dtype=np.float64), self.e)
        big = np.finfo(np.float64).max
        return np.clip(edges, -big, big)


def _n_outside(x: np.ndarray, lo: float, hi: float, saturation) -> int:
    """Values of x below saturation[0] or above saturation[1] (0 without ``saturation``); (lo, hi)
    bound x's finite values, which rules out most passes."""
    if saturation is None:
        return 0
    low, high = np.float64(saturation[0]), np.float64(saturation[1])  # float32 x compared in float64
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return int(np.count_nonzero((x < low) | (x > high)))
    return ((int(np.count_nonzero(x > high)) if hi > high else 0)
            + (int(np.count_nonzero(x < low)) if lo < low else 0))


class Chunk(NamedTuple):
    """What ``TensorStats.update`` saw of a chunk."""
    lo: float          # extremes of its finite values (NaN: none)
    hi: float
    n_outside: int     # values below or above the saturation thresholds given (else 0)
    counted: bool      # its histogram counted (else the caller counts it)


class TensorStats:
    """Statistics of one tensor (``pre``, ``post``, ``grad_pre`` or ``grad_weight``) of one layer.

    ``units=True`` also tracks the per-sample spread across units (symmetry) and the units that are
    zero for every sample (dead units); it needs 2-D chunks of shape (samples, units).
    """

    def __init__(self, bins: int = 50, fixed_range=None, dtype=np.float64, units: bool = False):
        self.count = 0          # all elements, finite or not
        self.n = 0              # finite elements
        self.mean = 0.0
        self.m2 = 0.0
        self.m2_exp = 0         # M2 = m2 * 4**m2_exp: values beyond ~1e154 would overflow M2 itself
        self.min = math.inf
        self.max = -math.inf
        self.n_zero = 0
        self.n_saturated = 0
        self.units = units
        self.unit_std_sum = 0.0  # sum over samples of the std across units
        self.asymmetric = 0      # samples whose units do not all have the same value
        self.samples = 0
        self.alive: np.ndarray | None = None  # per unit: non-zero for some sample
        self.hist = Histogram(bins, fixed_range, dtype)
        self.sym_tol = SYMMETRY_TOL.get(np.dtype(dtype), 1e-6)

    def update(self, x: np.ndarray, n_saturated: int = 0, work: Scratch | None = None,
               saturation: tuple[float, float] | None = None, histogram: bool = True) -> Chunk:
        """Fold in a chunk (float64 or float32; 2-D (samples, units) when units are tracked).
        Returns the chunk's (min, max) over finite values (NaN when there is none), when
        ``saturation=(low, high)`` is given the number of its values below low or above high (else 0),
        and whether its histogram was counted: with ``histogram=False`` a chunk of finite values read
        by the kernels is not, and the caller adds its counts (``hist.add``) on the grid
        ``hist.grid(self.min, self.max)`` gives.
        Finite values beyond ~1e154 overflow the sum of squares: their moments are then computed and kept
        scaled by a power of two, so the std stays finite up to the float limit."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self._update(x, n_saturated, work, saturation, histogram)

    def _update(self, x: np.ndarray, n_saturated: int, work: Scratch | None, saturation,
                histogram: bool) -> Chunk:
        self.count += x.size
        self.n_saturated += n_saturated
        if x.size == 0:
            if self.units:
                self._update_units_general(x)
            return Chunk(math.nan, math.nan, 0, True)
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        if kernels.usable(x):
            low, high = saturation or (-math.inf, math.inf)
            scan = kernels.scan(x, low, high, (self.sym_tol, CANCEL_RATIO) if self.units else None)
            if not scan.n_nonfinite:
                lo, hi = self._update_finite(x, scan.lo, scan.hi, work, scan, histogram)
                return Chunk(lo, hi, scan.n_above + scan.n_below, histogram)
            # the scan counted inf, not NaN, as NumPy does
            return Chunk(*self._update_general(x), scan.n_above + scan.n_below, True)
        lo, hi = float(x.min()), float(x.max())
        if math.isfinite(lo) and math.isfinite(hi):
            return Chunk(*self._update_finite(x, lo, hi, work), _n_outside(x, lo, hi, saturation), True)
        return Chunk(*self._update_general(x), _n_outside(x, -math.inf, math.inf, saturation), True)

    def _update_finite(self, x: np.ndarray, lo: float, hi: float, work: Scratch | None,
                       scan: "kernels.Scan | None" = None, histogram: bool = True) -> tuple[float, float]:
        """A chunk of finite values, contiguous; the kernels' scan of it when given, else NumPy's
        passes; its histogram unless ``histogram`` is False."""
        work = work or Scratch()
        x64 = x
        if x.dtype != np.float64 and scan is None:  # float32: sums, squares, bins in float64
            x64 = work.get("x64", x.shape, np.float64)
            np.copyto(x64, x)
        n = x.size
        if self.units:
            total, m2 = self._update_units(x64, work, scan)
        else:
            flat = x64.reshape(-1)
            if scan is None:
                total = float(np.sum(flat))
                m2 = float(np.einsum("i,i->", flat, flat)) - total * (total / n)
            else:
                total = scan.total
                m2 = scan.sum_sq - total * (total / n)
            if not m2 * CANCEL_RATIO > total * (total / n):  # mean^2/var large (or var 0): centre
                d = work.get("centred", flat.shape, np.float64)
                np.subtract(flat, total / n, out=d, dtype=np.float64)  # flat may be float32
                m2 = float(np.einsum("i,i->", d, d))
        mean, k = total / n, 0
        if not (math.isfinite(mean) and math.isfinite(m2)):  # sums overflowed: values beyond ~1e154
            mean, m2, k = _huge_moments(x64)
        self._merge_moments(n, mean, m2, k)
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        if scan is not None:
            self.n_zero += scan.n_zero
        elif lo <= 0.0 <= hi:
            zero = work.get("zero", x.shape, np.bool_)
            self.n_zero += int(np.count_nonzero(np.equal(x, 0, out=zero)))
        if histogram:
            self.hist.update(x64, lo, hi, self.min, self.max, work)
        return lo, hi

    def _update_general(self, x: np.ndarray):
        """Any chunk, non-finite values included (the straightforward passes)."""
        if self.units:
            self._update_units_general(x)
        finite = x[np.isfinite(x)]  # x has a non-finite value: its min or max is not finite
        if finite.size == 0:
            return math.nan, math.nan
        lo, hi = float(finite.min()), float(finite.max())
        n = finite.size
        total = np.sum(finite, dtype=np.float64)
        mean, k, m2 = float(total) / n, 0, math.inf
        if math.isfinite(mean):
            d = np.subtract(finite.reshape(-1), mean, dtype=np.float64)
            m2 = float(np.dot(d, d))
        if not (math.isfinite(mean) and math.isfinite(m2)):  # sums overflowed: values beyond ~1e154
            mean, m2, k = _huge_moments(finite.astype(np.float64, copy=False))
        self._merge_moments(n, mean, m2, k)
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.n_zero += n - int(np.count_nonzero(finite))
        self.hist.update(finite, lo, hi, self.min, self.max)
        return lo, hi

    def _update_units(self, x: np.ndarray, work: Scratch,
                      scan: "kernels.Scan | None" = None) -> tuple[float, float]:
        """Units statistics of a finite chunk (samples, units), from per-sample sums and sums of
        squares (the kernels' ``scan`` when given, which also measured the spread when every row is
        clear; else x is float64 and they are computed here); returns the chunk's (sum, M2), which
        those give too."""
        rows, units = x.shape
        n = x.size
        if scan is not None:
            s, q, total = scan.row_sums, scan.row_sq, scan.total
            m2 = scan.sum_sq - total * (total / n)
            if scan.clear == rows:  # the units of every sample differ: the kernel summed their stds
                self._add_samples(x, rows, scan.spread)
                return total, m2
        else:
            s = np.add.reduce(x, axis=1)                     # (rows,)
            q = np.einsum("ij,ij->i", x, x)                  # (rows,)
            total = float(np.sum(s))
            m2 = float(np.sum(q)) - total * (total / n)
        shift = 0.0
        if not m2 * CANCEL_RATIO > total * (total / n):      # centre on the chunk mean first
            shift = total / n
            d = work.get("centred", x.shape, np.float64)
            np.subtract(x, shift, out=d, dtype=np.float64)
            s = np.add.reduce(d, axis=1)
            q = np.einsum("ij,ij->i", d, d)
            m2 = float(np.sum(q))
        mean = s / units                                     # of the (shifted) rows
        var = q / units - mean * mean
        # rows where mean^2/var is small have a precise var; where, besides, std > SYMMETRY_TOL *
        # |mean| the units certainly differ (range >= 2 std > SYMMETRY_TOL * max|value|). The other
        # rows (symmetric nets) get the exact passes.
        clear = np.isfinite(var) & (var * CANCEL_RATIO > mean * mean)  # inf: sums of squares overflowed
        mean += shift
        clear &= var > (self.sym_tol * mean) ** 2
        spread = np.sqrt(np.maximum(var, 0.0, out=var), out=var)
        asymmetric = rows
        if not clear.all():
            unclear = np.flatnonzero(~clear)
            xs = x[unclear]
            spread[unclear] = np.std(xs, axis=1, dtype=np.float64)
            asymmetric += self._n_asymmetric(xs) - unclear.size
        self._add_samples(x, asymmetric, float(np.sum(spread)))
        return total, m2

    def _add_samples(self, x: np.ndarray, asymmetric: int, spread_sum: float):
        """Fold in a finite chunk's samples: how many have units that differ, the sum of their
        stds across units, and the units they show alive."""
        self.asymmetric += asymmetric
        self.unit_std_sum += spread_sum
        self.samples += x.shape[0]
        self._update_alive(x)

    def _update_alive(self, x: np.ndarray):
        """Units non-zero for some sample: the first rows settle most units (a ReLU unit is zero for
        about half the samples: after 16 rows one in 65,000 is left, unless the samples are alike,
        as deep in a ReLU net), then only the units not yet seen alive are looked at (a gather of
        every unit still dead after row 0 took 0.1 ms a layer)."""
        if self.alive is None:
            self.alive = x[0] != 0
        if self.alive.all():
            return
        if kernels.usable(x) and x.ndim == 2 and self.alive.flags.c_contiguous:
            kernels.alive(x, self.alive)
            return
        self.alive |= np.any(x[:16] != 0, axis=0)
        if self.alive.all():
            return
        dead = np.flatnonzero(~self.alive)
        self.alive[dead] = np.any(x[:, dead] != 0, axis=0)

    def _update_units_general(self, x: np.ndarray):
        with np.errstate(all="ignore"):
            spread = np.std(x, axis=1, dtype=np.float64)
            self.asymmetric += self._n_asymmetric(x)
        self.unit_std_sum += float(np.sum(spread[np.isfinite(spread)]))
        self.samples += x.shape[0]
        if x.shape[0]:
            self._update_alive(x)

    def _n_asymmetric(self, x: np.ndarray) -> int:
        """Samples (rows) whose units differ by more than rounding; a row with a non-finite value
        differs unless all its values are the same infinity (a NaN, or 0 beside inf, is no symmetry)."""
        with np.errstate(invalid="ignore"):
            hi, lo = x.max(axis=1, initial=-math.inf), x.min(axis=1, initial=math.inf)  # NaN: NaN
            finite = np.isfinite(hi) & np.isfinite(lo)
            differ = np.where(finite, hi - lo > self.sym_tol * np.maximum(abs(hi), abs(lo)), ~(hi == lo))
        return int(np.count_nonzero(differ))

    def _merge_moments(self, n_b: int, mean_b: float, m2_b: float, k_b: int = 0):
        """Chan et al.'s merge; M2 is kept as ``m2 * 4**m2_exp`` so that it cannot overflow."""
        n_a, k_a = self.n, self.m2_exp
        if n_a == 0:  # nothing to merge with (and inf * 0 would make the merge below NaN)
            self.n, self.mean, self.m2, self.m2_exp = n_b, mean_b, m2_b, k_b
            return
        n = n_a + n_b
        delta = mean_b - self.mean
        step = delta * n_b / n
        if k_a == k_b == 0 and math.isfinite(step):
            cross = delta * delta * n_a * n_b / n
            if math.isfinite(self.m2 + m2_b + cross):
                self.mean += step
                self.m2 += m2_b + cross
                self.n = n
                return
        # scaled: everything in units of 2**k (exact power-of-two scaling)
        k = max(k_a, k_b, math.frexp(max(abs(self.mean), abs(mean_b)))[1])
        d = math.ldexp(mean_b, -k) - math.ldexp(self.mean, -k)
        self.m2 = (math.ldexp(self.m2, -2 * (k - k_a)) + math.ldexp(m2_b, -2 * (k - k_b))
                   + d * d * n_a * n_b / n)
        self.m2_exp = k
        self.mean = math.ldexp(math.ldexp(self.mean, -k) * (n_a / n) + math.ldexp(mean_b, -k) * (n_b / n), k)
        self.n = n

    def merge(self, other: "TensorStats") -> "TensorStats":
        """Fold ``other`` (statistics of further data of the same tensor) into this one."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self._merge(other)

    def _merge(self, other: "TensorStats") -> "TensorStats":
        self.count += other.count
        self.n_saturated += other.n_saturated
        self.n_zero += other.n_zero
        if self.units:
            self.unit_std_sum += other.unit_std_sum
            self.asymmetric += other.asymmetric
            self.samples += other.samples
            if other.alive is not None:
                self.alive = other.alive.copy() if self.alive is None else (self.alive | other.alive)
        if other.n:
            self._merge_moments(other.n, other.mean, other.m2, other.m2_exp)
            self.min, self.max = min(self.min, other.min), max(self.max, other.max)
            self.hist.merge(other.hist, self.min, self.max)
        return self

    def _std(self) -> float:
        try:
            return math.ldexp(math.sqrt(self.m2 / self.n), self.m2_exp)
        except OverflowError:  # std <= (max - min) / 2 stays below the float limit; kept for safety
            return math.inf

    def summary(self, saturation: bool = False) -> dict:
        """The numbers, as plain floats (NaN where undefined, e.g. no finite value)."""
        nan = math.nan
        out = {
            "count": self.count,
            "mean": self.mean if self.n else nan,
            "std": self._std() if self.n else nan,
            "min": self.min if self.n else nan,
            "max": self.max if self.n else nan,
            "frac_zero": self.n_zero / self.count if self.count else nan,
            "frac_nonfinite": (self.count - self.n) / self.count if self.count else nan,
            "hist_underflow": self.hist.underflow,
            "hist_overflow": self.hist.overflow,
        }
        if saturation:
            out["frac_saturated"] = self.n_saturated / self.count if self.count else nan
        if self.units:
            unit_std = self.unit_std_sum / self.samples if self.samples else nan
            out["unit_std"] = unit_std
            out["symmetric"] = bool(self.samples) and self.asymmetric == 0
            out["frac_dead_units"] = (float(np.mean(~self.alive)) if self.alive is not None else nan)
        return out


def describe(x: np.ndarray, bins: int = 50, fixed_range=None, units: bool = False) -> dict:
    """One-shot statistics of an array (a convenience for notebooks and tests)."""
    s = TensorStats(bins, fixed_range, x.dtype, units)
    s.update(x)
    return s.summary()
