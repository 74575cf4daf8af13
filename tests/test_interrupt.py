"""Interrupting a real sweep (a subprocess): Ctrl-C and SIGTERM stop it cleanly and say how to resume,
``kill -9`` at random moments loses nothing (a resume gives the bytes of an uninterrupted sweep's
summary.csv), no worker outlives the sweep, and a second sweep on the same folder refuses to start."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SWEEP = """name: k
base: {layers: 4, width: 64, batch: 600}
grid: {init: [xavier, he, lecun, normal, xavier_uniform, he_uniform, normal:std=0.5, uniform],
       act: [tanh, relu]}
seeds: 2
"""
N_RUNS = 32
RESUME = "run the same command again to resume."


def command(cfg, out, *extra):
    return [sys.executable, "-m", "actstats", "sweep", str(cfg), "--out", str(out), "--jobs", "2",
            "--no-plots", "--quiet", *extra]


MARK = f"ACTSTATS_TEST_{os.getpid()}"  # in the environment of every sweep process and worker below


def env():
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "MPLBACKEND": "Agg",
            MARK: "1"}


def marked() -> set:
    """Live processes started by these tests (the mark is inherited by workers), wherever they are."""
    found = set()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"{MARK}=1".encode() in environ.read_bytes().split(b"\0"):
                found.add(int(environ.parent.name))
        except OSError:
            continue
    return alive(found)


def complete_runs(folder: Path) -> set:
    return {p.parent.name for p in folder.glob("*/stats.json")}


def descendants(pid: int) -> set:
    """Every live process below ``pid`` (read from /proc)."""
    parent_of = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if fields[0] != "Z":
            parent_of[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parent_of.items() if pp in frontier} - found
        found |= frontier
    return found


def alive(pids) -> set:
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if state[state.rindex(")") + 2] != "Z":
            out.add(pid)
    return out


def wait_gone(pids, seconds=15.0) -> set:
    deadline = time.time() + seconds
    while alive(pids) and time.time() < deadline:
        time.sleep(0.05)
    return alive(pids)


def start(cfg, out, *extra):
    return subprocess.Popen(command(cfg, out, *extra), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def wait_for_runs(proc, folder, n, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline and len(complete_runs(folder)) < n and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, "the sweep ended before it could be interrupted: " + proc.stderr.read()


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """summary.csv of the sweep run once without interruption."""
    tmp = tmp_path_factory.mktemp("baseline")
    cfg = tmp / "s.yaml"
    cfg.write_text(SWEEP)
    t0 = time.time()
    out = subprocess.run(command(cfg, tmp / "r"), env=env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    summary = (tmp / "r" / "k" / "summary.csv").read_bytes()
    assert len(summary.decode().splitlines()) == 1 + N_RUNS * 4 * 4  # header + runs x layers x tensors
    BASELINE_SECONDS.append(time.time() - t0)
    return summary


BASELINE_SECONDS: list[float] = []  # how long the uninterrupted sweep took on this machine


@pytest.mark.parametrize("sig, code, to_group", [(signal.SIGINT, 130, True), (signal.SIGTERM, 143, False)])
def test_sigint_and_sigterm_stop_cleanly_and_say_how_to_resume(tmp_path, baseline, sig, code, to_group):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(SWEEP)
    folder = tmp_path / "r" / "k"
    proc = start(cfg, tmp_path / "r")
    wait_for_runs(proc, folder, 3)
    workers = descendants(proc.pid)
    assert workers, "the sweep has no worker processes"
    # Ctrl-C in a terminal reaches the whole foreground group (workers ignore it); `kill PID` the parent
    os.killpg(proc.pid, sig) if to_group else proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert err == f"Interrupted: finished runs are kept in {folder}/; {RESUME}\n"
    assert wait_gone(workers) == set(), "workers outlived the interrupted sweep"
    assert wait_gone(marked()) == set(), "a process of the interrupted sweep lives on"
    kept = complete_runs(folder)
    assert 3 <= len(kept) < N_RUNS
    assert not list(folder.glob(".*.partial")) and not (folder / ".lock").exists()
    # the resume computes only the rest and ends with the uninterrupted summary
    out = subprocess.run(command(cfg, tmp_path / "r"), env=env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (folder / "summary.csv").read_bytes() == baseline


def kill_9_loop(tmp_path, baseline, kills, seed):
    """Until ``kills`` kills have hit a running sweep (at most three times as many tries: a sweep on
    a machine less busy than when the baseline was timed may finish before its moment): start the
    sweep with --fresh (so each one has the whole sweep's work, and a kill may land while a complete
    result is being replaced), kill -9 its parent process alone at a random moment within the time
    the uninterrupted sweep took, check that its workers die too and that every run folder is
    complete or absent. Then a plain resume must give the uninterrupted summary.csv byte for byte.
    Returns how many kills hit a running sweep."""
    cfg = tmp_path / "s.yaml"
    cfg.write_text(SWEEP)
    folder = tmp_path / "r" / "k"
    moments = random.Random(seed)
    hits = 0
    for _ in range(3 * kills):
        if hits == kills:
            break
        proc = start(cfg, tmp_path / "r", "--fresh")
        deadline = time.time() + moments.uniform(0.1, 0.8) * BASELINE_SECONDS[0]
        workers = set()
        while time.time() < deadline and proc.poll() is None:
            workers |= descendants(proc.pid)
            time.sleep(0.02)
        hits += proc.poll() is None
        proc.kill()  # SIGKILL to the parent only: its workers must not live on
        proc.communicate()
        assert wait_gone(workers) == set(), "workers outlived their killed sweep"
        assert wait_gone(marked()) == set(), "a process of the killed sweep lives on"
        for run in folder.iterdir() if folder.exists() else ():
            if run.is_dir() and not run.name.startswith(".") and run.name != "failed":
                assert (run / "stats.json").is_file(), f"{run.name} looks like a run but is incomplete"
    out = subprocess.run(command(cfg, tmp_path / "r"), env=env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr  # a stale .lock of a killed sweep does not block
    assert (folder / "summary.csv").read_bytes() == baseline
    assert len(complete_runs(folder)) == N_RUNS
    assert not [p.name for p in folder.glob(".*") if p.name != ".lock"]  # no staging left behind
    return hits


def test_kill_9_at_random_moments_then_resume_gives_the_uninterrupted_summary(tmp_path, baseline):
    # moments within 10-80% of the uninterrupted sweep's time, each sweep with all its work: five
    # must land while it runs (three of five once, on a machine busier when the baseline was timed)
    assert kill_9_loop(tmp_path, baseline, kills=5, seed=1) == 5


@pytest.mark.slow
def test_kill_9_twenty_times(tmp_path, baseline):
    assert kill_9_loop(tmp_path, baseline, kills=20, seed=2) == 20


def test_a_second_sweep_on_the_same_folder_refuses_and_the_first_finishes(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(SWEEP)
    folder = tmp_path / "r" / "k"
    # slow (32 runs of batch 30000 on one worker, ~8 s here; batch 3000 took 1.6 s once the engine got
    # faster, and a loaded machine let it finish before the checks below): still running below
    first = start(cfg, tmp_path / "r", "--jobs", "1", "--set", "batch=30000")
    wait_for_runs(first, folder, 1)
    second = subprocess.run(command(cfg, tmp_path / "r"), env=env(), capture_output=True, text=True)
    assert second.returncode == 1
    assert second.stderr == (f"Error: {folder} is in use by another sweep (process {first.pid}); "
                             "wait for it to finish, or give another --out.\n")
    report = subprocess.run([sys.executable, "-m", "actstats", "report", str(folder), "--quiet"],
                            env=env(), capture_output=True, text=True)
    assert (report.returncode, report.stderr) == (1, second.stderr)
    assert first.poll() is None, "the first sweep ended too early for this test"
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert len(complete_runs(folder)) == N_RUNS and not (folder / ".lock").exists()


def test_a_signal_while_a_run_is_saved_waits_for_the_save():
    # SIGTERM landing while a run's histograms were being zipped made zipfile fail with a ValueError
    # of its own ("internal error"); now the signal is raised once the folder is written
    from actstats.sweep import Interrupted, _Interrupts, held_interrupts

    done = []
    with _Interrupts():
        with pytest.raises(Interrupted) as stop:
            with held_interrupts():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler has run by now: nothing raised in the block
                done.append("saved")
    assert done == ["saved"] and stop.value.signum == signal.SIGTERM


def test_stopping_a_worker_that_is_sending_a_result_does_not_hang():
    # a worker stopped in the middle of sending a large result left the process pool's thread
    # reading the rest of it for ever: the sweep's shutdown (and then the interpreter's exit) hung
    # (2 sweeps in 470 SIGTERMs at random moments). Stopped half a second into sending 512 MB, the
    # shutdown ends.
    import threading

    from actstats.executors import LocalExecutor

    for delay in (0.8, 1.2):
        executor = LocalExecutor(1)
        executor.submit(int, 1).result()  # the worker is up
        executor.submit(bytes, 512 << 20)  # about 0.6 s to pickle, then a second to send
        time.sleep(delay)
        pool_thread = executor._pool._executor_manager_thread  # what the interpreter's exit joins
        stopper = threading.Thread(target=executor.shutdown, kwargs={"cancel": True}, daemon=True)
        stopper.start()
        stopper.join(60)
        assert not stopper.is_alive(), f"shutdown hung, stopped {delay} s into the run"
        pool_thread.join(10)
        assert not pool_thread.is_alive(), f"the pool's thread is stuck, stopped {delay} s into the run"
