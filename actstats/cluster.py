"""Sweeps on a Dask cluster: ``DaskExecutor``, the executor interface of executors.py over
``dask.distributed.Client``, so that ``sweep.run_sweep`` resumes, retries, records failures and
writes the results folder exactly as it does with local processes.

``--cluster tcp://HOST:PORT`` connects to a running scheduler; ``--cluster local:N`` starts a
``LocalCluster`` of N worker processes with one thread each for the duration of the sweep. Workers
compute and return results; this process writes every file, so workers need no shared filesystem.

Dask is an optional extra (``pip install 'actstats[cluster]'``) and is imported only here, inside the
functions, only when a cluster is asked for.

One run per worker process, one BLAS thread each (``dask worker --nthreads 1``, and the
``OPENBLAS_NUM_THREADS=1`` that a nanny sets by default before its worker starts): network.py switches
the process-wide OpenBLAS thread count while it runs (two halves of a chunk on two threads with one
BLAS thread each, only where BLAS may use two), so two runs sharing one process could switch it under
each other. ``pinned`` makes each run set BLAS to one thread itself, so a worker started with more
threads still gives the same numbers, but its runs then compete for the same cores and memory.
"""

from __future__ import annotations

import re

from .errors import ConfigError, RunError
from .executors import BLAS_THREADS, BLAS_VARS

CONNECT_TIMEOUT = 10.0      # seconds to reach a scheduler before giving up
ALLOWED_FAILURES = 2        # local:N: a run whose worker dies is tried on 2 more workers, then fails
INSTALL = "pip install 'actstats[cluster]'"


def parse_address(address: str) -> tuple[str, int | str]:
    """``("local", N)`` for ``local:N``, ``("tcp", "tcp://HOST:PORT")`` for a scheduler address."""
    text = address.strip()
    local = re.fullmatch(r"local:(\d+)", text)
    if local:
        workers = int(local.group(1))
        if not 1 <= workers <= 1024:
            raise ConfigError(f"--cluster local:{workers}: the number of workers must be 1..1024.")
        return "local", workers
    if re.fullmatch(r"(tcp|tls)://[^\s/:]+:\d{1,5}", text):
        return "tcp", text
    raise ConfigError(f"--cluster {address!r}: expected tcp://HOST:PORT (a running Dask scheduler) "
                      f"or local:N (N local worker processes).")


def core_warning(address: str) -> str | None:
    """``local:N`` with more workers than this machine's cores: allowed (the cluster's shape is the
    user's, e.g. to rehearse losing workers; Dask allows it too), but each worker runs one BLAS thread,
    so N > cores only shares the cores: the same numbers, no sooner. ``--jobs`` is capped instead."""
    from .executors import available_cores

    kind, where = parse_address(address)
    cores = available_cores()
    if kind == "local" and where > cores:
        return (f"--cluster local:{where} > {cores} core(s): its {where} workers share them, "
                "so the sweep is no faster (and takes more memory).")
    return None


def pinned(fn, *args):
    """Run ``fn(*args)`` on a worker with BLAS limited to one thread (see the module docstring)."""
    from . import network

    blas = network._openblas_threads()
    if blas is not None and blas[1]() != BLAS_THREADS:
        blas[0](BLAS_THREADS)
    return fn(*args)


def version() -> str:
    """This actstats's version, as a worker reports it."""
    from . import __version__

    return __version__


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ConfigError(f"--cluster needs Dask: {INSTALL}") from None
    return distributed


class DaskExecutor:
    """Runs on a Dask cluster. ``slots`` follows the cluster's thread count as workers come and go;
    a worker that dies takes its runs with it and the scheduler gives them to another worker (at most
    ``distributed.scheduler.allowed-failures`` times, then the future raises ``KilledWorker`` and the
    sweep records the run as failed)."""

    tries = 1   # the sweep does not retry a run whose workers died: the scheduler already has

    def __init__(self, address: str, timeout: float | None = None):
        distributed = _distributed()
        import logging

        import dask

        kind, where = parse_address(address)
        self.address, self.cluster = address, None
        timeout = CONNECT_TIMEOUT if timeout is None else timeout
        blas = {var: str(BLAS_THREADS) for var in BLAS_VARS}
        try:
            if kind == "local":
                # before each worker process starts, so that numpy loads with one BLAS thread
                with dask.config.set({"distributed.nanny.pre-spawn-environ": blas,
                                      "distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
                    self.cluster = distributed.LocalCluster(
                        n_workers=where, threads_per_worker=1, processes=True, host="127.0.0.1",
                        silence_logs=logging.ERROR,  # no dashboard; its HTTP server on any free port:
                        scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
                self.client = distributed.Client(self.cluster, timeout=timeout)
            else:
                self.client = distributed.Client(where, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, or garbage from a non-scheduler
            self.shutdown()
            what = str(exc) if isinstance(exc, OSError) and str(exc) else f"{type(exc).__name__}: {exc}"
            if kind == "local":
                raise RunError(f"cannot start a local Dask cluster of {where} workers: {what}") from None
            raise RunError(f"cannot reach the Dask scheduler at {where}: {what}") from None
        self._as_completed = distributed.as_completed
        self._check_workers()

    def _check_workers(self):
        """Every worker must run this actstats, or every run would fail with the same error."""
        from . import __version__

        try:
            versions = self.client.run(version)
        except Exception as exc:  # noqa: BLE001 - e.g. ModuleNotFoundError from a worker
            self.shutdown()
            raise RunError(f"the Dask workers at {self.address} cannot run actstats ({type(exc).__name__}: "
                           f"{exc}); install actstats {__version__} on every worker.") from None
        other = {w: v for w, v in versions.items() if v != __version__}
        if other:
            self.shutdown()
            worker, v = next(iter(other.items()))
            raise RunError(f"{len(other)} Dask worker(s) run actstats {v} (e.g. {worker}), this is "
                           f"{__version__}; install the same version on every worker.")

    def _workers(self) -> dict:
        try:
            return self.client.scheduler_info(n_workers=-1).get("workers", {})
        except TypeError:  # pragma: no cover - distributed before n_workers=
            return self.client.scheduler_info().get("workers", {})

    @property
    def slots(self) -> int:
        """Runs to keep in flight: one per worker thread (at least one, so that a sweep started
        before the workers waits for them)."""
        return max(1, sum(w.get("nthreads", 1) for w in self._workers().values()))

    def submit(self, fn, *args):
        try:
            return self.client.submit(pinned, fn, *args, pure=False)
        except Exception as exc:  # noqa: BLE001 - the client lost its scheduler
            raise RunError(f"lost the Dask scheduler at {self.address}: {type(exc).__name__}: {exc}") from None

    def as_completed(self, futures):
        return iter(self._as_completed(futures))

    def recover(self, future) -> None:
        """Nothing to do: the scheduler has already moved the dead worker's runs elsewhere."""

    def status(self) -> str:
        """The cluster in a few words for the progress bar: its workers and the runs each is
        computing, e.g. ``2 workers: 1 1``."""
        try:
            busy = self.client.processing()
        except Exception:  # noqa: BLE001 - a progress line is not worth a failure
            return "cluster unreachable"
        counts = sorted((len(keys) for keys in busy.values()), reverse=True)
        workers = f"{len(counts)} worker{'' if len(counts) == 1 else 's'}"
        if not counts:
            return f"{workers} (waiting for some)"
        if len(counts) <= 8:
            return f"{workers}: " + " ".join(str(c) for c in counts)
        return f"{workers}: {sum(1 for c in counts if c)} busy"

    def shutdown(self, cancel: bool = False) -> None:
        client, cluster = getattr(self, "client", None), self.cluster
        self.client = self.cluster = None
        try:
            if client is not None:  # the scheduler forgets this client's runs; a run that already
                client.close()      # started on an external worker finishes there, unused
        finally:
            if cluster is not None:
                cluster.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown(cancel=exc[0] is not None)
