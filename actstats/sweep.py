"""Running a sweep: every run of a ``SweepConfig`` on an executor, resumably, into one folder.

``run_sweep`` submits runs to an executor (executors.py: one interface for local processes and, later,
a cluster), keeps ``slots`` runs in flight, and writes each returned result into
``<out>/<sweep name>/<run name>/`` itself (workers need no shared filesystem). It skips runs whose
folder is complete (``stats.json``) with the same config, records a failed run in ``failed/<run>.json``
and goes on, retries a run whose worker died once on its own, and on Ctrl-C stops the workers; every
file is written to a temporary name and renamed, so an interrupted sweep never leaves a run that looks
complete. ``load_sweep`` reads a sweep folder back for ``actstats report``.

Faults: SIGTERM is handled like Ctrl-C while a sweep runs (``Interrupted``, which the CLI turns into
exit 143, or 130 for Ctrl-C); a sweep holds ``<sweep>/.lock`` (``fcntl.flock``) for its whole duration,
so a second sweep on the same folder refuses to start (``RunError``), and the lock goes away with the
process even after ``kill -9``; a run whose estimated memory exceeds what is available now is refused
before it is submitted to a local executor, and recorded as failed.

Only the standard library is imported at module level: a spawned worker unpickles ``execute`` from
here, and its BLAS thread limit must be in place before numpy loads.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError, RunError
from .executors import LocalExecutor, SerialExecutor, available_cores  # noqa: F401  (public API)
from .sweepfile import (PlannedRun, SweepConfig, from_results, is_sweep_mapping,  # noqa: F401
                        parse_overrides, show)

SPEC_FILE = "sweep.yaml"        # <sweep>/sweep.yaml: the sweep as run (overrides applied)
SOURCE_MARK = "# actstats sweep of "
FAILED = "failed"               # <sweep>/failed/<run>.json: the error of a run that failed
LOCK = ".lock"                  # <sweep>/.lock: flock-ed by the sweep that writes the folder; holds its pid


# --- the work of one run (in a worker) -----------------------------------------------------------------

@dataclass
class Outcome:
    """What a worker sends back: picklable, no paths."""
    ok: bool
    result: Any = None                  # RunResult
    figures: dict | None = None         # PNG file name -> bytes
    warning: str | None = None          # e.g. the figures could not be drawn
    error: str | None = None            # exception type
    message: str | None = None
    traceback: str | None = None
    seconds: float = 0.0


def execute(config, plots: bool = True) -> Outcome:
    """Run one experiment and render its figures; every exception becomes a failed Outcome."""
    t0 = time.perf_counter()
    try:
        from .experiment import run_experiment

        result = run_experiment(config)
    except MemoryError:
        return Outcome(False, error="MemoryError", message="out of memory; lower width, layers, batch "
                       "or chunk_size, or run fewer --jobs", seconds=time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - recorded, the sweep goes on
        return Outcome(False, error=type(exc).__name__, message=str(exc),
                       traceback=traceback.format_exc(), seconds=time.perf_counter() - t0)
    figures, warning = None, None
    if plots:
        try:
            from . import plots as plotting

            figures = plotting.run_figure_bytes(result)
        except Exception as exc:  # noqa: BLE001 - the numbers are still worth keeping
            figures, warning = {}, f"figures not drawn ({type(exc).__name__}: {exc})"
    return Outcome(True, result, figures, warning, seconds=time.perf_counter() - t0)


# --- the runner ----------------------------------------------------------------------------------------

@dataclass
class Progress:
    """Counts for a progress display, handed to ``on_event(event, run, progress)``."""
    total: int                 # runs to compute (complete ones are skipped and not counted)
    skipped: int = 0
    done: int = 0
    failed: int = 0
    running: int = 0


@dataclass
class SweepRun:
    """What happened: the results of every complete run (new or skipped) and the failures."""
    sweep: SweepConfig
    folder: Path
    results: dict = field(default_factory=dict)     # run name -> RunResult
    status: dict = field(default_factory=dict)      # run name -> done | skipped | failed
    failures: dict = field(default_factory=dict)    # run name -> error record
    warnings: list = field(default_factory=list)
    seconds: float = 0.0
    figures: dict | None = None  # comparison figures drawn by the workers (file name -> PNG bytes)


def is_done(path: Path, config) -> bool:
    from .results import stored_config

    stored = stored_config(path)
    return stored is not None and stored.identity() == config.identity()


def stored_configs(sweep: SweepConfig, folder: Path) -> dict:
    """Run name -> the config of its complete result in ``folder`` (None when there is none)."""
    from .results import stored_config

    return {run.name: stored_config(folder / run.name) for run in sweep.runs}


def check_replacements(sweep: SweepConfig, folder: Path, stored: dict | None = None) -> None:
    """Refuse to silently replace complete results computed with another config (e.g. a quick
    ``--set batch=20`` into the folder of a full-size sweep): ``--fresh`` says it is meant.
    ``stored``: stored_configs(sweep, folder), when the caller has read them already."""
    stored = stored if stored is not None else stored_configs(sweep, folder)
    changed = []
    for run in sweep.runs:
        old = stored[run.name]
        if old is not None and old.identity() != run.config.identity():
            old, new = old.identity(), run.config.identity()
            diff = ", ".join(f"{k} {old.get(k)} → {new.get(k)}" for k in new if old.get(k) != new.get(k))
            changed.append((run.name, diff))
    if changed:
        name, diff = changed[0]
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        raise ConfigError(f"{folder} holds results of another config for {name}{more} ({diff}); "
                          "--fresh replaces them, or give another --out.")


def clean_stale(folder: Path) -> None:
    """Remove what an interrupted save left: hidden staging folders and temporary files (the runner
    is the only writer of its sweep folder). A complete result that a killed save had moved aside
    (``.<run>.old-<pid>``) and not yet replaced is put back."""
    from .results import is_complete

    for p in sorted(folder.glob(".*")):
        if ".old-" in p.name and p.is_dir():
            home = folder / p.name[1:].rpartition(".old-")[0]
            if not home.exists() and is_complete(p):
                os.replace(p, home)
                continue
        if p.name.endswith((".partial", ".tmp")) or ".old-" in p.name:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def failure_record(run: PlannedRun, outcome: Outcome | None, message: str | None = None) -> dict:
    return {"run": run.name, "config": run.config.to_dict(),
            "error": outcome.error if outcome else "WorkerDied",
            "message": message or (outcome.message if outcome else ""),
            "traceback": outcome.traceback if outcome else None,
            "seconds": outcome.seconds if outcome else None}


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT) during a sweep: stops it like Ctrl-C; ``signum`` gives the exit status."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


class _Interrupts:
    """While active (main thread only), SIGTERM raises ``Interrupted`` like Ctrl-C raises
    KeyboardInterrupt, so the same cleanup runs: workers stopped, saved runs kept. Within
    ``held_interrupts()`` either signal waits for the end of the block."""

    held = 0              # depth of held_interrupts() blocks
    pending: int | None = None

    def __enter__(self):
        self.old = {}
        _Interrupts.pending = None
        if threading.current_thread() is threading.main_thread():
            self.old[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._raise)
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self.old[signal.SIGINT] = signal.signal(signal.SIGINT, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        if _Interrupts.held:
            _Interrupts.pending = signum
            return
        raise Interrupted(signum)

    def __exit__(self, *exc):
        for signum, old in self.old.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def held_interrupts():
    """Ctrl-C or SIGTERM within the block is raised at its end, not in its middle: a signal that
    landed while a run's results were being zipped made zipfile fail with a ValueError of its own."""
    _Interrupts.held += 1
    try:
        yield
    finally:
        _Interrupts.held -= 1
        if not _Interrupts.held and _Interrupts.pending is not None:  # (over any error of the block:
            signum, _Interrupts.pending = _Interrupts.pending, None  # the sweep stops either way)
            raise Interrupted(signum)


_LOCKS: dict = {}  # resolved folder -> [open lock file, depth]: re-entrant within this process


class sweep_lock:
    """Hold ``<folder>/.lock`` exclusively (``fcntl.flock``, non-blocking) while a sweep writes the
    folder; a second holder in another process gets a RunError naming the first one's pid. The kernel
    drops the lock when its process ends, however it ends, so a killed sweep never blocks a resume."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.made: list[Path] = []

    def __enter__(self):
        import fcntl

        key = self.folder.resolve()
        if key in _LOCKS:
            _LOCKS[key][1] += 1
            return self
        path = self.folder / LOCK
        # folders this lock makes (the sweep's, and the parents it needs): removed again on exit when
        # the sweep left them empty (refused before writing anything)
        for d in (self.folder, *self.folder.parents):
            if d.exists():
                break
            self.made.append(d)
        while True:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                fh = open(path, "a+", encoding="utf-8")
            except OSError as exc:
                raise RunError(f"cannot write the sweep folder {self.folder}: {exc.strerror or exc}.") from None
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.seek(0)
                holder = fh.read().strip()
                fh.close()
                who = f" (process {holder})" if holder.isdigit() else ""
                raise RunError(f"{self.folder} is in use by another sweep{who}; wait for it to finish, "
                               "or give another --out.") from None
            try:  # the holder before us may have removed the file we locked: lock the one in place
                if os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            fh.close()
        fh.truncate(0)
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        _LOCKS[key] = [fh, 1]
        return self

    def __exit__(self, *exc):
        key = self.folder.resolve()
        entry = _LOCKS[key]
        entry[1] -= 1
        if entry[1] == 0:
            del _LOCKS[key]
            Path(entry[0].name).unlink(missing_ok=True)  # before the release: see the inode check
            entry[0].close()
            for d in self.made:  # deepest first; a folder with anything in it stays
                try:
                    d.rmdir()
                except OSError:
                    break


def memory_refusal(run: PlannedRun) -> str | None:
    """The reason a run cannot start on this machine now (its estimate exceeds available memory)."""
    from . import network

    try:
        network.check_memory(run.config)
    except ConfigError as exc:
        return str(exc)
    return None


def locked_and_interruptible(fn):
    """``run_sweep`` holding its folder's lock, with SIGTERM handled like Ctrl-C."""
    import functools

    @functools.wraps(fn)
    def wrapper(sweep, out, *args, **kwargs):
        with sweep_lock(Path(out) / sweep.name), _Interrupts():
            return fn(sweep, out, *args, **kwargs)

    return wrapper


def plan_jobs(runs, jobs: int | None) -> tuple[int, str | None]:
    """Workers for computing ``runs``: ``jobs`` (default: the cores), at most the cores (each worker
    runs BLAS on one thread, so workers x threads <= cores), at most what memory allows for the
    largest run, at most one per run; and a note saying why when fewer than asked."""
    from . import network

    cores = available_cores()
    if jobs is not None and jobs < 1:
        raise ConfigError(f"jobs == {jobs}, must be >= 1.")
    want = jobs or cores
    note = None
    if want > cores:
        note = f"--jobs {want} > {cores} core(s): using {cores} worker(s)"
        want = cores
    if runs:
        need = max(network.estimate_bytes(r.config) for r in runs)
        fit = max(1, network.available_bytes() // max(need, 1))
        if fit < want:
            note = (f"memory for {fit} run(s) of up to {network.gib(need)} at a time: "
                    f"using {fit} worker(s)")
            want = fit
    return max(1, min(want, len(runs) or 1)), note


@locked_and_interruptible
def run_sweep(sweep: SweepConfig, out, *, jobs: int | None = None, executor=None, fresh: bool = False,
              plots: bool = True, on_event: Callable | None = None, task: Callable = execute) -> SweepRun:
    """Run every run of ``sweep`` that has no complete, matching result in ``out/<sweep.name>/``.

    ``executor``: anything with the interface of executors.py (default a
    LocalExecutor of ``jobs`` workers, shut down at the end; :func:`plan_jobs` caps ``jobs`` at the
    cores and the memory, and the note saying so is the first of ``warnings``).
    ``on_event(event, run, progress)`` with event in start | done | failed | skipped.
    """
    import yaml

    from .results import load_results, save, write_atomic

    t0 = time.perf_counter()
    folder = Path(out) / sweep.name
    stored = {} if fresh else stored_configs(sweep, folder)  # each stats.json read once here
    if not fresh:
        check_replacements(sweep, folder, stored)
    if executor is None:  # before anything is written: jobs < 1 is refused
        jobs, note = plan_jobs([r for r in sweep.runs if stored.get(r.name) is None
                                or stored[r.name].identity() != r.config.identity()], jobs)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        clean_stale(folder)
        write_atomic(folder / SPEC_FILE, f"{SOURCE_MARK}{sweep.source}\n"
                     + yaml.safe_dump(sweep.spec, sort_keys=False, allow_unicode=True))
    except OSError as exc:
        raise RunError(f"cannot write the sweep folder {folder}: {exc.strerror or exc}.") from None
    state = SweepRun(sweep, folder, warnings=[note] if executor is None and note else [])
    emit = on_event or (lambda *a: None)

    todo = []
    for run in sweep.runs:
        path = folder / run.name
        old = stored.get(run.name)
        if old is not None and old.identity() == run.config.identity():
            try:
                state.results[run.name] = load_results(path)
                state.status[run.name] = "skipped"
                continue
            except (ConfigError, RunError):
                pass  # unreadable: compute it again
        todo.append(run)
    progress = Progress(total=len(todo), skipped=len(sweep.runs) - len(todo))
    for run in sweep.runs:
        if state.status.get(run.name) == "skipped":
            emit("skipped", run, progress)

    def record_failure(run, record):
        state.failures[run.name] = record
        state.status[run.name] = "failed"
        progress.failed += 1
        try:
            (folder / FAILED).mkdir(exist_ok=True)
            write_atomic(folder / FAILED / f"{run.name}.json",
                         json.dumps(record, indent=1, default=str, ensure_ascii=False))
        except OSError:
            pass  # the failure is still reported
        emit("failed", run, progress)

    own = executor is None and todo
    if own:
        executor = LocalExecutor(min(jobs, len(todo)))
    pending, isolated, inflight, attempts = deque(todo), deque(), {}, {}
    local = isinstance(executor, (LocalExecutor, SerialExecutor))  # its memory is this machine's

    def start(run):
        inflight[executor.submit(task, run.config, plots)] = run
        progress.running += 1
        emit("start", run, progress)

    try:
        while pending or isolated or inflight:
            # a run whose worker died is retried alone, so that it cannot take others down with it
            if isolated:
                if not inflight:
                    start(isolated.popleft())
            else:
                slots = executor.slots  # once per fill: a cluster's asks its scheduler
                while pending and len(inflight) < slots:
                    run = pending.popleft()
                    refusal = memory_refusal(run) if local else None
                    if refusal:  # refused before it starts, with the estimate
                        record_failure(run, failure_record(run, None, refusal) | {"error": "ConfigError"})
                        continue
                    start(run)
            if not inflight:
                continue
            future = next(iter(executor.as_completed(list(inflight))))
            run = inflight.pop(future)
            progress.running -= 1
            try:
                outcome = future.result()
            except Exception as exc:  # noqa: BLE001 - the worker itself died (killed, out of memory...)
                executor.recover(future)
                attempts[run.name] = attempts.get(run.name, 0) + 1
                if attempts[run.name] < getattr(executor, "tries", 2):  # a cluster retries itself: 1
                    isolated.append(run)
                else:
                    twice = " twice" if attempts[run.name] == 2 else ""
                    record_failure(run, failure_record(run, None, f"its worker process died{twice} "
                                   f"({type(exc).__name__}: {exc}); killed, e.g. out of memory?"))
                continue
            if not outcome.ok:
                record_failure(run, failure_record(run, outcome))
                continue
            try:
                with held_interrupts():
                    save(outcome.result, folder / run.name, plots=plots,
                         figures=outcome.figures if plots else None)
            except (RunError, OSError) as exc:
                record_failure(run, failure_record(run, outcome, f"cannot save: {exc}") | {"error": "RunError"})
                continue
            (folder / FAILED / f"{run.name}.json").unlink(missing_ok=True)
            if outcome.warning:
                state.warnings.append(f"{run.name}: {outcome.warning}")
            state.results[run.name] = outcome.result
            state.status[run.name] = "done"
            progress.done += 1
            emit("done", run, progress)
        if plots and state.results and own and executor.slots > 1:
            # the comparison figures, drawn side by side by this machine's workers while they are up
            from .sweep_plots import sweep_figure_bytes

            try:
                state.figures = sweep_figure_bytes(sweep, state.results, executor)
            except Exception:  # noqa: BLE001 - e.g. a worker killed meanwhile: report.build draws them here
                state.figures = None
    except BaseException:  # Ctrl-C or a bug: stop the work in flight; what is saved stays complete
        if own:
            executor.shutdown(cancel=True)
            own = False
        else:
            for future in inflight:
                future.cancel()
        raise
    finally:
        if own:
            executor.shutdown()
    failed_dir = folder / FAILED
    if failed_dir.is_dir() and not any(failed_dir.iterdir()):
        failed_dir.rmdir()
    state.seconds = time.perf_counter() - t0
    return state


def load_sweep(folder) -> tuple[SweepConfig, SweepRun]:
    """A sweep folder read back, without computing: its plan (from sweep.yaml), the complete results
    that match it, and the recorded failures."""
    from .results import load_results

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder.")
    spec = folder / SPEC_FILE
    sweep = SweepConfig.from_yaml(spec) if spec.is_file() else from_results(folder)
    if spec.is_file():
        first = spec.read_text(encoding="utf-8").partition("\n")[0]
        if first.startswith(SOURCE_MARK):  # report the file the sweep came from, not its copy
            from dataclasses import replace

            sweep = replace(sweep, source=first[len(SOURCE_MARK):])
    state = SweepRun(sweep, folder)
    for run in sweep.runs:
        path = folder / run.name
        if is_done(path, run.config):
            state.results[run.name] = load_results(path)
            state.status[run.name] = "skipped"
        elif (folder / FAILED / f"{run.name}.json").is_file():
            try:
                state.failures[run.name] = json.loads((folder / FAILED / f"{run.name}.json").read_text())
            except (OSError, ValueError):
                state.failures[run.name] = {"run": run.name, "error": "unknown", "message": "unreadable record"}
            state.status[run.name] = "failed"
        else:
            state.status[run.name] = "missing"
    return sweep, state
