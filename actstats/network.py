"""The MLP: weights from independent seeded streams, and chunked forward/backward passes.

Layer l (1..L) computes ``pre = a[l-1] @ W[l] + b[l]`` (W of shape (fan_in, fan_out)) and
``post = phi(pre)``. The backward pass starts from the random-projection loss ``L = sum(a_L * g)``,
``g ~ N(0, 1)``, so every layer's gradients are real back-propagated gradients:
``grad_pre = dL/da * phi'(pre)``, ``grad_weight = a[l-1].T @ grad_pre``, ``dL/da[l-1] = grad_pre @ W.T``.

Randomness: ``SeedSequence(seed, spawn_key=(stream, l))`` gives each layer's weights, each layer's
biases, the input and the projection g their own stream, so changing the batch size, the depth or
the chunk size does not change the weights. The input and g are drawn in blocks of rows, each block
from its own stream (``spawn_key=(stream, 0, block)``), so each thread draws its own rows and every
chunking and batch size sees the same samples (NumPy's SFC64 for these, PCG64 for the rest).

The batch is processed in chunks of rows; statistics merge across chunks exactly (see stats.py), so
peak memory is bounded by the chunk, not the batch.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import numpy as np

from . import activations, inits, kernels
from .config import RunConfig
from .errors import ConfigError
from .stats import Chunk, Scratch, TensorStats

WEIGHTS, BIASES, INPUT, PROJECTION = range(4)  # seed streams
CHUNK_BUDGET = 256 * 2**20  # bytes of per-chunk activations when the chunk size is automatic
PARTS = 2            # a chunk's rows split in two halves, one per thread (and core) ...
MIN_PART_ROWS = 64   # ... when each half gets at least this many rows
BLOCK_VALUES = 2**15  # the input and the loss projection are drawn in blocks of about this many values
POOL_BYTES = 64 * 2**20  # a thread's work arrays up to this size are kept for the next run in the process


def rng(seed: int, stream: int, layer: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, layer)))


@dataclass
class Network:
    dims: tuple[int, ...]                 # (input_dim, width_1, ..., width_L)
    weights: list[np.ndarray]             # W[l-1]: (dims[l-1], dims[l])
    biases: list[np.ndarray]              # b[l-1]: (dims[l],)
    act: activations.Activation

    @classmethod
    def build(cls, config: RunConfig) -> "Network":
        dtype = np.dtype(config.dtype)
        w_init = inits.resolve(config.init)
        b_init = inits.resolve(config.bias_init, "bias init")
        dims = config.dims
        weights, biases = [], []
        for l in range(1, len(dims)):
            fan_in, fan_out = dims[l - 1], dims[l]
            weights.append(w_init.sample((fan_in, fan_out), rng(config.seed, WEIGHTS, l),
                                         fan_in, fan_out).astype(dtype))
            biases.append(b_init.sample((fan_out,), rng(config.seed, BIASES, l),
                                        fan_in, fan_out).astype(dtype))
        return cls(dims, weights, biases, activations.get(config.act))


def make_input(kind: str, gen: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    """Input rows drawn from ``gen`` (float64): N(0,1), U(-1,1), or exactly half ones."""
    if kind == "normal":
        return gen.standard_normal((rows, dim))
    if kind == "uniform":
        return gen.uniform(-1.0, 1.0, (rows, dim))
    u = gen.random((rows, dim))  # "half": a random half of each row's units is 1, the rest 0
    ones = np.argpartition(u, dim // 2 - 1, axis=1)[:, : dim // 2] if dim > 1 else np.zeros((rows, 0), int)
    x = np.zeros((rows, dim))
    np.put_along_axis(x, ones, 1.0, axis=1)
    return x


class Samples:
    """Rows of the input (or of the loss projection g), drawn block by block: block k holds rows
    k*B .. k*B+B-1 (B = ``rows_per_block(dim)``) and comes from its own stream, so a thread draws
    any rows it needs without the others, and a sample is the same whatever the chunking, the batch
    size or the thread that draws it. Drawn by NumPy, the last block is kept for the next request. The bit
    generator is NumPy's SFC64 (statistically as sound as the default PCG64, and 1.2 ms faster
    for the 500,000 normal values of the default run's input, a quarter of a float32 layer). Normal
    values are drawn by the kernels where they are built, straight into the rows asked for: NumPy's
    numbers, bit for bit, the block's seeding included, in a third of the time (kernels.normal_rows)."""

    def __init__(self, config: RunConfig, stream: int, dim: int):
        self.seed, self.stream, self.dim, self.batch = config.seed, stream, dim, config.batch
        self.kind = config.input if stream == INPUT else "normal"
        self.block = rows_per_block(dim)
        self._k, self._rows = -1, None

    def _length(self, k: int) -> int:
        """Rows in block k: the last one is shorter (a block's first rows do not depend on its length)."""
        return min(self.block, self.batch - k * self.block)

    def _get(self, k: int) -> np.ndarray:
        if k != self._k:
            seq = np.random.SeedSequence(self.seed, spawn_key=(self.stream, 0, k))
            gen = np.random.Generator(np.random.SFC64(seq))  # a fifth faster here than PCG64 at normals
            self._k, self._rows = k, make_input(self.kind, gen, self._length(k), self.dim)
        return self._rows

    def draw(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Rows [start, stop) into ``out`` (stop - start, dim), cast to out's dtype."""
        r = start
        while r < stop:
            k = r // self.block
            first = k * self.block
            take = min(stop, first + self._length(k)) - r
            rows = out[r - start: r - start + take]
            if not (self.kind == "normal" and kernels.normal_rows(
                    kernels.seed_entropy(self.seed, (self.stream, 0, k)), (r - first) * self.dim, rows)):
                rows[...] = self._get(k)[r - first: r - first + take]
            r += take
        return out


def rows_per_block(dim: int) -> int:
    return max(1, BLOCK_VALUES // dim)


def input_rows(config: RunConfig, rows: int, dtype=np.float64) -> np.ndarray:
    """The run's first ``rows`` input samples (rows, input_dim), as the engine draws them."""
    return Samples(config, INPUT, config.dims[0]).draw(0, rows, np.empty((rows, config.dims[0]), dtype))


def per_sample_bytes(config: RunConfig) -> int:
    """Bytes one sample needs during a pass: every layer's post kept for the backward pass, and its
    phi' unless phi' is computed from the post (two posts in turn without a backward pass), the
    layer's pre, the work arrays of the statistics, of phi and of the backward pass, and the input
    (and loss projection) row."""
    dims = config.dims
    item = np.dtype(config.dtype).itemsize
    widest = max(dims)
    if config.backward:
        from_post = activations.get(config.act).kind in activations.IN_PLACE
        kept = (sum(dims[1:]) + (widest if from_post else sum(dims[1:]))) * item
    else:
        kept = 2 * widest * item
    layer = widest * (3 * item + stats_work_bytes(item) + (3 * item if config.backward else 0))
    inputs = (dims[0] + (dims[-1] if config.backward else 0)) * item
    return kept + layer + inputs


def stats_work_bytes(item: int) -> int:
    """Work bytes per element of the tensor being measured: with the kernels, a float64 centred copy
    (when mean^2/var is large) or the dead units' columns and mask; NumPy's road also needs a float64
    copy, the bins as floats and integers, and masks."""
    return max(8, item + 1) if kernels.LIB is not None else 34


def auto_chunk(config: RunConfig) -> int:
    return int(max(1, min(config.batch, CHUNK_BUDGET // per_sample_bytes(config))))


def memory_parts(config: RunConfig) -> dict:
    """Peak memory of a run, by part: weights (and each thread's weight-gradient sums), one chunk's
    activations and work buffers, and a margin for the interpreter and the libraries."""
    dims = config.dims
    item = np.dtype(config.dtype).itemsize
    params = sum(dims[l - 1] * dims[l] for l in range(1, len(dims)))
    biggest = max(dims[l - 1] * dims[l] for l in range(1, len(dims)))
    chunk = min(config.chunk_size or auto_chunk(config), config.batch)
    weights = params * item
    if config.backward:  # a sum per thread, a product buffer per thread, their total at the end
        weights += PARTS * params * item + (PARTS + 1) * biggest * item
    return {"weights": weights,
            "chunk": chunk * per_sample_bytes(config),
            "other": biggest * stats_work_bytes(8) + PARTS * 8 * sum(rows_per_block(d) * d for d in (dims[0], dims[-1]))
            + 150 * 2**20}


def estimate_bytes(config: RunConfig) -> int:
    return sum(memory_parts(config).values())


def available_bytes() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_memory(config: RunConfig, available: int | None = None) -> int:
    """Refuse, before any work, a run whose estimated peak memory exceeds what is available."""
    parts = memory_parts(config)
    need = sum(parts.values())
    have = available_bytes() if available is None else available
    if need > have:
        hint = ("lower --width or --layers" if parts["weights"] >= parts["chunk"]
                else "lower --chunk-size, --width or --layers")
        if config.dtype == "float64":
            hint += ", or use --dtype float32"
        raise ConfigError(f"this run needs an estimated {gib(need)} of memory but only {gib(have)} "
                          f"is available; {hint}.")
    return need


@dataclass
class LayerStats:
    pre: TensorStats
    post: TensorStats
    grad_pre: TensorStats | None = None
    grad_weight: TensorStats | None = None
    slope_sum: float = 0.0                 # sum of phi'(pre) over all elements (backward only)


@dataclass
class Pass:
    """What a run measured: per-layer statistics and the time each part took (seconds)."""
    layers: list[LayerStats]
    timings: dict = field(default_factory=dict)
    chunk_size: int = 0


@functools.lru_cache(maxsize=None)
def _openblas():
    """(library, prefix, suffix) of the OpenBLAS that NumPy loaded, found through /proc/self/maps,
    or None (another BLAS, or not Linux); looked up once per process."""
    import ctypes

    try:
        with open("/proc/self/maps") as fh:
            paths = sorted({line.split()[-1] for line in fh if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", ""), ("scipy_openblas", "")):
            if all(hasattr(lib, f"{prefix}_{op}_num_threads{suffix}") for op in ("set", "get")):
                return lib, prefix, suffix
    return None


def _openblas_threads():
    """(set, get) of the number of threads of NumPy's OpenBLAS, or None: then the two halves of a
    chunk run one after the other."""
    import ctypes

    found = _openblas()
    if found is None:
        return None
    lib, prefix, suffix = found
    setter = getattr(lib, f"{prefix}_set_num_threads{suffix}")
    getter = getattr(lib, f"{prefix}_get_num_threads{suffix}")
    setter.argtypes, getter.restype = [ctypes.c_int], ctypes.c_int
    return setter, getter


def _openblas_gemm_tn():
    """``gemm_tn(a, b, out, beta)``: out = a.T @ b + beta * out in one BLAS call (cblas ?gemm), for
    C-contiguous float64 or float32 arrays of one dtype; or None. Only for scipy-openblas builds
    (NumPy's wheels), whose symbol names say the width of their integers (``64_``: 64-bit)."""
    import ctypes

    found = _openblas()
    if found is None or found[1] != "scipy_openblas":
        return None
    lib, _, suffix = found
    index = ctypes.c_int64 if suffix == "64_" else ctypes.c_int
    fns = {}
    for dtype, letter, real in ((np.float64, "d", ctypes.c_double), (np.float32, "s", ctypes.c_float)):
        fn = getattr(lib, f"scipy_cblas_{letter}gemm{suffix}", None)
        if fn is None:
            return None
        fn.argtypes = [ctypes.c_int] * 3 + [index] * 3 + [real, ctypes.c_void_p, index, ctypes.c_void_p,
                                                           index, real, ctypes.c_void_p, index]
        fn.restype = None
        fns[np.dtype(dtype)] = fn
    ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112

    def gemm_tn(a: np.ndarray, b: np.ndarray, out: np.ndarray, beta: float) -> bool:
        fn = fns.get(a.dtype)
        if fn is None or not (a.dtype == b.dtype == out.dtype and a.flags.c_contiguous
                              and b.flags.c_contiguous and out.flags.c_contiguous):
            return False
        (k, m), n = a.shape, b.shape[1]  # a (k, m), b (k, n), out (m, n)
        fn(ROW_MAJOR, TRANS, NO_TRANS, m, n, k, 1.0, a.ctypes.data, m, b.ctypes.data, n, beta,
           out.ctypes.data, n)
        return True

    return gemm_tn


_BLAS = []  # cached (_openblas_threads(), _openblas_gemm_tn())
_POOL: list[Scratch] = []  # work arrays of finished runs, for the next run in this process
_POOL_LOCK = threading.Lock()


_WORKERS: dict = {}  # process id -> the engine's threads, kept between runs


def _workers():
    """The PARTS worker threads, started once per process: starting two threads in every run (each
    waits for the interpreter lock to say it started) cost 1.4-2.3% of the default float32 forward
    pass. Idle between runs; a forked child starts its own."""
    pid = os.getpid()
    with _POOL_LOCK:
        if pid not in _WORKERS:
            from concurrent.futures import ThreadPoolExecutor

            _WORKERS.clear()
            _WORKERS[pid] = ThreadPoolExecutor(PARTS, thread_name_prefix="actstats")
        return _WORKERS[pid]


def _take_scratch() -> Scratch:
    with _POOL_LOCK:
        return _POOL.pop() if _POOL else Scratch()


def _give_back(work: Scratch):
    """Keep a finished run's work arrays (up to POOL_BYTES a thread): the next run of a sweep or a
    benchmark then writes into memory already mapped instead of paying a page fault per 4 KiB."""
    if work.nbytes <= POOL_BYTES:
        with _POOL_LOCK:
            _POOL.append(work)


def _run_all(pool, pending: list, calls: list):
    """Run the calls on the worker threads (in turn where there are none), wait for all of them,
    then raise the first failure; ``pending`` collects what was submitted."""
    if pool is None:
        for call in calls:
            call()
        return
    jobs = [pool.submit(call) for call in calls]
    pending.extend(jobs)
    futures.wait(jobs)
    for job in jobs:
        job.result()


class _Part:
    """One thread's share of every chunk (a contiguous block of its rows): that share's statistics,
    its input rows, its work arrays and its sums of dL/dW. Shares merge in a fixed order at the
    end, so the numbers never depend on thread timing."""

    def __init__(self, config: RunConfig, net: "Network", work: Scratch):
        self.config, self.net, self.work = config, net, work
        act, dtype, bins = net.act, np.dtype(config.dtype), config.bins
        self.layers = [LayerStats(TensorStats(bins, None, dtype),
                                  TensorStats(bins, act.post_range, dtype, units=True),
                                  TensorStats(bins, None, dtype, units=True) if config.backward else None)
                       for _ in net.weights]
        self.grad_w: list[np.ndarray | None] = [None] * len(net.weights)
        self.x = Samples(config, INPUT, net.dims[0])
        self.g = Samples(config, PROJECTION, net.dims[-1]) if config.backward else None
        self.t_fwd = self.t_bwd = 0.0
        self.bias = [bool(np.any(b)) for b in net.biases]  # zero biases (the default): no add

    def chunk(self, start: int, stop: int):
        """Forward (and backward) for the batch's rows [start, stop)."""
        with np.errstate(all="ignore"):  # per thread: overflow is measured (frac_nonfinite), not warned about
            self._chunk(start, stop)

    def _chunk(self, start: int, stop: int):
        t0 = time.perf_counter()
        net, work, config = self.net, self.work, self.config
        act, dtype, rows = net.act, np.dtype(config.dtype), stop - start
        in_place = act.kind in activations.IN_PLACE
        saturation = (act.sat_low, act.sat_high) if act.saturates else None
        a = self.x.draw(start, stop, work.get("x", (rows, net.dims[0]), dtype))
        posts, slopes = [a], []
        for l, W in enumerate(net.weights):
            st = self.layers[l]
            z = np.matmul(a, W, out=work.get("pre", (rows, W.shape[1]), dtype))  # (rows, fan_out)
            if self.bias[l]:
                z += net.biases[l]
            pre = st.pre.update(z, work=work, saturation=saturation,
                                histogram=not (in_place and kernels.layer_usable(z, config.bins)))
            name = f"post{l}" if config.backward else f"post{l % 2}"
            if not pre.counted:  # finite: phi and both histograms in one pass
                a = _phi_and_histograms(st, act, z, pre, work.get(name, z.shape, dtype))
            elif in_place:
                a = act.phi(z, out=work.get(name, z.shape, dtype),
                            work=(work.get("phi0", z.shape, dtype), work.get("phi1", z.shape, dtype)))
            else:
                a = act.phi(z)
            post = st.post.update(a, n_saturated=pre.n_outside, work=work, histogram=pre.counted)
            assert post.counted == pre.counted  # phi of a finite pre is finite: counted above
            if config.backward:
                posts.append(a)
                if not in_place:  # phi' needs z: computed now and kept (else from a, when needed)
                    slopes.append(act.dphi(z, a))
        t1 = time.perf_counter()
        self.t_fwd += t1 - t0
        if not config.backward:
            return
        d = self.g.draw(start, stop, work.get("g", (rows, net.dims[-1]), dtype))  # (rows, fan_out of the last layer)
        for l in range(len(net.weights) - 1, -1, -1):
            W = net.weights[l]
            a = posts[l + 1]
            gp = work.get("grad_pre", a.shape, dtype)
            if in_place:
                self.layers[l].slope_sum += activations.grad_pre(act, d, a, gp, work.get("slope", a.shape, dtype))
            else:
                self.layers[l].slope_sum += float(np.sum(slopes[l], dtype=np.float64))
                np.multiply(d, slopes[l], out=gp)
            self.layers[l].grad_pre.update(gp, work=work)
            self._add_grad_weight(l, posts[l], gp)
            if l:
                d = np.matmul(gp, W.T, out=work.get(f"d{l % 2}", (rows, W.shape[0]), dtype))
        self.t_bwd += time.perf_counter() - t1

    def _add_grad_weight(self, l: int, a: np.ndarray, gp: np.ndarray):
        """dL/dW of layer l += a.T @ gp over this chunk's rows: where BLAS is reachable, one call
        that adds as it multiplies (beta = 1): no product buffer and no further pass over a
        (fan_in, fan_out) array per chunk, which with many chunks of few rows (large widths, the
        backward pass) costs as much as a quarter of the product."""
        acc = self.grad_w[l]
        out = self.work.get(f"grad_w{l}", (a.shape[1], gp.shape[1]), a.dtype) if acc is None else acc
        gemm_tn = _BLAS[0][1] if _BLAS else None
        if gemm_tn is None or not gemm_tn(a, gp, out, 0.0 if acc is None else 1.0):  # beta 0: out is not read
            if acc is None:
                np.matmul(a.T, gp, out=out)
            else:
                acc += np.matmul(a.T, gp, out=self.work.get("grad_w", acc.shape, acc.dtype))
        self.grad_w[l] = out


def _phi_and_histograms(st: LayerStats, act: activations.Activation, z: np.ndarray, pre: Chunk,
                        out: np.ndarray) -> np.ndarray:
    """out = phi(z), and the chunk's counts added to the pre's and the post's histograms, in one
    pass (kernels.layer) over a finite z whose other statistics ``st.pre`` has (``pre``); the same
    counts on the same grids as the two histograms' own updates."""
    post = st.post.hist
    if post.fixed is not None:
        grid = post.grid()
    else:  # ReLU's: phi is non-decreasing, so the post's extremes are phi of the pre's
        lo, hi = act.phi(np.array([pre.lo, pre.hi], z.dtype)).tolist()
        grid = post.grid(min(st.post.min, lo), max(st.post.max, hi))
    pre_counts, post_counts, below, above = kernels.layer(
        act.kind, z, out, st.pre.hist.grid(st.pre.min, st.pre.max), grid, post.bins)
    st.pre.hist.add(pre_counts)
    post.add(post_counts, below, above)
    return out


def run(config: RunConfig, net: Network | None = None, progress=None) -> Pass:
    """Push ``config.batch`` samples through the net, chunk by chunk, and collect statistics.

    ``progress(done, total)`` is called after each chunk with the number of rows done.

    Each chunk's rows split in two halves run by two threads, each with a one-thread BLAS: NumPy
    and BLAS release the GIL, so one core multiplies while the other computes phi and statistics,
    and single-threaded matrix products waste less than two-threaded ones. Each thread draws its own
    input rows (and loss projection rows), and keeps its work arrays for the next run.
    """
    t0 = time.perf_counter()
    net = net or Network.build(config)
    t_build = time.perf_counter() - t0
    dtype = np.dtype(config.dtype)
    L = len(net.weights)
    chunk = config.chunk_size or auto_chunk(config)
    parts = [_Part(config, net, _take_scratch()) for _ in range(PARTS)]
    if not _BLAS:
        _BLAS.append((_openblas_threads(), _openblas_gemm_tn()))
    blas = _BLAS[0][0]
    pool, pending = None, []
    # two threads only where BLAS may use two: a sweep worker limited to one BLAS thread (so that
    # workers x threads never exceed the cores) runs the two halves one after the other
    threads = blas[1]() if blas is not None else 1
    if threads >= PARTS and chunk >= PARTS * MIN_PART_ROWS:
        pool = _workers()
        blas[0](1)
    try:
        with np.errstate(all="ignore"):  # overflow is measured (frac_nonfinite), not warned about
            for start in range(0, config.batch, chunk):
                stop = min(start + chunk, config.batch)
                rows = stop - start
                cut = start + (rows + 1) // 2 if rows >= PARTS * MIN_PART_ROWS else stop
                shares = [(parts[0], start, cut), (parts[1], cut, stop)][: 2 if cut < stop else 1]
                _run_all(pool, pending, [functools.partial(part.chunk, a, b) for part, a, b in shares])
                if progress:
                    progress(stop, config.batch)
            t3 = time.perf_counter()
            layers = parts[0].layers
            for other in parts[1:]:
                for mine, theirs in zip(layers, other.layers):
                    mine.pre.merge(theirs.pre)
                    mine.post.merge(theirs.post)
                    if config.backward:
                        mine.grad_pre.merge(theirs.grad_pre)
                        mine.slope_sum += theirs.slope_sum
            if config.backward:
                @np.errstate(all="ignore")
                def weight_stats(k, step):  # layers k, k + step, ...: one thread, one set of work arrays
                    for l in range(k, L, step):
                        grad_w = parts[0].grad_w[l]
                        for other in parts[1:]:
                            if other.grad_w[l] is not None:
                                grad_w += other.grad_w[l]
                        gw = TensorStats(config.bins, None, dtype)
                        gw.update(grad_w, work=parts[k].work)
                        layers[l].grad_weight = gw

                shares = [(k, PARTS) for k in range(PARTS)] if pool is not None else [(0, 1)]
                _run_all(pool, pending, [functools.partial(weight_stats, k, step) for k, step in shares])
            t_merge = time.perf_counter() - t3
    finally:
        if pool is not None:
            futures.wait(pending)  # a failure or an interrupt: the threads finish with the work arrays first
            blas[0](threads)
        for part in parts:
            _give_back(part.work)
    t_fwd = max(p.t_fwd for p in parts)
    t_bwd = max(p.t_bwd for p in parts) + t_merge
    return Pass(layers, {"build": t_build, "forward": t_fwd, "backward": t_bwd,
                         "total": time.perf_counter() - t0}, chunk)
