"""Speed, memory and start-up of actstats against the physical floor (the matrix products alone),
a plain NumPy forward pass and a PyTorch forward-hook script doing the same work.

    python benchmarks/bench.py            # default size and a large one; every activation and dtype
    python benchmarks/bench.py --quick    # the default size only, fewer repetitions
    python benchmarks/bench.py --size large --act tanh --dtype float64   # one row of the table
    python benchmarks/bench.py --profile  # where one layer's time goes, step by step (one core)
    python benchmarks/bench.py --memory   # peak resident memory of 20 x 1024, batch 32768, float32
    python benchmarks/bench.py --startup  # `actstats --help` and the README's default run
    python benchmarks/bench.py --sweep    # a sweep of 16 small runs, --jobs 2 against --jobs 1
    python benchmarks/bench.py --all      # all of the above (the README's Performance table)

Everything is timed in this one process and run, interleaved (each repetition times every variant
once), and the best of the repetitions is kept, so that other work on the machine, which only ever
adds time, disturbs the ratios as little as possible (the large size gets a third of the
repetitions: one repetition of its 6 rows takes minutes). Times in milliseconds.

  floor fwd      the L forward products a @ W into preallocated arrays, nothing else, done the
                 faster of two ways: the whole batch through BLAS on every core, or (as the engine
                 does) two row-halves on two threads, each with a one-thread BLAS
  floor f+b      those and the backward products a.T @ gp and gp @ W.T, the same two ways
  numpy fwd      the plain forward a user would write: a = phi(a @ W) per layer
  engine fwd     actstats' engine: input drawn, forward, every statistic (network.run, forward only)
  engine f+b     the same with the backward pass and the gradient statistics
  torch fwd/f+b  an nn.Sequential with forward hooks that record mean, std, histc and the saturated
                 (or zero) fraction of each layer's pre- and post-activations (and, with backward,
                 full backward hooks for dL/dz and the same of each dL/dW), input drawn by torch;
                 timed after the NumPy variants (its OpenMP threads spin after each call and would
                 slow whatever runs next), with torch's default threads and with one thread, the
                 faster kept: the engine/torch ratios are on torch's best
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from actstats import RunConfig, activations, kernels, network  # noqa: E402
from actstats.stats import Scratch, TensorStats  # noqa: E402

SIZES = {"default": dict(layers=10, width=500, batch=1000), "large": dict(layers=20, width=2048, batch=4096)}
ACTS = ("tanh", "sigmoid", "relu")
DTYPES = ("float64", "float32")
PLAIN = {"tanh": np.tanh, "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)), "relu": lambda z: np.maximum(z, 0)}


# OpenBLAS's worker threads busy-wait for a while after a multi-threaded product: whatever ran next
# lost most of a core (measured: the engine's forward 145 ms right after a two-thread matmul, 100 ms
# after a pause). Each timed call is preceded by this pause, so no variant pays for another's threads.
QUIET = 0.2


def best_of(fns: dict, repeat: int, clock=time.perf_counter, quiet: float = QUIET) -> dict:
    """Best time of each function (wall time unless ``clock`` says otherwise), repetitions
    interleaved across the functions, each call after a ``quiet`` pause (seconds)."""
    best = {k: float("inf") for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            time.sleep(quiet)
            t0 = clock()
            fn()
            best[name] = min(best[name], clock() - t0)
    return {k: v * 1e3 for k, v in best.items()}


def floors(net: network.Network, x: np.ndarray, g: np.ndarray):
    """The matrix products alone, into buffers allocated once."""
    Ws = net.weights
    outs = [np.empty((x.shape[0], W.shape[1]), x.dtype) for W in Ws]
    grads = [np.empty_like(W) for W in Ws]
    ds = [np.empty((x.shape[0], max(W.shape[0] for W in Ws)), x.dtype) for _ in range(2)]  # in turn
    for buf in outs + grads + ds:
        buf.fill(0)  # touched now: a first repetition does not pay the page faults

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
                d = np.matmul(d, Ws[l].T, out=ds[l % 2][:, : Ws[l].shape[0]])

    return forward, forward_backward


def split_floors(net: network.Network, x: np.ndarray, g: np.ndarray, pool, blas):
    """The same products as the engine runs them: two row-halves on two threads, one-thread BLAS."""
    cut = (x.shape[0] + 1) // 2
    halves = [floors(net, x[sl], g[sl]) for sl in (slice(0, cut), slice(cut, None))]

    def both(k):
        def run():
            threads = blas[1]()
            blas[0](1)
            try:
                for job in [pool.submit(h[k]) for h in halves]:
                    job.result()
            finally:
                blas[0](threads)
        return run

    return both(0), both(1)


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


COLUMNS = ("floor fwd", "floor f+b", "numpy fwd", "engine fwd", "engine f+b", "torch fwd", "torch f+b")
RATIOS = ("eng/floor fwd", "eng/floor f+b", "eng/torch fwd", "eng/torch f+b")


def table_row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def bench(sizes, repeat: int, use_torch: bool, acts=ACTS, dtypes=DTYPES):
    """The main table (Markdown, to paste into the README): times in ms, best of ``repeat``."""
    from concurrent.futures import ThreadPoolExecutor

    torch = None
    if use_torch:
        try:
            import torch
        except ImportError:
            torch = None
    blas = network._openblas_threads()
    pool = ThreadPoolExecutor(2) if blas else None
    torch_note = (f"torch {torch.__version__} ({torch.get_num_threads()} threads, and 1)" if torch
                  else "torch not installed: its rows are skipped" if use_torch else "torch skipped (--no-torch)")
    print(f"numpy {np.__version__}, {os.cpu_count()} cores, {torch_note}; times in ms, best of {repeat} (large size: {max(1, repeat // 3)})\n")
    print(table_row(("size", "act", "dtype") + COLUMNS + RATIOS))
    print(table_row(("---",) * 3 + ("---:",) * (len(COLUMNS) + len(RATIOS))))
    rows = []
    for size in sizes:
        spec = SIZES[size]
        reps = repeat if size == "default" else max(1, repeat // 3)  # a large row takes minutes
        for dtype in dtypes:
            for act in acts:
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
                if pool is not None:
                    fns["split fwd"], fns["split f+b"] = split_floors(net, x, g, pool, blas)
                t = best_of(fns, reps)
                t["floor fwd"] = min(t["floor fwd"], t.pop("split fwd", np.inf))
                t["floor f+b"] = min(t["floor f+b"], t.pop("split f+b", np.inf))
                t["torch fwd"] = t["torch f+b"] = float("nan")
                if torch is not None:
                    t.update(torch_times(torch, net, config, reps))
                label = f"{spec['layers']}x{spec['width']} b{spec['batch']}"
                ratios = [t["engine fwd"] / t["floor fwd"], t["engine f+b"] / t["floor f+b"]]
                if torch is not None:
                    ratios += [t["engine fwd"] / t["torch fwd"], t["engine f+b"] / t["torch f+b"]]
                cells = [label, act, dtype] + [f"{t[k]:.1f}" if torch is not None or "torch" not in k
                                                else "skipped" for k in COLUMNS]
                cells += [f"{r:.2f}" for r in ratios] + ["skipped"] * (4 - len(ratios))
                print(table_row(cells), flush=True)
                rows.append((size, act, dtype, t))
    if pool is not None:
        pool.shutdown()
    return rows


def torch_times(torch, net, config, repeat: int) -> dict:
    """The hook script's best time, over torch's default number of threads and one thread."""
    threads = torch.get_num_threads()
    best = {}
    for n in sorted({threads, 1}, reverse=True):
        torch.set_num_threads(n)
        t = best_of({"torch fwd": torch_script(net, config, backward=False),
                     "torch f+b": torch_script(net, config, backward=True)}, repeat)
        best = {k: min(v, best.get(k, np.inf)) for k, v in t.items()}
    torch.set_num_threads(threads)
    time.sleep(0.5)  # let torch's spinning OpenMP threads go to sleep before NumPy is timed again
    return best


def profile(repeat: int):
    """One layer of the default size (1000 x 500 -> 500), each step alone, on one core (BLAS set to
    one thread): what the engine's time goes to. CPU milliseconds of this thread (time.thread_time,
    which other processes on a busy machine disturb far less than wall time); the engine runs two
    halves of the batch on the two cores, so a layer's wall time is about half the total."""
    blas = network._openblas_threads()
    if blas:
        blas[0](1)
    print("one layer, 1000 x 500 -> 500, one core (one-thread BLAS); CPU ms of the thread")
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
            grad_st = TensorStats(50, None, dtype, units=True)
            sat = (act.sat_low, act.sat_high) if act.saturates else None
            # as the engine does it: with the kernels, phi and both histograms in one pass
            fused = act.kind in activations.IN_PLACE and kernels.layer_usable(z, 50)
            chunk = pre_st.update(z, work=work, saturation=sat, histogram=not fused)
            phi = "phi+hists" if fused else "phi"
            steps = {
                "matmul a@W": lambda: np.matmul(a, W, out=buf),
                "pre stats": lambda: pre_st.update(z, work=work, saturation=sat, histogram=not fused),
                phi: ((lambda: network._phi_and_histograms(network.LayerStats(pre_st, post_st), act, z, chunk, buf))
                      if fused else (lambda: act.phi(z, out=buf, work=bufs))),
                "(numpy's phi)": lambda: PLAIN[act_name](z),  # for comparison, not in the totals
                "post stats": lambda: post_st.update(post, work=work, histogram=not fused),
                "d*phi' and sum": lambda: activations.grad_pre(act, d, post, buf, bufs[0]),  # one pass
                "grad_pre stats": lambda: grad_st.update(gp, work=work),
                "matmul a.T@gp": lambda: np.matmul(a.T, gp, out=gw),
                "matmul gp@W.T": lambda: np.matmul(gp, W.T, out=buf),
            }
            t = best_of(steps, repeat, time.thread_time, quiet=0)
            mm = t["matmul a@W"]
            mm3 = mm + t["matmul a.T@gp"] + t["matmul gp@W.T"]
            plain_phi = t.pop("(numpy's phi)")
            fwd = sum(t[k] for k in ("matmul a@W", "pre stats", phi, "post stats"))
            print(f"{act_name:>7} {dtype}: " + "  ".join(f"{k} {v:.2f}" for k, v in t.items())
                  + f"  | numpy's phi {plain_phi:.2f} | forward {fwd:.2f} = {fwd / mm:.2f} x its matmul;"
                  f" f+b {sum(t.values()):.2f} = {sum(t.values()) / mm3:.2f} x its 3 matmuls")
    # the statistics of one pre-activation tensor, pass by pass: the kernels' two, NumPy's several
    z = np.random.default_rng(0).standard_normal((1000, 500))
    flat = z.reshape(-1)
    f, idx = np.empty_like(flat), np.empty(flat.shape, np.int64)
    mask = np.empty(flat.shape, np.bool_)
    parts = {}
    if kernels.LIB is not None:
        parts = {"kernel scan": lambda: kernels.scan(z, -2.6, 2.6),
                 "kernel hist": lambda: kernels.hist_adaptive(flat, 8.0, -40, 80)}
    parts |= {"min+max": lambda: (flat.min(), flat.max()),
             "sum+sumsq": lambda: (np.sum(flat), np.einsum("i,i->", flat, flat)),
             "row sums+sumsq": lambda: (np.add.reduce(z, axis=1), np.einsum("ij,ij->i", z, z)),
             "zeros": lambda: np.count_nonzero(np.equal(flat, 0, out=mask)),
             "hist: x*2^-e": lambda: np.multiply(flat, 0.125, out=f),
             "hist: floor-start": lambda: (np.floor(f, out=f), np.subtract(f, -40, out=f)),
             "hist: to int64": lambda: np.copyto(idx, f, casting="unsafe"),
             "hist: bincount": lambda: np.bincount(idx, minlength=50)}
    t = best_of(parts, repeat, time.thread_time, quiet=0)
    print("statistics of one float64 tensor (1000 x 500), pass by pass: "
          + "  ".join(f"{k} {v:.2f}" for k, v in t.items()))
    if blas:
        blas[0](os.cpu_count() or 1)


MEMORY_CASE = dict(layers=20, width=1024, batch=32768, dtype="float32")
GIB = 2**30


def memory():
    """Peak resident memory of the big float32 case, forward and backward, in a fresh process, with
    the engine's estimate and automatic chunk size. The peak is the child's VmHWM (/proc): its
    getrusage ru_maxrss would also count the parent's resident memory at the fork, kept by Linux
    across exec (this process, after the table, holds about 1 GB)."""
    code = ("import time\n"
            "from actstats import network, RunConfig\n"
            f"c = RunConfig.from_dict({MEMORY_CASE!r})\n"
            "t = time.perf_counter(); p = network.run(c)\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
            "print(p.chunk_size, time.perf_counter() - t, network.estimate_bytes(c), int(hwm) * 1024)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    chunk, seconds, estimate, peak = out.stdout.split()
    peak = int(peak)
    held = 2 * 20 * 1024 * 32768 * 4  # every layer's post and phi' of the whole batch, float32
    print(f"memory: {MEMORY_CASE}, forward + backward: {float(seconds):.1f} s, automatic chunk {chunk} rows, "
          f"peak resident {peak / 2**20:.0f} MiB (goal <= 1024 MiB: {'met' if peak <= GIB else 'NOT met'}), "
          f"engine's estimate {int(estimate) / 2**20:.0f} MiB; every post and phi' held at once would be "
          f"{held / 2**30:.1f} GiB")
    return peak


def actstats_cmd() -> list:
    exe = os.path.join(os.path.dirname(sys.executable), "actstats")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "actstats"]


def timed(args, repeat: int) -> float:
    """Best wall time (s) of ``actstats ARGS``; ``args(tmp)`` gets a fresh folder each time."""
    import tempfile

    best = float("inf")
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            subprocess.run(actstats_cmd() + args(tmp), check=True, capture_output=True,
                           env={**os.environ, "MPLBACKEND": "Agg"})
            best = min(best, time.perf_counter() - t0)
    return best


def startup(repeat: int):
    run = ["run", "--init", "xavier", "--act", "relu", "--layers", "10"]
    help_s = timed(lambda tmp: ["--help"], repeat)
    run_s = timed(lambda tmp: run + ["--out", tmp], repeat)
    no_plots = timed(lambda tmp: run + ["--out", tmp, "--no-plots"], repeat)
    print(f"start-up: actstats --help {help_s:.2f} s (goal < 0.3 s); "
          f"actstats {' '.join(run)} (PNGs included) {run_s:.2f} s (goal < 3 s), with --no-plots {no_plots:.2f} s")
    return help_s, run_s


SWEEP = """name: bench-sweep
base: {layers: 10, width: 200, batch: 500}
grid:
  init: [xavier, he, lecun, "normal:std=0.01"]
  act: [tanh, relu]
seeds: 2
"""


def sweep(repeat: int):
    """16 small runs with --jobs 1 and --jobs 2 (PNGs included); their summary.csv must be equal."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench-sweep.yaml")
        with open(path, "w") as fh:
            fh.write(SWEEP)
        csv = {}

        def args(jobs):
            def make(out):
                csv[jobs] = os.path.join(out, "bench-sweep", "summary.csv")
                return ["sweep", path, "--jobs", str(jobs), "--out", out, "--quiet"]
            return make

        # interleaved, so that other load on the machine falls on both alike
        one = two = float("inf")
        same = True
        for _ in range(repeat):
            for jobs in (1, 2):
                with tempfile.TemporaryDirectory() as out:
                    t0 = time.perf_counter()
                    subprocess.run(actstats_cmd() + args(jobs)(out), check=True, capture_output=True,
                                   env={**os.environ, "MPLBACKEND": "Agg"})
                    t = time.perf_counter() - t0
                    with open(csv[jobs]) as fh:
                        csv[jobs] = fh.read()
                if jobs == 1:
                    one, first = min(one, t), csv[1]
                else:
                    two = min(two, t)
                    same = same and csv[2] == first
    print(f"sweep of 16 small runs (10 x 200, batch 500, PNGs included): --jobs 1 {one:.2f} s, --jobs 2 "
          f"{two:.2f} s, speed-up {one / two:.2f}x (goal >= 1.7x); summary.csv identical: {same}")
    return one / two, same


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="default size only, 3 repetitions")
    parser.add_argument("--repeat", type=int, help="repetitions (best kept); default 7, --quick 3")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch script")
    parser.add_argument("--size", choices=list(SIZES), action="append", help="only this size (repeatable)")
    parser.add_argument("--act", choices=ACTS, action="append", help="only this activation (repeatable)")
    parser.add_argument("--dtype", choices=DTYPES, action="append", help="only this dtype (repeatable)")
    parser.add_argument("--profile", action="store_true", help="where one layer's time goes")
    parser.add_argument("--memory", action="store_true", help="peak memory of the big float32 case")
    parser.add_argument("--startup", action="store_true", help="start-up and the README's default run")
    parser.add_argument("--sweep", action="store_true", help="a sweep of 16 small runs, --jobs 2 vs 1")
    parser.add_argument("--all", action="store_true", help="the table, then profile, memory, start-up, sweep")
    args = parser.parse_args()
    repeat = args.repeat or (3 if args.quick else 7)
    extras = args.profile or args.memory or args.startup or args.sweep
    if args.all or not extras:
        sizes = args.size or (["default"] if args.quick else list(SIZES))
        bench(sizes, repeat, not args.no_torch, args.act or ACTS, args.dtype or DTYPES)
        print()
    if args.all or args.profile:
        profile(max(repeat, 10))
    if args.all or args.memory:
        memory()
    if args.all or args.startup:
        startup(repeat)
    if args.all or args.sweep:
        sweep(max(1, min(repeat, 2)))


if __name__ == "__main__":
    main()
