"""The compiled kernels (``_kernels.c``) through ctypes, or None where they were not built.

Each call does in one pass over a float64 or float32 array what stats.py's and activations.py's
NumPy code does in several: ``scan`` (extremes, per-row sums and sums of squares, zero, non-finite
and saturated counts), ``hist_adaptive`` and ``hist_fixed`` (histogram counts), ``tanh``,
``sigmoid`` and ``backward`` (dL/dz from dL/da and the post). ctypes releases the GIL during each
call, so the engine's two threads run them in parallel. ``ACTSTATS_KERNELS=0`` (or false, no, off)
in the environment turns them off (the NumPy code then runs).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os

import numpy as np

_P, _I, _D, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int


def _load():
    if os.environ.get("ACTSTATS_KERNELS", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    spec = importlib.util.find_spec("actstats._kernels")
    if spec is None or not spec.origin:
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
        _declare(lib)
    except (OSError, AttributeError):  # unloadable, or a stale build without these functions
        return None
    return lib


def _declare(lib):
    lib.actstats_scan.argtypes = [_INT, _P, _I, _I, _D, _D, _P, _P, _P, _P]
    lib.actstats_scan.restype = None
    lib.actstats_hist_adaptive.argtypes = [_INT, _P, _I, _D, _D, _I, _P]
    lib.actstats_hist_adaptive.restype = _I
    lib.actstats_hist_fixed.argtypes = [_INT, _P, _I, _D, _D, _D, _D, _INT, _I, _P]
    lib.actstats_hist_fixed.restype = _I
    for name in ("actstats_tanh", "actstats_sigmoid"):
        getattr(lib, name).argtypes = [_INT, _P, _P, _I]
        getattr(lib, name).restype = None
    lib.actstats_backward.argtypes = [_INT, _INT, _P, _P, _P, _I]
    lib.actstats_backward.restype = _D


LIB = _load()


def usable(x: np.ndarray, out: np.ndarray | None = None) -> bool:
    """Whether the kernels can read ``x`` (and write ``out``): built, and C-contiguous float64 or
    float32 arrays (``out`` of x's dtype and shape)."""
    return (LIB is not None and x.dtype in (np.float64, np.float32) and x.flags.c_contiguous
            and (out is None or (out.dtype == x.dtype and out.shape == x.shape and out.flags.c_contiguous)))


def _f32(x: np.ndarray) -> int:
    return int(x.dtype == np.float32)


def scan(x: np.ndarray, sat_low: float = -np.inf, sat_high: float = np.inf):
    """(lo, hi, row_sums, row_sums_of_squares, n_nonfinite, n_zero, n_above, n_below) of ``x`` seen
    as (rows, last axis); lo, hi over all values (inf included, NaN ignored), the sums meaningful
    only when n_nonfinite == 0."""
    cols = x.shape[-1] if x.ndim else 1
    rows = x.size // cols if cols else 0
    row_s, row_q = np.empty(rows), np.empty(rows)
    ext, counts = np.empty(2), np.zeros(4, np.int64)
    LIB.actstats_scan(_f32(x), x.ctypes.data, rows, cols, sat_low, sat_high, row_s.ctypes.data,
                      row_q.ctypes.data, ext.ctypes.data, counts.ctypes.data)
    return (float(ext[0]), float(ext[1]), row_s, row_q, *(int(c) for c in counts))


def hist_adaptive(x: np.ndarray, scale: float, start: int, bins: int) -> np.ndarray:
    """Counts of floor(x * scale) - start (scale a power of two) over ``bins`` bins; finite x,
    all inside the grid."""
    counts = np.zeros(bins + 1, np.int64)  # the last slot: values outside the grid
    outside = LIB.actstats_hist_adaptive(_f32(x), x.ctypes.data, x.size, scale, float(start), bins,
                                         counts.ctypes.data)
    if outside:  # a caller's bug (or no memory), never silently miscounted
        raise AssertionError(f"hist_adaptive: {outside} values outside the grid")
    return counts[:bins]


def hist_fixed(x: np.ndarray, lo: float, hi: float, scale: float, shift, bins: int):
    """(counts, below lo, above hi) on the fixed grid of stats._fixed_level; finite x."""
    counts = np.zeros(bins + 2, np.int64)
    if LIB.actstats_hist_fixed(_f32(x), x.ctypes.data, x.size, lo, hi, scale,
                               0.0 if shift is None else shift, int(shift is not None), bins,
                               counts.ctypes.data):
        raise MemoryError("hist_fixed: no memory for the counts")
    return counts[:bins], int(counts[bins]), int(counts[bins + 1])


def _unary(fn, z: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    out = np.empty_like(z) if out is None else out
    fn(_f32(z), z.ctypes.data, out.ctypes.data, z.size)
    return out


def tanh(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """tanh (a few ulp; exactly +-1 beyond |z| = 20, NaN for NaN)."""
    return _unary(LIB.actstats_tanh, z, out)


def sigmoid(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """1 / (1 + e^-z) (a few ulp, subnormal results included; NaN for NaN)."""
    return _unary(LIB.actstats_sigmoid, z, out)


BACKWARD_KINDS = ("tanh", "sigmoid", "relu")


def backward(kind: str, d: np.ndarray, a: np.ndarray, out: np.ndarray) -> float:
    """out = d * phi'(a) for phi' of the post a (``kind`` in BACKWARD_KINDS; the values of
    activations.py's slope functions), and the sum of phi'(a) in float64; d, a, out alike."""
    return LIB.actstats_backward(_f32(a), BACKWARD_KINDS.index(kind), d.ctypes.data, a.ctypes.data,
                                 out.ctypes.data, a.size)
