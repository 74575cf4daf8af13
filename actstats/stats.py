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
"""

from __future__ import annotations

import math

import numpy as np

E_FLOOR = {np.dtype(np.float64): -1000, np.dtype(np.float32): -100}  # 2**-e stays representable
INDEX_BITS = 50  # bin indices stay below 2**50: exact in float64 and in int64
SYMMETRY_TOL = 1e-6  # units equal up to rounding: relative spread across units below this


def _finite_part(x: np.ndarray) -> tuple[np.ndarray, int, float, float]:
    """(finite values, number of non-finite ones, min, max); min/max NaN when nothing is finite."""
    if x.size == 0:
        return x, 0, math.nan, math.nan
    lo, hi = x.min(), x.max()
    if np.isfinite(lo) and np.isfinite(hi):
        return x, 0, float(lo), float(hi)
    keep = np.isfinite(x)
    finite = x[keep]
    if finite.size == 0:
        return finite, x.size, math.nan, math.nan
    return finite, x.size - finite.size, float(finite.min()), float(finite.max())


class Histogram:
    """Counts over ``bins`` bins; fixed edges when ``fixed=(lo, hi)``, else the adaptive 2**e grid."""

    def __init__(self, bins: int, fixed: tuple[float, float] | None = None, dtype=np.float64):
        self.bins = bins
        self.fixed = fixed
        self.dtype = np.dtype(dtype)
        self.counts = np.zeros(bins, dtype=np.int64)
        self.underflow = 0
        self.overflow = 0
        self.e: int | None = None     # adaptive grid: width 2**e ...
        self.start = 0                # ... first bin covers [start, start+1) * 2**e

    # -- adaptive grid ----------------------------------------------------------------------------
    def _exponent(self, lo: float, hi: float) -> int:
        """Smallest e for which ``bins`` aligned bins of width 2**e cover [lo, hi]."""
        big = max(abs(lo), abs(hi))
        e_min = E_FLOOR[self.dtype] if big == 0 else max(math.frexp(big)[1] - INDEX_BITS,
                                                         E_FLOOR[self.dtype])
        span = hi / 2 - lo / 2  # halves: no overflow near the float limit
        e = e_min if span <= 0 else max(e_min, math.frexp(span)[1] - int(math.log2(self.bins)) - 1)
        while math.floor(math.ldexp(hi, -e)) - math.floor(math.ldexp(lo, -e)) + 1 > self.bins:
            e += 1
        return e

    def _regrid(self, e: int, start: int):
        """Move the counts to the coarser grid (e, start): whole bins merge, nothing is split."""
        if self.e is None:
            self.e, self.start = e, start
            return
        full = np.flatnonzero(self.counts)  # empty bins may lie outside the new range
        idx = ((full + self.start) >> (e - self.e)) - start
        counts = np.zeros(self.bins, dtype=np.int64)
        np.add.at(counts, idx, self.counts[full])
        self.counts = counts
        self.e, self.start = e, start

    def update(self, x: np.ndarray, lo: float, hi: float, data_lo: float, data_hi: float):
        """Count finite ``x``; (lo, hi) its own extremes, (data_lo, data_hi) those of all data so far."""
        if x.size == 0:
            return
        if self.fixed is not None:
            self._count_fixed(x)
            return
        e = self._exponent(data_lo, data_hi)
        start = math.floor(math.ldexp(data_lo, -e))
        if self.e != e or self.start != start:
            self._regrid(e, start)
        # x * 2**-e is exact (a power-of-two scaling), and so is its floor
        scaled = np.multiply(x, math.ldexp(1.0, -e), dtype=x.dtype)
        idx = np.floor(scaled, out=scaled).astype(np.int64)
        idx -= start
        self.counts += np.bincount(idx.reshape(-1), minlength=self.bins)[: self.bins]

    def _count_fixed(self, x: np.ndarray):
        lo, hi = self.fixed
        f = (x - lo) * (self.bins / (hi - lo))
        idx = np.floor(f).astype(np.int64).reshape(-1)
        under = idx < 0
        over = idx >= self.bins
        # a value exactly at the upper edge belongs to the last bin, as in numpy.histogram
        at_top = over & (x.reshape(-1) == hi)
        self.underflow += int(np.count_nonzero(under))
        self.overflow += int(np.count_nonzero(over & ~at_top))
        np.clip(idx, 0, self.bins - 1, out=idx)
        keep = ~(under | (over & ~at_top))
        self.counts += np.bincount(idx[keep] if not keep.all() else idx, minlength=self.bins)

    def merge(self, other: "Histogram", data_lo: float, data_hi: float):
        if self.fixed is not None:
            self.counts += other.counts
            self.underflow += other.underflow
            self.overflow += other.overflow
            return
        if other.e is None:
            return
        e = self._exponent(data_lo, data_hi)
        start = math.floor(math.ldexp(data_lo, -e))
        self._regrid(e, start)
        theirs = Histogram(self.bins, None, self.dtype)
        theirs.counts, theirs.e, theirs.start = other.counts.copy(), other.e, other.start
        theirs._regrid(e, start)
        self.counts += theirs.counts

    def edges(self) -> np.ndarray:
        if self.fixed is not None:
            return np.linspace(self.fixed[0], self.fixed[1], self.bins + 1)
        if self.e is None:  # no finite data at all
            return np.linspace(-1.0, 1.0, self.bins + 1)
        with np.errstate(over="ignore"):  # the top edge may pass the largest float
            edges = np.ldexp(np.arange(self.start, self.start + self.bins + 1, dtype=np.float64), self.e)
        big = np.finfo(np.float64).max
        return np.clip(edges, -big, big)


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

    def update(self, x: np.ndarray, n_saturated: int = 0):
        self.count += x.size
        self.n_saturated += n_saturated
        if self.units:
            self._update_units(x)
        finite, _, lo, hi = _finite_part(x)
        if finite.size == 0:
            return
        n = finite.size
        total = np.sum(finite, dtype=np.float64)
        mean = float(total) / n
        d = np.subtract(finite.reshape(-1), mean, dtype=np.float64)
        m2 = float(np.dot(d, d))
        self._merge_moments(n, mean, m2)
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.n_zero += n - int(np.count_nonzero(finite))
        self.hist.update(finite, lo, hi, self.min, self.max)

    def _update_units(self, x: np.ndarray):
        with np.errstate(all="ignore"):
            spread = np.std(x, axis=1, dtype=np.float64)
            hi, lo = x.max(axis=1), x.min(axis=1)
            # a sample breaks the symmetry when its units differ by more than rounding
            self.asymmetric += int(np.count_nonzero(hi - lo > SYMMETRY_TOL * np.maximum(abs(hi), abs(lo))))
        self.unit_std_sum += float(np.sum(spread[np.isfinite(spread)]))
        self.samples += x.shape[0]
        alive = np.any(x != 0, axis=0)
        self.alive = alive if self.alive is None else (self.alive | alive)

    def _merge_moments(self, n_b: int, mean_b: float, m2_b: float):
        n_a = self.n
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * n_a * n_b / n
        self.n = n

    def merge(self, other: "TensorStats") -> "TensorStats":
        """Fold ``other`` (statistics of further data of the same tensor) into this one."""
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
            self._merge_moments(other.n, other.mean, other.m2)
            self.min, self.max = min(self.min, other.min), max(self.max, other.max)
            self.hist.merge(other.hist, self.min, self.max)
        return self

    def summary(self, saturation: bool = False) -> dict:
        """The numbers, as plain floats (NaN where undefined, e.g. no finite value)."""
        nan = math.nan
        out = {
            "count": self.count,
            "mean": self.mean if self.n else nan,
            "std": math.sqrt(self.m2 / self.n) if self.n else nan,
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
