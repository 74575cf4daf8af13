"""Speed, memory and start-up of actstats against the physical floor (the matrix products alone),
a plain NumPy forward pass and a PyTorch forward-hook script doing the same work.

    python benchmarks/bench.py            # default size and a large one; every activation and dtype
    python benchmarks/bench.py --quick    # the default size only, fewer repetitions
    python benchmarks/bench.py --profile  # where one layer's time goes, step by step (one core)
    python benchmarks/bench.py --memory   # peak resident memory of 20 x 1024, batch 32768, float32
    python benchmarks/bench.py --startup  # `actstats --help` and the README's default run

Everything is timed in this one process and run, interleaved (each repetition times every variant
once), and the best of the repetitions is kept, so that other work on the machine, which only ever
adds time, disturbs the ratios as little as possible. Times in milliseconds.

  floor fwd      the L forward products a @ W into preallocated arrays, nothing else
  floor f+b      those and the backward products a.T @ gp and gp @ W.T
  numpy fwd      the plain forward a user would write: a = phi(a @ W) per layer
  engine fwd     actstats' engine: input drawn, forward, every statistic (network.run, forward only)
  engine f+b     the same with the backward pass and the gradient statistics
  torch fwd/f+b  an nn.Sequential with forward hooks that record mean, std, histc and the saturated
                 (or zero) fraction of each layer's pre- and post-activations (and, with backward,
                 full backward hooks for dL/dz and the same of each dL/dW), input drawn by torch
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from actstats import RunConfig, activations, network  # noqa: E402
from actstats.stats import Scratch, TensorStats  # noqa: E402

SIZES = {"default": dict(layers=10, width=500, batch=1000), "large": dict(layers=20, width=2048, batch=4096)}
ACTS = ("tanh", "sigmoid", "relu")
DTYPES = ("float64", "float32")
PLAIN = {"tanh": np.tanh, "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)), "relu": lambda z: np.maximum(z, 0)}


def best_of(fns: dict, repeat: int) -> dict:
    """Best wall time of each function, repetitions interleaved across the functions."""
    best = {k: float("inf") for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return {k: v * 1e3 for k, v in best.items()}


def floors(net: network.Network, x: np.ndarray, g: np.ndarray):
    """The matrix products alone, into buffers allocated once."""
    Ws = net.weights
    outs = [np.empty((x.shape[0], W.shape[1]), x.dtype) for W in Ws]
    grads = [np.empty_like(W) for W in Ws]
    ds = [np.empty((x.shape[0], W.shape[0]), x.dtype) for W in Ws]

    def forward():
        a = x
        for W, out in zip(Ws, outs):
            a = np.matmul(a, W, out=out)

    def forward_backward():
        forward()
        d = g
        for l in range(len(Ws) - 1, -1, -1):
            np.matmul(outs[l - 1].T if l else x.T, d, out=grads[l])
            if l:
                d = np.matmul(d, Ws[l].T, out=ds[l])

    return forward, forward_backward


def plain_forward(net: network.Network, x: np.ndarray, act: str):
    phi = PLAIN[act]

    def forward():
        a = x
        for W in net.weights:
            a = phi(a @ W)

    return forward


def torch_script(net: network.Network, config: RunConfig, backward: bool):
    """What a user would write in PyTorch: hooks that compute the statistics layer by layer."""
    import torch

    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    act_module = {"tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU}[config.act]
    layers = []
    for W in net.weights:
        lin = torch.nn.Linear(W.shape[0], W.shape[1], bias=False).to(dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
        layers += [lin, act_module()]
    model = torch.nn.Sequential(*layers)
    records: list = []

    def describe(t):
        return t.mean().item(), t.std().item(), torch.histc(t, bins=config.bins)

    def saturated(a):
        if config.act == "tanh":
            return (a.abs() > 0.99).float().mean().item()
        if config.act == "sigmoid":
            return ((a < 0.005) | (a > 0.995)).float().mean().item()
        return (a == 0).float().mean().item()

    def forward_hook(module, inputs, output):
        records.append((describe(inputs[0].detach()), describe(output.detach()), saturated(output.detach())))

    def backward_hook(module, grad_input, grad_output):
        records.append(describe(grad_input[0]))

    for module in model:
        if isinstance(module, act_module):
            module.register_forward_hook(forward_hook)
            if backward:
                module.register_full_backward_hook(backward_hook)
    dims = config.dims
    gen = torch.Generator().manual_seed(0)

    def run():
        records.clear()
        x = torch.randn(config.batch, dims[0], generator=gen, dtype=torch.float64).to(dtype)
        if not backward:
            with torch.no_grad():
                model(x)
            return
        model.zero_grad(set_to_none=True)
        x.requires_grad_(False)
        out = model(x)
        g = torch.randn(config.batch, dims[-1], generator=gen, dtype=torch.float64).to(dtype)
        (out * g).sum().backward()
        for module in model:
            if isinstance(module, torch.nn.Linear):
                records.append(describe(module.weight.grad))

    return run


def bench(sizes, repeat: int, use_torch: bool):
    torch = None
    if use_torch:
        try:
            import torch
        except ImportError:
            torch = None
    print(f"numpy {np.__version__}, {os.cpu_count()} cores"
          + (f", torch {torch.__version__} ({torch.get_num_threads()} threads)" if torch else ", torch not installed"))
    head = (f"{'size':>20} {'act':>7} {'dtype':>7} | {'floor fwd':>9} {'floor f+b':>9} {'numpy fwd':>9} "
            f"{'engine fwd':>10} {'engine f+b':>10} {'torch fwd':>9} {'torch f+b':>9} | "
            f"{'eng/floor fwd':>13} {'eng/floor f+b':>13} {'eng/torch fwd':>13} {'eng/torch f+b':>13}")
    print(head)
    print("-" * len(head))
    rows = []
    for size in sizes:
        spec = SIZES[size]
        for dtype in DTYPES:
            for act in ACTS:
                config = RunConfig.from_dict({**spec, "act": act, "dtype": dtype})
                forward_only = config.replace(backward=False)
                net = network.Network.build(config)
                gen = np.random.default_rng(1)
                x = gen.standard_normal((config.batch, config.dims[0])).astype(dtype)
                g = gen.standard_normal((config.batch, config.dims[-1])).astype(dtype)
                floor_fwd, floor_fb = floors(net, x, g)
                fns = {"floor fwd": floor_fwd, "floor f+b": floor_fb,
                       "numpy fwd": plain_forward(net, x, act),
                       "engine fwd": lambda: network.run(forward_only, net),
                       "engine f+b": lambda: network.run(config, net)}
                if torch is not None:
                    fns["torch fwd"] = torch_script(net, config, backward=False)
                    fns["torch f+b"] = torch_script(net, config, backward=True)
                t = best_of(fns, repeat)
                t.setdefault("torch fwd", float("nan"))
                t.setdefault("torch f+b", float("nan"))
                label = f"{spec['layers']}x{spec['width']} b{spec['batch']}"
                torch_ratio = (f"{t['engine fwd'] / t['torch fwd']:>13.2f} {t['engine f+b'] / t['torch f+b']:>13.2f}"
                               if torch is not None else f"{'skipped: no torch':>27}")
                print(f"{label:>20} {act:>7} {dtype:>7} | {t['floor fwd']:>9.1f} {t['floor f+b']:>9.1f} "
                      f"{t['numpy fwd']:>9.1f} {t['engine fwd']:>10.1f} {t['engine f+b']:>10.1f} "
                      f"{t['torch fwd']:>9.1f} {t['torch f+b']:>9.1f} | "
                      f"{t['engine fwd'] / t['floor fwd']:>13.2f} {t['engine f+b'] / t['floor f+b']:>13.2f} "
                      + torch_ratio, flush=True)
                rows.append((size, act, dtype, t))
    return rows


def profile(repeat: int):
    """One layer of the default size (1000 x 500 -> 500), each step alone, on one core (BLAS set to
    one thread): what the engine's time goes to. Core-milliseconds; the engine runs two halves of
    the batch on the two cores, so a layer's wall time is about half the total."""
    blas = network._openblas_threads()
    if blas:
        blas[0](1)
    print("one layer, 1000 x 500 -> 500, one core; core-milliseconds")
    for dtype in DTYPES:
        for act_name in ACTS:
            act = activations.get(act_name)
            gen = np.random.default_rng(0)
            a = np.tanh(gen.standard_normal((1000, 500))).astype(dtype)
            W = (gen.standard_normal((500, 500)) / np.sqrt(500)).astype(dtype)
            work = Scratch()
            z = a @ W
            post = act.phi(z)
            slope = act.dphi(z, post)
            d = gen.standard_normal(z.shape).astype(dtype)
            gp = d * slope
            buf = np.empty_like(z)
            bufs = (np.empty_like(z), np.empty_like(z))
            gw = np.empty_like(W)
            pre_st = TensorStats(50, None, dtype)
            post_st = TensorStats(50, act.post_range, dtype, units=True)
            lo, hi = float(z.min()), float(z.max())
            steps = {
                "matmul a@W": lambda: np.matmul(a, W, out=buf),
                "pre stats": lambda: pre_st.update(z, work=work),
                "saturated": (lambda: network._n_saturated(act, z, lo, hi, work)) if act.saturates else (lambda: 0),
                "phi": lambda: act.phi(z, out=buf, work=bufs),
                "post stats": lambda: post_st.update(post, work=work),
                "phi' + sum": lambda: float(np.sum(act.dphi(z, post, out=buf), dtype=np.float64)),
                "d*phi'": lambda: np.multiply(d, slope, out=buf),
                "grad_pre stats": lambda: pre_st.update(gp, work=work),
                "matmul a.T@gp": lambda: np.matmul(a.T, gp, out=gw),
                "matmul gp@W.T": lambda: np.matmul(gp, W.T, out=buf),
            }
            t = best_of(steps, repeat)
            mm = t["matmul a@W"]
            fwd = sum(t[k] for k in ("matmul a@W", "pre stats", "saturated", "phi", "post stats"))
            print(f"{act_name:>7} {dtype}: " + "  ".join(f"{k} {v:.2f}" for k, v in t.items())
                  + f"  | forward total {fwd:.2f} = {fwd / mm:.2f} x matmul")
    # the statistics of one pre-activation tensor, pass by pass
    z = np.random.default_rng(0).standard_normal((1000, 500))
    flat = z.reshape(-1)
    st = TensorStats(50, None, np.float64)
    st.update(z, work=work)
    f, idx = np.empty_like(flat), np.empty(flat.shape, np.int64)
    mask = np.empty(flat.shape, np.bool_)
    parts = {"min+max": lambda: (flat.min(), flat.max()),
             "sum+sumsq": lambda: (np.sum(flat), np.einsum("i,i->", flat, flat)),
             "row sums+sumsq": lambda: (np.add.reduce(z, axis=1), np.einsum("ij,ij->i", z, z)),
             "zeros": lambda: np.count_nonzero(np.equal(flat, 0, out=mask)),
             "hist: x*2^-e": lambda: np.multiply(flat, 0.125, out=f),
             "hist: floor-start": lambda: (np.floor(f, out=f), np.subtract(f, -40, out=f)),
             "hist: to int64": lambda: np.copyto(idx, f, casting="unsafe"),
             "hist: bincount": lambda: np.bincount(idx, minlength=50)}
    t = best_of(parts, repeat)
    print("statistics of one float64 tensor (1000 x 500), pass by pass: "
          + "  ".join(f"{k} {v:.2f}" for k, v in t.items()))
    if blas:
        blas[0](os.cpu_count() or 1)


MEMORY_CASE = dict(layers=20, width=1024, batch=32768, dtype="float32")


def memory():
    """Peak resident memory of the big float32 case, in a fresh process, and the engine's estimate."""
    code = ("import resource, time, actstats\n"
            "from actstats import network, RunConfig\n"
            f"c = RunConfig.from_dict({MEMORY_CASE!r})\n"
            "t = time.perf_counter(); p = network.run(c)\n"
            "print(p.chunk_size, time.perf_counter() - t, network.estimate_bytes(c))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    import resource

    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    chunk, seconds, estimate = out.stdout.split()
    print(f"{MEMORY_CASE}: forward + backward in {float(seconds):.1f} s, chunk {chunk} rows; "
          f"peak resident {peak / 2**20:.0f} MiB (limit 1024 MiB), estimate {int(estimate) / 2**20:.0f} MiB")


def startup(repeat: int):
    exe = os.path.join(os.path.dirname(sys.executable), "actstats")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "actstats"]
    import tempfile

    def timed(args):
        best = float("inf")
        for _ in range(repeat):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                subprocess.run(cmd + args(tmp), check=True, capture_output=True, env={**os.environ, "MPLBACKEND": "Agg"})
                best = min(best, time.perf_counter() - t0)
        return best

    help_s = timed(lambda tmp: ["--help"])
    run_s = timed(lambda tmp: ["run", "--init", "xavier", "--act", "relu", "--layers", "10", "--out", tmp])
    no_plots = timed(lambda tmp: ["run", "--init", "xavier", "--act", "relu", "--layers", "10", "--out", tmp,
                                  "--no-plots"])
    print(f"actstats --help: {help_s:.2f} s (goal < 0.3 s)\n"
          f"actstats run --init xavier --act relu --layers 10 (PNGs included): {run_s:.2f} s (goal < 3 s); "
          f"with --no-plots: {no_plots:.2f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="default size only, 3 repetitions")
    parser.add_argument("--repeat", type=int, help="repetitions (best kept); default 7, --quick 3")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch script")
    parser.add_argument("--profile", action="store_true", help="where one layer's time goes")
    parser.add_argument("--memory", action="store_true", help="peak memory of the big float32 case")
    parser.add_argument("--startup", action="store_true", help="start-up and the README's default run")
    args = parser.parse_args()
    repeat = args.repeat or (3 if args.quick else 7)
    if args.profile:
        profile(max(repeat, 10))
    if args.memory:
        memory()
    if args.startup:
        startup(repeat)
    if not (args.profile or args.memory or args.startup):
        bench(["default"] if args.quick else ["default", "large"], repeat, not args.no_torch)


if __name__ == "__main__":
    main()
