"""The MLP: weights from independent seeded streams, and chunked forward/backward passes.

Layer l (1..L) computes ``pre = a[l-1] @ W[l] + b[l]`` (W of shape (fan_in, fan_out)) and
``post = phi(pre)``. The backward pass starts from the random-projection loss ``L = sum(a_L * g)``,
``g ~ N(0, 1)``, so every layer's gradients are real back-propagated gradients:
``grad_pre = dL/da * phi'(pre)``, ``grad_weight = a[l-1].T @ grad_pre``, ``dL/da[l-1] = grad_pre @ W.T``.

Randomness: ``SeedSequence(seed, spawn_key=(stream, l))`` gives each layer's weights, each layer's
biases, the input and the projection g their own stream, so changing the batch size, the depth or
the chunk size does not change the weights. Input and g are drawn row block by row block from one
stream, so every chunking sees the same samples.

The batch is processed in chunks of rows; statistics merge across chunks exactly (see stats.py), so
peak memory is bounded by the chunk, not the batch.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from . import activations, inits
from .config import RunConfig
from .errors import ConfigError
from .stats import TensorStats

WEIGHTS, BIASES, INPUT, PROJECTION = range(4)  # seed streams
CHUNK_BUDGET = 256 * 2**20  # bytes of per-chunk activations when the chunk size is automatic
TENSORS = ("pre", "post", "grad_pre", "grad_weight")


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


def per_sample_bytes(config: RunConfig) -> int:
    """Bytes one sample needs during a pass: every layer's post and phi' kept for the backward
    pass, plus a few layer-sized temporaries (statistics work in float64)."""
    dims = config.dims
    item = np.dtype(config.dtype).itemsize
    kept = 2 * sum(dims[1:]) * item if config.backward else 0
    return kept + 4 * max(dims) * 8


def auto_chunk(config: RunConfig) -> int:
    return int(max(1, min(config.batch, CHUNK_BUDGET // per_sample_bytes(config))))


def memory_parts(config: RunConfig) -> dict:
    """Peak memory of a run, by part: weights (and weight gradients), one chunk's activations, and a
    margin for the interpreter, the libraries and the statistics of the largest weight matrix."""
    dims = config.dims
    item = np.dtype(config.dtype).itemsize
    params = sum(dims[l - 1] * dims[l] for l in range(1, len(dims)))
    biggest = max(dims[l - 1] * dims[l] for l in range(1, len(dims)))
    chunk = min(config.chunk_size or auto_chunk(config), config.batch)
    return {"weights": params * item * (2 if config.backward else 1),
            "chunk": chunk * per_sample_bytes(config),
            "other": biggest * 8 * 2 + 150 * 2**20}


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


def run(config: RunConfig, net: Network | None = None, progress=None) -> Pass:
    """Push ``config.batch`` samples through the net, chunk by chunk, and collect statistics.

    ``progress(done, total)`` is called after each chunk with the number of rows done.
    """
    t0 = time.perf_counter()
    net = net or Network.build(config)
    t_build = time.perf_counter() - t0
    act, dtype, bins = net.act, np.dtype(config.dtype), config.bins
    L = len(net.weights)
    layers = [LayerStats(TensorStats(bins, None, dtype),
                         TensorStats(bins, act.post_range, dtype, units=True),
                         TensorStats(bins, None, dtype, units=True) if config.backward else None)
              for _ in range(L)]
    grad_w = [np.zeros_like(W) for W in net.weights] if config.backward else None
    chunk = config.chunk_size or auto_chunk(config)
    x_gen, g_gen = rng(config.seed, INPUT), rng(config.seed, PROJECTION)
    t_fwd = t_bwd = 0.0
    with np.errstate(all="ignore"):  # overflow is measured (frac_nonfinite), not warned about
        for start in range(0, config.batch, chunk):
            rows = min(chunk, config.batch - start)
            t1 = time.perf_counter()
            a = make_input(config.input, x_gen, rows, net.dims[0]).astype(dtype, copy=False)
            posts, slopes = [a], []
            for l in range(L):
                z = a @ net.weights[l]
                z += net.biases[l]
                a = act.phi(z)
                st = layers[l]
                st.pre.update(z)
                sat = int(np.count_nonzero(act.saturated(z))) if act.saturates else 0
                st.post.update(a, n_saturated=sat)
                if config.backward:
                    slope = act.dphi(z, a)
                    st.slope_sum += float(np.sum(slope, dtype=np.float64))
                    slopes.append(slope)
                    posts.append(a)
            t2 = time.perf_counter()
            t_fwd += t2 - t1
            if config.backward:
                d = g_gen.standard_normal((rows, net.dims[-1])).astype(dtype, copy=False)
                for l in range(L - 1, -1, -1):
                    gp = d * slopes[l]
                    layers[l].grad_pre.update(gp)
                    grad_w[l] += posts[l].T @ gp
                    if l:
                        d = gp @ net.weights[l].T
                t_bwd += time.perf_counter() - t2
            if progress:
                progress(start + rows, config.batch)
        if config.backward:
            t3 = time.perf_counter()
            for l in range(L):
                gw = TensorStats(bins, None, dtype)
                gw.update(grad_w[l])
                layers[l].grad_weight = gw
            t_bwd += time.perf_counter() - t3
    return Pass(layers, {"build": t_build, "forward": t_fwd, "backward": t_bwd,
                         "total": time.perf_counter() - t0}, chunk)
