"""Faults: numbers that overflow to inf/NaN are measured, not fatal; writes that fail leave nothing
that looks complete and never damage a finished result; runs too big for memory are refused first."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from actstats import RunConfig, run_experiment
from actstats import results as results_module
from actstats.cli import cli
from actstats.network import Network, input_rows

# --- numerical faults --------------------------------------------------------------------------------

# (config, layer where pre/post stop being finite): each of them overflows somewhere
BLOWUPS = {
    # the example: all-ones weights, ReLU, 100 layers; float32 overflows (float64 with width 100
    # reaches only ~1e200 by layer 100, hence the 200-layer float64 variant)
    "ones-relu-100-f32": ({"init": "ones", "act": "relu", "layers": 100, "width": 100, "batch": 200,
                          "dtype": "float32"}, 20),
    "ones-relu-200-f64": ({"init": "ones", "act": "relu", "layers": 200, "width": 100, "batch": 200}, 155),
    "std10-relu-200-f64": ({"init": "normal:std=10", "act": "relu", "layers": 200, "width": 100,
                           "batch": 200}, 167),
    # tanh is bounded: its forward pass stays finite, its gradients overflow float32 toward the input
    "std10-tanh-100-f32": ({"init": "normal:std=10", "act": "tanh", "layers": 100, "width": 100,
                           "batch": 200, "dtype": "float32"}, None),
}


def forward_oracle(config: RunConfig):
    """pre and post of every layer by plain NumPy on the run's own weights and input."""
    net = Network.build(config)
    dtype = np.dtype(config.dtype)
    a = input_rows(config, config.batch, dtype)
    phi = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh}[config.act]
    out = []
    with np.errstate(all="ignore"):
        for W, b in zip(net.weights, net.biases):
            z = a @ W + b
            a = phi(z)
            out.append({"pre": z, "post": a})
    return out


@pytest.fixture(scope="module", params=list(BLOWUPS))
def blowup(request):
    data, first_bad = BLOWUPS[request.param]
    config = RunConfig.from_dict(data)
    return config, first_bad, run_experiment(config)


def test_nonfinite_values_are_counted_and_the_rest_measured_from_finite_values(blowup):
    config, first_bad, result = blowup
    oracle = forward_oracle(config)
    any_bad = False
    for layer, mine in zip(result.layers, oracle):
        for tensor in ("pre", "post"):
            x = mine[tensor].astype(np.float64)
            finite = x[np.isfinite(x)]
            s = layer[tensor]
            assert s["count"] == x.size
            assert s["frac_nonfinite"] == (x.size - finite.size) / x.size, (layer["layer"], tensor)
            any_bad |= finite.size < x.size
            if finite.size and config.dtype == "float64":
                # float32 is left out here: this matmul and the run's (two row halves) round
                # differently by an ulp, and 100 chaotic layers turn that into different values
                expect_mean = float(np.mean(finite * 2.0**-600)) * 2.0**600  # finite, as it must be
                assert (s["min"], s["max"]) == (finite.min(), finite.max())
                big = max(abs(finite.min()), abs(finite.max()))
                assert abs(s["mean"] - expect_mean) <= 1e-11 * big, (layer["layer"], tensor)
            elif finite.size:
                assert s["min"] <= s["mean"] <= s["max"] and np.isfinite(s["std"])
    assert any_bad == (first_bad is not None)
    if first_bad is None:  # the gradients are where it overflows
        assert max(layer["grad_pre"]["frac_nonfinite"] for layer in result.layers) > 0


def test_histograms_stay_valid_when_values_overflow(blowup):
    _, _, result = blowup
    h = result.histograms
    for tensor in ("pre", "post", "grad_pre", "grad_weight"):
        for i, layer in enumerate(result.layers):
            s = layer[tensor]
            n_finite = s["count"] - round(s["frac_nonfinite"] * s["count"])
            counts, edges = h[f"{tensor}_counts"][i], h[f"{tensor}_edges"][i]
            # edges finite and increasing; near the float limit the top ones are clipped to it (empty)
            width = np.diff(edges)
            assert counts.min() >= 0 and np.all(np.isfinite(edges)) and np.all(width >= 0)
            assert np.all(width[counts > 0] > 0)
            assert counts.sum() + h[f"{tensor}_underflow"][i] + h[f"{tensor}_overflow"][i] == n_finite
            if n_finite and h[f"{tensor}_underflow"][i] + h[f"{tensor}_overflow"][i] == 0:
                assert edges[0] <= s["min"] and s["max"] <= edges[-1]


def test_the_diagnosis_names_the_layer_where_values_stop_being_finite(blowup):
    config, first_bad, result = blowup
    found = {f["code"]: f for f in result.diagnosis["findings"]}
    if first_bad is None:
        grads = [l["layer"] for l in result.layers if l["grad_pre"]["frac_nonfinite"] > 0]
        assert "nonfinite" not in found and "grad_nonfinite" in found
        assert f"at layer {max(grads)}" in found["grad_nonfinite"]["text"] or grads
        return
    # the oracle's first layer with an inf/NaN
    oracle = forward_oracle(config)
    first = next(i + 1 for i, t in enumerate(oracle) if not np.all(np.isfinite(t["pre"])))
    assert first == first_bad
    assert result.diagnosis["verdict"] == "nonfinite"
    assert found["nonfinite"]["layer"] == first_bad
    assert found["nonfinite"]["text"].startswith(f"activations explode: values stop being finite at layer {first_bad} ")
    # the trend findings are computed from finite values only, so they must not claim a collapse
    assert "collapse" not in found and "explode" not in found


@pytest.mark.parametrize("name", ["ones-relu-100-f32", "std10-relu-200-f64", "std10-tanh-100-f32"])
def test_no_numpy_warning_reaches_the_terminal(tmp_path, name):
    """-W error turns any warning into an exception, which the CLI would report as an internal error;
    the figures are drawn too (matplotlib gets the histograms of overflowing layers)."""
    data, _ = BLOWUPS[name]
    args = [f"--{k.replace('_', '-')}={v}" for k, v in data.items()]
    out = subprocess.run([sys.executable, "-W", "error", "-m", "actstats", "run", *args, "--out",
                          str(tmp_path), "--name", "x", "--quiet"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
                              "MPLBACKEND": "Agg"})
    assert (out.returncode, out.stderr, out.stdout) == (0, "", "")
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == [
        "config.yaml", "histograms.npz", "histograms.png", "profile.png", "stats.csv", "stats.json"]


# --- write faults ------------------------------------------------------------------------------------

RUN = ["run", "--layers", "3", "--width", "8", "--batch", "16", "--no-plots", "--quiet"]


def listing(folder: Path) -> dict:
    """Every file below ``folder`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def invoke(*args):
    return CliRunner().invoke(cli, [*RUN, *args], catch_exceptions=False)


def test_results_under_a_regular_file_is_one_error_line(tmp_path):
    (tmp_path / "f").write_text("a file, not a folder")
    result = invoke("--out", str(tmp_path / "f" / "sub"), "--name", "x")
    assert result.exit_code == 1
    assert result.output == f"Error: cannot write results to {tmp_path / 'f' / 'sub' / 'x'}: Not a directory.\n"


def test_read_only_results_folder_is_one_error_line_and_writes_nothing(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    probe = ro / "probe"
    try:
        probe.write_text("")  # root ignores the mode bits: then fail the way a read-only mount does
        probe.unlink()

        def read_only(*a, **k):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        monkeypatch.setattr(results_module.tempfile, "mkdtemp", read_only)
        reason = "Read-only file system"
    except PermissionError:
        reason = "Permission denied"
    result = invoke("--out", str(ro), "--name", "x")
    ro.chmod(0o755)
    assert result.exit_code == 1
    assert result.output == f"Error: cannot write results to {ro / 'x'}: {reason}.\n"
    assert listing(ro) == {}


def failing_at(monkeypatch, target: str, error=errno.ENOSPC):
    """Make the write of ``target`` (a file name, or "swap" for the final rename of the folder) fail."""
    real_write, real_replace = results_module.write_atomic, os.replace

    def write_atomic(path, data):
        if Path(path).name == target:
            raise OSError(error, os.strerror(error))
        return real_write(path, data)

    def replace(src, dst):
        if target == "swap" and str(src).endswith(".partial"):
            raise OSError(error, os.strerror(error))
        return real_replace(src, dst)

    monkeypatch.setattr(results_module, "write_atomic", write_atomic)
    monkeypatch.setattr(results_module.os, "replace", replace)


@pytest.mark.parametrize("target", ["stats.csv", "histograms.npz", "stats.json", "swap"])
def test_a_write_failing_midway_leaves_no_folder_that_looks_complete(tmp_path, monkeypatch, target):
    failing_at(monkeypatch, target)
    result = invoke("--out", str(tmp_path), "--name", "x")
    assert result.exit_code == 1
    assert result.output == f"Error: cannot write results to {tmp_path / 'x'}: No space left on device.\n"
    assert listing(tmp_path) == {}  # no folder, no staging, no temporary file


@pytest.mark.parametrize("target", ["histograms.npz", "stats.json", "swap"])
def test_a_failing_run_never_overwrites_a_complete_result(tmp_path, monkeypatch, target):
    assert invoke("--out", str(tmp_path), "--name", "x", "--seed", "1").exit_code == 0
    before = listing(tmp_path)
    assert "x/stats.json" in before
    failing_at(monkeypatch, target)
    for extra in (["--seed", "1"], ["--seed", "2", "--overwrite"]):  # the same run, and a replacement
        result = invoke("--out", str(tmp_path), "--name", "x", *extra)
        assert result.exit_code == 1 and result.output.startswith("Error: cannot write results to ")
        assert listing(tmp_path) == before
    monkeypatch.undo()
    assert invoke("--out", str(tmp_path), "--name", "x", "--seed", "2", "--overwrite").exit_code == 0
    assert "seed: 2" in (tmp_path / "x" / "config.yaml").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_a_kill_between_moving_the_old_result_aside_and_the_swap_is_undone_on_resume(tmp_path):
    """save() moves a complete result to .<run>.old-<pid> just before the swap; a kill -9 right there
    leaves it hidden. The next sweep puts it back (and drops a stale copy whose run exists)."""
    from actstats.sweep import clean_stale

    config = RunConfig.from_dict({"layers": 2, "width": 4, "batch": 4})
    result = run_experiment(config)
    results_module.save(result, tmp_path / "a", plots=False)
    results_module.save(result, tmp_path / "b", plots=False)
    os.replace(tmp_path / "a", tmp_path / ".a.old-4242")  # killed: a's new folder never arrived
    results_module.save(result, tmp_path / ".b.old-4243", plots=False)  # killed after b's swap
    (tmp_path / ".c.1234.partial").mkdir()
    before = listing(tmp_path / ".a.old-4242")
    clean_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    assert listing(tmp_path / "a") == before


# --- resource limits ---------------------------------------------------------------------------------

def test_a_sweep_refuses_a_run_too_big_for_memory_before_submitting_it(tmp_path, monkeypatch):
    from actstats import network
    from actstats.sweep import SerialExecutor, SweepConfig, execute, run_sweep

    sweep = SweepConfig.from_dict({"name": "m", "base": {"layers": 2, "batch": 8},
                                   "grid": {"width": [8, 4000]}}, where="s.yaml")
    small, big = (RunConfig.from_dict({"layers": 2, "batch": 8, "width": w}) for w in (8, 4000))
    have = (network.estimate_bytes(small) + network.estimate_bytes(big)) // 2
    monkeypatch.setattr(network, "available_bytes", lambda: have)
    submitted = []

    def task(config, plots):
        submitted.append(config.width)
        return execute(config, plots)

    state = run_sweep(sweep, tmp_path, executor=SerialExecutor(), plots=False, task=task)
    assert submitted == [8]
    assert state.status == {"width=8": "done", "width=4000": "failed"}
    need = network.estimate_bytes(big)
    assert state.failures["width=4000"]["error"] == "ConfigError"
    assert state.failures["width=4000"]["message"] == (
        f"this run needs an estimated {network.gib(need)} of memory but only {network.gib(have)} is "
        "available; lower --width or --layers, or use --dtype float32.")
    assert (tmp_path / "m" / "failed" / "width=4000.json").is_file()


# Peak RSS from VmHWM, this process's own: getrusage's ru_maxrss survives exec, so under a pytest
# process that had grown to 1.3 GiB both sweeps reported that figure and the check compared nothing.
# Open files sampled every 50 ms; their 90th percentile is what a leak would raise (a rare transient
# sample, a pipe of a starting worker, made the maximum flaky).
LEAK_PROBE = """
import json, os, sys, threading, time
from actstats.cli import cli
fds = []
def watch():
    while True:
        fds.append(len(os.listdir("/proc/self/fd")))
        time.sleep(0.05)
threading.Thread(target=watch, daemon=True).start()
code = cli.main(sys.argv[1:], standalone_mode=False)
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(json.dumps({"code": code, "peak_rss_kib": hwm, "fds_max": max(fds),
                  "fds_p90": sorted(fds)[int(0.9 * (len(fds) - 1))], "fds_end": len(os.listdir("/proc/self/fd"))}))
"""


def sweep_footprint(tmp_path, runs: int) -> dict:
    """The sweep process's own peak RSS and open file descriptors over a sweep of ``runs`` tiny runs."""
    cfg = tmp_path / f"tiny{runs}.yaml"
    cfg.write_text(f"name: tiny{runs}\nbase: {{layers: 2, width: 8, batch: 8}}\nruns: [{{init: he}}]\n"
                   f"seeds: {runs}\n")
    out = subprocess.run([sys.executable, "-c", LEAK_PROBE, "sweep", str(cfg), "--out", str(tmp_path),
                          "--no-plots", "--quiet", "--no-check", "--jobs", "2"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    import json

    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["code"] == 0, out.stderr
    assert len(list((tmp_path / f"tiny{runs}").glob("*/stats.json"))) == runs
    return data


@pytest.mark.slow
def test_a_sweep_of_1000_tiny_runs_does_not_leak_memory_or_file_handles(tmp_path):
    small, large = sweep_footprint(tmp_path, 100), sweep_footprint(tmp_path, 1000)
    print(f"\n100 runs: {small}\n1000 runs: {large}")
    # the sweep keeps every run's result for its summary (SweepRun.results, ~45 KiB for such a run):
    # growth in proportion is expected, a leak (figures, arrays, pools not freed) would be far more
    assert small["peak_rss_kib"] < 200 * 1024  # the sweep process's own, not its parent's
    assert large["peak_rss_kib"] <= small["peak_rss_kib"] + 900 * 64
    assert large["fds_p90"] <= small["fds_p90"] + 1 and large["fds_end"] <= small["fds_end"] + 1
    assert large["fds_max"] <= small["fds_max"] + 8  # one leaked per run would be +900


def test_results_get_the_permissions_of_plain_files_and_folders(tmp_path):
    """mkstemp/mkdtemp make private 0600/0700 entries; a results folder is shared like any other."""
    old = os.umask(0o022)
    try:
        path = run_experiment(RunConfig(layers=2, width=8, batch=8)).save(tmp_path / "r", plots=False)
    finally:
        os.umask(old)
    assert (Path(path).stat().st_mode & 0o777) == 0o755
    modes = {f.name: f.stat().st_mode & 0o777 for f in Path(path).iterdir()}
    assert modes == {name: 0o644 for name in ("config.yaml", "stats.csv", "histograms.npz", "stats.json")}
