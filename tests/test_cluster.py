"""Sweeps on a Dask cluster (needs the extra: pip install -e '.[test,cluster]', as CI does).

A real scheduler and two worker processes on 127.0.0.1, started with Dask's own command line; the
sweep goes through `actstats sweep --cluster tcp://127.0.0.1:PORT` and must give the summary.csv of a
local --jobs 1 run byte for byte, also when one worker is killed midway and when a local run is
finished on the cluster."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import distributed
from actstats import cluster as clustering
from actstats.cli import cli
from actstats.cluster import DaskExecutor
from actstats.sweep import SweepConfig, execute, run_sweep

ROOT = Path(__file__).resolve().parents[1]
SWEEP = """\
name: small
base: {layers: 3, width: 16, batch: 32}
grid:
  init: [xavier, he, "normal:std=0.01"]
  act: [tanh, relu]
seeds: 2
"""
RUNS = 12


def dask_env():
    # the workers import actstats from this tree (and this file, for its test tasks), with one BLAS
    # thread, as the README tells
    path = [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path),
            "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class Cluster:
    """`dask scheduler` and two `dask worker --nthreads 1 --no-nanny` processes (no nanny: a killed
    worker stays dead, as when its machine goes away)."""

    def __init__(self, folder: Path, workers: int = 2):
        self.folder, self.workers = folder, workers
        info = folder / "scheduler.json"
        self.procs = [self._start(folder, "scheduler", ["distributed.cli.dask_scheduler", "--host",
                                                         "127.0.0.1", "--port", "0", "--no-dashboard",
                                                         "--scheduler-file", str(info)])]
        deadline = time.monotonic() + 60
        while not info.is_file() or not info.read_text().strip():
            assert self.procs[0].poll() is None, (folder / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        time.sleep(0.2)  # the file is written in one go, but let it land
        self.address = json.loads(info.read_text())["address"]
        assert self.address.startswith("tcp://127.0.0.1:")
        self.ensure_workers()

    def ensure_workers(self):
        """Start workers until `workers` are alive (after a test killed one)."""
        with distributed.Client(self.address, timeout=30) as client:
            alive = len(client.scheduler_info(n_workers=-1)["workers"])
            for k in range(alive, self.workers):
                self.procs.append(self._start(self.folder, f"worker{len(self.procs)}", [
                    "distributed.cli.dask_worker", self.address, "--nthreads", "1", "--no-nanny",
                    "--no-dashboard", "--host", "127.0.0.1", "--memory-limit", "0"]))
            client.wait_for_workers(self.workers, timeout=60)

    @staticmethod
    def _start(folder, name, args):
        log = open(folder / f"{name}.log", "wb")
        return subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT,
                                env=dask_env(), cwd=folder)

    def pids(self):
        return {p.pid for p in self.procs}

    def stop(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    running = Cluster(tmp_path_factory.mktemp("dask"))
    yield running
    running.stop()


@pytest.fixture
def scheduler(dask_cluster):
    """The address of a scheduler with two live workers."""
    dask_cluster.ensure_workers()
    return dask_cluster.address


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The reference: the same sweep with the default local process pool, one worker."""
    folder = tmp_path_factory.mktemp("local")
    cfg = folder / "small.yaml"
    cfg.write_text(SWEEP)
    result = CliRunner().invoke(cli, ["sweep", str(cfg), "--out", str(folder), "--jobs", "1",
                                      "--no-plots", "--quiet"])
    assert result.exit_code == 0, result.output
    return cfg, folder / "small"


def sweep_on(address, cfg, out, *extra):
    return CliRunner().invoke(cli, ["sweep", str(cfg), "--out", str(out), "--cluster", address,
                                    "--no-plots", *extra])


def test_a_sweep_on_a_scheduler_gives_the_local_summary_byte_for_byte(scheduler, local_run, tmp_path):
    cfg, local = local_run
    result = sweep_on(scheduler, cfg, tmp_path)
    assert result.exit_code == 0, result.output
    assert f"{RUNS} runs computed, 0 kept, 0 failed, 2 worker(s)" in " ".join(result.output.split())
    assert (tmp_path / "small" / "summary.csv").read_bytes() == (local / "summary.csv").read_bytes()
    # every run folder was written here, by the client, with the local run's numbers
    a = json.loads((tmp_path / "small" / "init=he_act=relu_seed=1" / "stats.json").read_text())
    b = json.loads((local / "init=he_act=relu_seed=1" / "stats.json").read_text())
    assert a["layers"] == b["layers"] and a["config"] == b["config"]


def test_a_sweep_started_locally_is_finished_on_the_cluster(scheduler, local_run, tmp_path):
    cfg, local = local_run
    runner = CliRunner()
    # start locally: 5 of the 12 runs (the others as if the local sweep had been interrupted)
    assert runner.invoke(cli, ["sweep", str(cfg), "--out", str(tmp_path), "--jobs", "1", "--no-plots",
                               "--quiet"]).exit_code == 0
    folder = tmp_path / "small"
    names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert len(names) == RUNS
    kept, dropped = names[:5], names[5:]
    for name in dropped:
        subprocess.run(["rm", "-r", str(folder / name)], check=True)
    stamps = {name: (folder / name / "stats.json").stat().st_mtime_ns for name in kept}
    # ... and finish on the cluster: only the 7 missing runs are computed
    result = sweep_on(scheduler, cfg, tmp_path)
    assert result.exit_code == 0, result.output
    assert f"{RUNS - 5} runs computed, 5 kept, 0 failed" in " ".join(result.output.split())
    assert {name: (folder / name / "stats.json").stat().st_mtime_ns for name in kept} == stamps
    assert (folder / "summary.csv").read_bytes() == (local / "summary.csv").read_bytes()


def test_workers_with_another_actstats_version_are_refused_before_any_run(scheduler, tmp_path,
                                                                          monkeypatch):
    import actstats

    cfg = tmp_path / "s.yaml"
    cfg.write_text(SWEEP)
    real = actstats.__version__
    monkeypatch.setattr(actstats, "__version__", "0.0.1")  # this side; the workers have the real one
    result = sweep_on(scheduler, cfg, tmp_path)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: 2 Dask worker(s) run actstats {real} "
                                    f"(e.g. tcp://127.0.0.1:")
    assert result.output.endswith("this is 0.0.1; install the same version on every worker.\n")
    assert not (tmp_path / "small").exists()


def test_a_killed_worker_s_run_is_computed_by_the_other_worker(dask_cluster, scheduler, local_run,
                                                              tmp_path):
    from actstats import report

    cfg, local = local_run
    sweep = SweepConfig.from_yaml(cfg)
    killed = []
    with DaskExecutor(scheduler) as executor:
        assert executor.slots == 2
        pids = executor.client.run(os.getpid)  # worker address -> process id
        done = []

        def kill_one_worker_midway():
            while len(done) < 2:  # midway
                time.sleep(0.02)
            for _ in range(500):  # then kill the first worker seen computing a run
                busy = {addr: keys for addr, keys in executor.client.processing().items() if keys}
                if busy:
                    addr, keys = next(iter(busy.items()))
                    assert pids[addr] in dask_cluster.pids()  # one of the processes started here
                    os.kill(pids[addr], signal.SIGKILL)
                    killed.append((addr, keys))
                    return
                time.sleep(0.01)

        killer = threading.Thread(target=kill_one_worker_midway, daemon=True)
        killer.start()
        state = run_sweep(sweep, tmp_path, executor=executor, plots=False, task=slow,
                          on_event=lambda event, run, progress: event == "done" and done.append(run))
        killer.join(timeout=10)
        assert killed, state.failures
        (dead, keys), = killed
        assert list(executor._workers()) == [a for a in pids if a != dead] and executor.slots == 1
        assert executor.status() == "1 worker: 0"
        # the scheduler's record of the killed run: processing twice (on the dead worker, then on
        # the other one), finished in memory; the only worker that reports computing it is the other
        story = executor.client.story(*keys)
        moves = [e[3] for e in story if e[0] == "scheduler"]
        first = moves.index("processing")
        again = moves.index("processing", first + 1)
        assert "released" in moves[first:again] and moves[again + 1] == "memory", moves
        assert {e[0] for e in story if e[0] != "scheduler"} == {a for a in pids if a != dead}
    assert state.failures == {} and sorted(state.status.values()) == ["done"] * RUNS
    assert report.summary_csv(sweep, state.results) == (local / "summary.csv").read_text()


def slow(config, plots):
    """A run that takes long enough to be caught midway."""
    time.sleep(0.5)
    return execute(config, plots)


def dies(config, plots):
    """A run that takes its worker process down with it (as the kernel's OOM killer would)."""
    if config.init == "he":
        os._exit(1)
    return execute(config, plots)


def test_a_run_that_kills_every_worker_it_meets_is_recorded_failed_after_a_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(clustering, "ALLOWED_FAILURES", 1)  # tried on 2 workers, then given up
    sweep = SweepConfig.from_dict({"name": "dying", "base": {"layers": 3, "width": 16, "batch": 32},
                                   "grid": {"init": ["xavier", "he"]}}, where="d.yaml")
    with DaskExecutor("local:2") as executor:
        state = run_sweep(sweep, tmp_path, executor=executor, plots=False, task=dies)
    assert state.status == {"init=xavier": "done", "init=he": "failed"}
    record = json.loads((tmp_path / "dying" / "failed" / "init=he.json").read_text())
    assert record["error"] == "WorkerDied"
    assert record["message"].startswith("its worker process died (KilledWorker: ")
    assert "on 2 different workers" in record["message"]
    assert (tmp_path / "dying" / "init=xavier" / "stats.json").is_file()


def test_local_n_starts_and_stops_its_own_cluster(local_run, tmp_path):
    cfg, local = local_run
    result = CliRunner().invoke(cli, ["sweep", str(cfg), "--out", str(tmp_path), "--cluster", "local:2",
                                      "--no-plots", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "small" / "summary.csv").read_bytes() == (local / "summary.csv").read_bytes()


def test_an_unreachable_scheduler_is_one_line_within_the_timeout(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "s.yaml"
    cfg.write_text(SWEEP)
    monkeypatch.setattr(clustering, "CONNECT_TIMEOUT", 2.0)
    t0 = time.monotonic()
    result = sweep_on(f"tcp://127.0.0.1:{port}", cfg, tmp_path)
    elapsed = time.monotonic() - t0
    assert result.exit_code == 1
    assert result.output == (f"Error: cannot reach the Dask scheduler at tcp://127.0.0.1:{port}: "
                             f"Timed out trying to connect to tcp://127.0.0.1:{port} after 2 s\n")
    assert 2.0 <= elapsed < 8.0
    assert not (tmp_path / "small").exists()  # nothing written


@pytest.mark.parametrize("address, message", [
    ("local:0", "--cluster local:0: the number of workers must be 1..1024."),
    ("127.0.0.1:8786", "--cluster '127.0.0.1:8786': expected tcp://HOST:PORT (a running Dask scheduler) "
                       "or local:N (N local worker processes)."),
])
def test_a_malformed_cluster_address_is_a_usage_error(tmp_path, address, message):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(SWEEP)
    result = sweep_on(address, cfg, tmp_path)
    assert (result.exit_code, result.output) == (2, f"Error: {message}\n")


def test_jobs_and_cluster_conflict(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(SWEEP)
    result = sweep_on("local:2", cfg, tmp_path, "--jobs", "2")
    assert (result.exit_code, result.output) == (
        2, "Error: --jobs and --cluster conflict: on a cluster the workers are the cluster's.\n")


def run_python(code, tmp_path):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**dask_env(), "MPLBACKEND": "Agg"}, timeout=300)


def test_without_dask_a_cluster_asks_for_the_extra_and_a_local_sweep_still_runs(tmp_path):
    (tmp_path / "s.yaml").write_text(SWEEP)
    code = ("import sys; sys.modules['dask'] = sys.modules['distributed'] = None\n"  # import fails
            "from actstats.cli import main\n"
            "sys.argv = ['actstats', 'sweep', 's.yaml', '--cluster', sys.argv[1], '--no-plots', '-q']\n"
            "main()\n")
    proc = subprocess.run([sys.executable, "-c", code, "tcp://127.0.0.1:8786"], capture_output=True,
                          text=True, cwd=tmp_path, env=dask_env(), timeout=120)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "Error: --cluster needs Dask: pip install 'actstats[cluster]'\n"
    assert not (tmp_path / "small").exists()


def test_a_local_sweep_never_imports_dask(tmp_path):
    (tmp_path / "s.yaml").write_text(SWEEP)
    proc = run_python(
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from actstats.cli import cli\n"
        "r = CliRunner().invoke(cli, ['sweep', 's.yaml', '--jobs', '2', '--no-plots', '-q'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n", tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "[]\n"), proc.stderr
    assert (tmp_path / "results" / "small" / "summary.csv").is_file()


def test_local_n_above_the_cores_runs_but_warns_once_on_stderr(tmp_path, monkeypatch):
    # unlike --jobs, local:N keeps the N workers the user asked for (e.g. to rehearse losing one)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    cfg = tmp_path / "s.yaml"
    cfg.write_text("name: one\nbase: {layers: 2, width: 8, batch: 10}\nruns: [{init: he}]\n")
    result = CliRunner(env={"COLUMNS": "400"}).invoke(
        cli, ["sweep", str(cfg), "--out", str(tmp_path), "--cluster", "local:2", "--no-plots"])
    assert result.exit_code == 0, result.output
    warning = ("warning: --cluster local:2 > 1 core(s): its 2 workers share them, so the sweep is no "
               "faster (and takes more memory).")
    assert result.stderr.splitlines()[0] == warning
    assert result.stderr.count("local:2") == 1
    assert ", 2 worker(s), " in result.stderr.splitlines()[-1]
