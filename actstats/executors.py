"""Executors: where a sweep's runs are computed, behind ONE interface in the concurrent.futures style.

An executor has ``submit(fn, *args) -> future`` (``future.result()`` returns or raises),
``as_completed(futures) -> iterator of futures``, ``slots`` (how many runs to keep in flight),
``recover(future)`` (called when a future raised because its worker died) and
``shutdown(cancel=False)``, and optionally ``tries`` (how often the sweep tries a run whose worker
died; default 2). ``sweep.run_sweep`` needs nothing else, so a cluster drops in: cluster.py's
DaskExecutor gives ``submit`` through a dask.distributed ``Client`` and ``distributed.as_completed``,
``slots`` is the cluster's thread count, ``recover`` is a no-op and ``tries`` 1 (the scheduler
already moves lost work to other workers).
Workers compute and return results; the parent writes the folders, so no shared filesystem is needed.

Standard library only at import: a spawned worker unpickles ``limit_threads`` from here, and the
BLAS thread limit must be in place before numpy loads.
"""

from __future__ import annotations

import os
import select
import signal

BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
             "NUMEXPR_NUM_THREADS")
BLAS_THREADS = 1                # per worker; see LocalExecutor for why it does not depend on --jobs


def limit_threads(threads: int = BLAS_THREADS):
    """Worker initializer: BLAS thread limit (effective because numpy is not loaded yet in a spawned
    worker -- the parent also sets these variables in the environment it spawns with), and leave
    Ctrl-C to the parent, which stops the workers itself."""
    for var in BLAS_VARS:
        os.environ[var] = str(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()


def die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the sweep process dies, even by ``kill -9``, so
    that no orphan computes on (prctl PR_SET_PDEATHSIG). Elsewhere a worker ends at its next task."""
    from multiprocessing import parent_process

    known = parent_process()  # the pid of the process that spawned us, even if it is already gone
    parent = known.pid if known is not None else os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() != parent:  # the parent died before the request was in place (killed at start-up)
        os._exit(1)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _unblock(thread, queue) -> None:
    """A worker stopped while it was sending a result (a large one goes down the pipe in pieces)
    leaves the process pool's thread reading the rest of it for ever, and the interpreter's exit
    joins that thread: 2 sweeps in 470 interrupted at random moments hung so. Zero bytes written into
    the pipe complete the message; the thread finds it is no pickle, marks the pool broken and ends."""
    writer = getattr(queue, "_writer", None)
    if writer is None or writer.closed:
        return
    fd = writer.fileno()
    os.set_blocking(fd, False)
    zeros = bytes(1 << 16)
    while thread.is_alive():
        if not select.select([], [fd], [], 1.0)[1]:  # full for a second: the thread reads no more
            return
        try:
            os.write(fd, zeros)
        except BlockingIOError:
            continue
        except OSError:
            return


class LocalExecutor:
    """Worker processes on this machine: concurrent.futures.ProcessPoolExecutor, "spawn" start.

    Each worker runs BLAS with 1 thread, whatever ``jobs`` is: OpenBLAS's results change in the last
    bits with its thread count, so a fixed count is what makes ``--jobs 2`` give the numbers of
    ``--jobs 1``; and with jobs <= cores, workers x threads never exceed the cores. "spawn" rather
    than fork: a forked child inherits numpy's BLAS already initialised with the parent's threads.
    """

    def __init__(self, jobs: int, threads: int = BLAS_THREADS):
        self.slots = max(1, int(jobs))
        self.threads = threads
        self.generation = 0
        self._saved = {v: os.environ.get(v) for v in BLAS_VARS}
        for var in BLAS_VARS:  # inherited by every worker spawned while this executor lives
            os.environ[var] = str(threads)
        self._pool = self._new_pool()

    def _new_pool(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(self.slots, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=limit_threads, initargs=(self.threads,))

    def submit(self, fn, *args):
        from concurrent.futures import BrokenExecutor

        try:
            future = self._pool.submit(fn, *args)
        except BrokenExecutor:  # a worker died since the last submit: carry on with a new pool
            self._restart()
            future = self._pool.submit(fn, *args)
        future.generation = self.generation
        return future

    def _restart(self):
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.generation += 1
        self._pool = self._new_pool()

    @staticmethod
    def as_completed(futures):
        from concurrent.futures import as_completed

        return as_completed(futures)

    def recover(self, future) -> None:
        """After a worker died (BrokenProcessPool): replace the pool, once per breakage."""
        if getattr(future, "generation", self.generation) == self.generation:
            self._restart()

    def shutdown(self, cancel: bool = False) -> None:
        try:
            if not cancel:
                self._pool.shutdown(wait=True)
                return
            # Ctrl-C: stop the running workers too, not only the queued runs; wait for the workers,
            # then for the pool's thread (see _unblock)
            pool = self._pool
            procs = list((getattr(pool, "_processes", None) or {}).values())
            thread = getattr(pool, "_executor_manager_thread", None)  # (shutdown forgets them)
            queue = getattr(pool, "_result_queue", None)
            for proc in procs:
                proc.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in procs:
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
                    proc.join(5)
            if thread is not None:
                thread.join(2)
                if thread.is_alive():
                    _unblock(thread, queue)
        finally:
            for var, value in self._saved.items():
                if value is None:
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = value

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown(cancel=exc[0] is not None)


class SerialExecutor:
    """In this process, one run at a time, same interface (for tests, debugging and notebooks).
    Numbers may differ in the last bits from LocalExecutor's: this process's BLAS threads are not
    limited."""

    slots = 1

    def __init__(self):
        self._calls: dict = {}

    def submit(self, fn, *args):
        from concurrent.futures import Future

        future = Future()
        self._calls[future] = (fn, args)
        return future

    def as_completed(self, futures):
        for future in futures:
            if not future.done():
                fn, args = self._calls.pop(future)
                future.set_running_or_notify_cancel()
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # noqa: BLE001 - handed to the caller like a pool would
                    future.set_exception(exc)
            yield future

    def recover(self, future) -> None:
        pass

    def shutdown(self, cancel: bool = False) -> None:
        self._calls.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()
