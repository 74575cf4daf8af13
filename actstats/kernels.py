"""The compiled kernels (``_kernels.c``) through ctypes, or None where they were not built.

Each call does in one pass over a float64 or float32 array what stats.py's and activations.py's
NumPy code does in several: ``scan`` (extremes, per-row sums and sums of squares, zero, non-finite
and saturated counts), ``hist_adaptive`` and ``hist_fixed`` (histogram counts), ``tanh``,
``sigmoid``, ``relu``, ``layer`` (one of these and the histograms of its input and output in one
pass), ``alive`` (the units not zero for some sample) and ``backward`` (dL/dz from dL/da and the
post); ``normal_rows`` draws
NumPy's normal numbers, faster. ctypes releases the GIL during each
call, so the engine's two threads run them in parallel. ``ACTSTATS_KERNELS=0`` (or false, no, off)
in the environment turns them off (the NumPy code then runs).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import threading
from typing import NamedTuple

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
    lib.actstats_scan.argtypes = [_INT, _P, _I, _I, _D, _D, _INT, _D, _D, _P, _P]
    lib.actstats_scan.restype = None
    lib.actstats_hist_adaptive.argtypes = [_INT, _P, _I, _D, _D, _I, _P]
    lib.actstats_hist_adaptive.restype = _I
    lib.actstats_hist_fixed.argtypes = [_INT, _P, _I, _D, _D, _D, _D, _INT, _I, _P]
    lib.actstats_hist_fixed.restype = _I
    for name in ("actstats_tanh", "actstats_sigmoid", "actstats_relu"):
        getattr(lib, name).argtypes = [_INT, _P, _P, _I]
        getattr(lib, name).restype = None
    lib.actstats_layer.argtypes = [_INT, _INT, _P, _P, _I, _D, _D, _I, _INT, _D, _D, _D, _D, _INT, _D, _I, _P, _P]
    lib.actstats_layer.restype = _I
    lib.actstats_alive.argtypes = [_INT, _P, _I, _I, _P]
    lib.actstats_alive.restype = _I
    lib.actstats_backward.argtypes = [_INT, _INT, _P, _P, _P, _I]
    lib.actstats_backward.restype = _D
    lib.actstats_normal_init.argtypes = [_P]
    lib.actstats_normal_init.restype = _INT
    lib.actstats_normal_rows.argtypes = [_P, _I, _I, _I, _INT, _P]
    lib.actstats_normal_rows.restype = None


LIB = _load()


def usable(x: np.ndarray, out: np.ndarray | None = None) -> bool:
    """Whether the kernels can read ``x`` (and write ``out``): built, and C-contiguous float64 or
    float32 arrays (``out`` of x's dtype and shape)."""
    return (LIB is not None and x.dtype in (np.float64, np.float32) and x.flags.c_contiguous
            and (out is None or (out.dtype == x.dtype and out.shape == x.shape and out.flags.c_contiguous)))


def _f32(x: np.ndarray) -> int:
    return int(x.dtype == np.float32)


def _ptr(x: np.ndarray) -> int:
    """Address of a contiguous array's first element: through the buffer protocol (0.5 us) where
    the array is writable, else ``x.ctypes.data`` (1.5 us); the engine asks for a dozen a layer."""
    try:
        return ctypes.addressof(_BYTE.from_buffer(x))
    except (TypeError, ValueError, BufferError):  # read-only, empty, or not contiguous
        return x.ctypes.data


_BYTE = ctypes.c_char


class Scan(NamedTuple):
    """What ``scan`` measured of an array seen as (rows, last axis)."""
    lo: float              # extremes over all values (inf included, NaN ignored)
    hi: float
    total: float           # sum and sum of squares (in double), meaningful when n_nonfinite == 0
    sum_sq: float
    n_nonfinite: int
    n_zero: int
    n_above: int           # above sat_high, below sat_low
    n_below: int
    row_sums: np.ndarray   # (rows,), and the rows' sums of squares
    row_sq: np.ndarray
    clear: int             # units: rows whose spread is precise and above sym_tol * |row mean| ...
    spread: float          # ... and the sum of their stds; -1 and 0.0 when not measured


def scan(x: np.ndarray, sat_low: float = -np.inf, sat_high: float = np.inf, units: tuple | None = None) -> Scan:
    """One pass over ``x``; with ``units=(sym_tol, cancel)`` and finite x, the spread across units
    of each row too (not measured when the whole array's mean^2/var is not below cancel: its rows
    are centred first, by the caller)."""
    cols = x.shape[-1] if x.ndim else 1
    rows = x.size // cols if cols else 0
    buf = np.empty(2 * rows + 10)  # row sums, row sums of squares, then the results
    sym_tol, cancel = units or (0.0, 0.0)
    LIB.actstats_scan(_f32(x), _ptr(x), rows, cols, sat_low, sat_high, units is not None, sym_tol, cancel,
                      _ptr(buf), _ptr(buf[2 * rows:]))
    lo, hi, total, sum_sq, spread, n_bad, n_zero, above, below, clear = buf[2 * rows:].tolist()
    return Scan(lo, hi, total, sum_sq, int(n_bad), int(n_zero), int(above), int(below), buf[:rows],
                buf[rows: 2 * rows], int(clear), spread)


def hist_adaptive(x: np.ndarray, scale: float, start: int, bins: int) -> np.ndarray:
    """Counts of floor(x * scale) - start (scale a power of two) over ``bins`` bins; finite x,
    all inside the grid."""
    counts = np.zeros(bins + 1, np.int64)  # the last slot: values outside the grid
    outside = LIB.actstats_hist_adaptive(_f32(x), _ptr(x), x.size, scale, float(start), bins, _ptr(counts))
    if outside:  # a caller's bug (or no memory), never silently miscounted
        raise AssertionError(f"hist_adaptive: {outside} values outside the grid")
    return counts[:bins]


def hist_fixed(x: np.ndarray, lo: float, hi: float, scale: float, shift, bins: int):
    """(counts, below lo, above hi) on the fixed grid of stats._fixed_level; finite x."""
    counts = np.zeros(bins + 2, np.int64)
    if LIB.actstats_hist_fixed(_f32(x), _ptr(x), x.size, lo, hi, scale, 0.0 if shift is None else shift,
                               int(shift is not None), bins, _ptr(counts)):
        raise MemoryError("hist_fixed: no memory for the counts")
    return counts[:bins], int(counts[bins]), int(counts[bins + 1])


def _unary(fn, z: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    out = np.empty_like(z) if out is None else out
    fn(_f32(z), _ptr(z), _ptr(out), z.size)
    return out


def tanh(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """tanh (a few ulp; exactly +-1 beyond |z| = 20, NaN for NaN)."""
    return _unary(LIB.actstats_tanh, z, out)


def sigmoid(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """1 / (1 + e^-z) (a few ulp, subnormal results included; NaN for NaN)."""
    return _unary(LIB.actstats_sigmoid, z, out)


def relu(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """max(z, 0), as numpy.maximum(z, 0) (+0 for -0, NaN kept)."""
    return _unary(LIB.actstats_relu, z, out)


def alive(x: np.ndarray, alive: np.ndarray) -> int:
    """alive |= any(x != 0, axis=0) (NaN included, as NumPy says) for a 2-D x and a C-contiguous
    boolean ``alive``, in one pass that stops once every unit is alive; returns how many are not."""
    return LIB.actstats_alive(_f32(x), _ptr(x), x.shape[0], x.shape[1], _ptr(alive))


BACKWARD_KINDS = ("tanh", "sigmoid", "relu")
LAYER_SLOTS = 2**14  # layer's table of (pre bin, post bin) counts up to this size (bins up to 126)


def layer_usable(z: np.ndarray, bins: int) -> bool:
    """Whether ``layer`` takes z with histograms of ``bins`` bins: its table fits LAYER_SLOTS, and z
    has enough values for the table's set-up and sums (a few us) to pay."""
    slots = (bins + 1) * (bins + 2)
    return usable(z) and slots <= LAYER_SLOTS and z.size >= 4 * slots


def layer(kind: str, z: np.ndarray, out: np.ndarray, pre: tuple, post: tuple, bins: int):
    """out = phi(z) for phi of a kind in BACKWARD_KINDS (the values of ``tanh``, ``sigmoid``,
    ``relu``), and both histograms in the same pass, z finite: the pre's on its adaptive grid
    ``pre = (scale, start)`` and the post's on ``post = (lo, hi, scale, shift)`` (a fixed grid, shift
    None as in hist_fixed) or ``post = (scale, start)`` (adaptive), both of ``bins`` bins. Each value
    is counted once, in a table of (pre bin, post bin) pairs, whose row and column sums are the two
    histograms: returns (pre counts, post counts, post below lo, post above hi); (bins + 1) *
    (bins + 2) must not pass LAYER_SLOTS."""
    fixed = len(post) == 4
    pre_counts = np.zeros(bins + 1, np.int64)  # the last: outside the grid
    post_counts = np.zeros(bins + (2 if fixed else 1), np.int64)  # below and above / outside
    lo, hi, scale, shift = post if fixed else (0.0, 0.0, post[0], None)
    start = 0 if fixed else post[1]
    if LIB.actstats_layer(_f32(z), BACKWARD_KINDS.index(kind), _ptr(z), _ptr(out), z.size, pre[0],
                          float(pre[1]), bins, int(fixed), lo, hi, scale, 0.0 if shift is None else shift,
                          int(shift is not None), float(start), bins, _ptr(pre_counts), _ptr(post_counts)):
        raise MemoryError("layer: no memory for the counts")
    if pre_counts[bins] or (not fixed and post_counts[bins]):  # a caller's bug, never silently miscounted
        raise AssertionError(f"layer: {pre_counts[bins]} pre and {post_counts[bins]} post values outside the grid")
    if fixed:
        return pre_counts[:bins], post_counts[:bins], int(post_counts[bins]), int(post_counts[bins + 1])
    return pre_counts[:bins], post_counts[:bins], 0, 0


def backward(kind: str, d: np.ndarray, a: np.ndarray, out: np.ndarray) -> float:
    """out = d * phi'(a) for phi' of the post a (``kind`` in BACKWARD_KINDS; the values of
    activations.py's slope functions), and the sum of phi'(a) in float64; d, a, out alike."""
    return LIB.actstats_backward(_f32(a), BACKWARD_KINDS.index(kind), _ptr(d), _ptr(a), _ptr(out), a.size)


_NORMAL: list = []  # [True] once the kernel's normals were checked equal to NumPy's, [False] if not
_NORMAL_LOCK = threading.Lock()
CHECK_DRAWS = 20000  # ~300 of them leave the ziggurat's fast path (wedges and tail)


def _numpy_standard_normal():
    """The address of NumPy's C function random_standard_normal (its documented C API, exported by
    the module that defines Generator), or None."""
    try:
        return ctypes.cast(ctypes.CDLL(sys.modules[np.random.Generator.__module__].__file__)
                           .random_standard_normal, ctypes.c_void_p).value
    except (OSError, AttributeError, KeyError, TypeError):
        return None


def _normal_ready() -> bool:
    """Set the kernel's normals up from NumPy's function, once, and check them against NumPy's own
    draws, seeding included (the same bits, or they are not used)."""
    if not _NORMAL:
        with _NORMAL_LOCK:
            if not _NORMAL:
                fn = _numpy_standard_normal() if LIB is not None else None
                ok = fn is not None and LIB.actstats_normal_init(fn) > 0
                if ok:
                    key = (2, 0, 2**32 + 3)  # a spawn key with a two-word entry
                    entropy = seed_entropy(20241124, key)
                    ours = np.empty(CHECK_DRAWS)
                    LIB.actstats_normal_rows(_ptr(entropy), entropy.size, 100, ours.size, 0, _ptr(ours))
                    gen = np.random.Generator(np.random.SFC64(np.random.SeedSequence(20241124, spawn_key=key)))
                    theirs = gen.standard_normal(100 + CHECK_DRAWS)[100:]
                    ok = np.array_equal(ours.view(np.uint64), theirs.view(np.uint64))
                _NORMAL.append(ok)
    return _NORMAL[0]


def _words(n: int) -> list[int]:
    """A non-negative integer as SeedSequence takes it: 32-bit words, lowest first ([0] for 0)."""
    if n < 0:  # (SeedSequence refuses them too; here the loop below would not end)
        raise ValueError(f"expected a non-negative integer, got {n}")
    words = [n & 0xFFFFFFFF]
    while n >> 32:
        n >>= 32
        words.append(n & 0xFFFFFFFF)
    return words


def seed_entropy(seed: int, spawn_key: tuple) -> np.ndarray:
    """SeedSequence(seed, spawn_key=spawn_key)'s entropy as it assembles it: the seed's words padded
    with zeros to its pool of 4, then each spawn key entry's words (non-negative integers, a
    non-empty spawn key)."""
    run = _words(seed)
    return np.array(run + [0] * (4 - len(run)) + [w for k in spawn_key for w in _words(k)], np.uint32)


def normal_rows(entropy: np.ndarray, skip: int, out: np.ndarray) -> bool:
    """Draws ``skip`` to ``skip + out.size - 1`` of ``Generator(SFC64(SeedSequence(...)))
    .standard_normal`` into ``out`` (float64, or float32 rounded from them; C-contiguous), the same
    numbers bit for bit, ``entropy`` from seed_entropy: seeding and all in one call without the GIL,
    about 3x faster than NumPy (2.5 ns a value instead of 8.5 on the benchmark's machine). False,
    with nothing done, where this is not available (no kernels, or a NumPy whose normals differ)."""
    if not (usable(out) and _normal_ready()):
        return False
    LIB.actstats_normal_rows(_ptr(entropy), entropy.size, skip, out.size, _f32(out), _ptr(out))
    return True
