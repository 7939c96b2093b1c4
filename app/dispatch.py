"""The dispatcher: the app's own bounded job workers, fed by job id.

Jobs never run on the request threadpool, nor in the server process: the
BackgroundTasks job only calls submit(), which hands the id to a pool of
HOPPER_WORKERS worker processes (pebble). A job that runs past HOPPER_JOB_TIMEOUT has
its worker killed; a worker that crashes is replaced; neither disturbs the server or
the other jobs. CPU-heavy processors therefore never hold the server's GIL.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from concurrent.futures import CancelledError, Future, TimeoutError
from typing import Protocol

from pebble import ProcessExpired, ProcessPool

from app.config import Settings
from app.jobs import JobEnv, RunOutcome, put_back, record_lost_worker
from app.models import ErrorCode
from app.worker import init_worker, run_in_worker

log = logging.getLogger("hopper.dispatch")


class Dispatcher(Protocol):
    def start(self) -> None: ...

    def submit(self, job_id: str) -> None:
        """Queue a job; a job already queued or running here is not queued twice."""
        ...

    def stop(self, timeout_s: float) -> None: ...

    def waiting(self) -> int:
        """Jobs queued or running in this process."""
        ...


class ProcessDispatcher:
    def __init__(self, settings: Settings, env: JobEnv) -> None:
        self._settings = settings
        self._env = env
        self._active: dict[str, Future[RunOutcome] | None] = {}  # queued or running here
        self._lock = threading.Lock()
        self._pool: ProcessPool | None = None
        self._stopping = False

    def start(self) -> None:
        # forkserver: workers start from a clean, single-threaded process, not from the
        # server with its threads and event loop.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["app.worker"])
        self._pool = ProcessPool(
            max_workers=self._settings.workers,
            initializer=init_worker,
            initargs=(self._settings.model_dump_json(),),
            context=context,
        )

    def submit(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._active or self._pool is None or self._stopping:
                return
            self._active[job_id] = None
        try:
            self._schedule(job_id)
        except Exception:  # a broken pool: the record stays queued for the next start
            log.exception("job %s could not be scheduled", job_id)
            self._forget(job_id)

    def waiting(self) -> int:
        return len(self._active)

    def stop(self, timeout_s: float) -> None:
        """Let running jobs finish up to the deadline. A job cut off goes back to `queued`
        (its attempt not counted: it did nothing wrong) and runs at the next start."""
        self._stopping = True
        if self._pool is None:
            return
        self._pool.close()  # type: ignore[no-untyped-call]  # pebble ships no types
        self._cancel_waiting()  # they stay queued in the store for the next start
        try:
            self._pool.join(timeout=timeout_s)
        except TimeoutError:
            cut_off = list(self._active)
            log.warning("%d jobs still running after %.1fs; queued again", len(cut_off), timeout_s)
            self._pool.stop()  # type: ignore[no-untyped-call]
            self._pool.join()
            for job_id in cut_off:
                put_back(job_id, self._env)
        self._pool = None

    def _schedule(self, job_id: str) -> None:
        assert self._pool is not None  # noqa: S101 - submit() checked under the lock
        future = self._pool.schedule(
            run_in_worker, args=(job_id,), timeout=self._settings.job_timeout
        )
        with self._lock:
            self._active[job_id] = future
        future.add_done_callback(lambda f: self._finished(job_id, f))

    def _cancel_waiting(self) -> None:
        with self._lock:
            futures = [f for f in self._active.values() if f is not None]
        for future in futures:
            if not future.running():  # cancelling a running one would kill its worker
                future.cancel()

    def _finished(self, job_id: str, future: Future[RunOutcome]) -> None:
        retry_in_s = None
        try:
            retry_in_s = future.result().retry_in_s
        except TimeoutError:
            self._lost(job_id, ErrorCode.TIMEOUT, _timeout_message(self._settings.job_timeout))
        except ProcessExpired as exc:
            self._lost(job_id, ErrorCode.CRASHED, _crash_message(exc.exitcode))
        except CancelledError:
            pass  # shutting down: the record still says queued or processing
        except Exception:
            log.exception("job %s: the worker pool failed", job_id)
            self._lost(job_id, ErrorCode.INTERNAL, "The job could not be run; the log has details.")
        finally:
            self._forget(job_id)
        if retry_in_s is not None and not self._stopping:
            timer = threading.Timer(retry_in_s, self.submit, args=(job_id,))
            timer.daemon = True
            timer.start()

    def _forget(self, job_id: str) -> None:
        with self._lock:
            self._active.pop(job_id, None)

    def _lost(self, job_id: str, code: ErrorCode, message: str) -> None:
        if self._stopping:
            return  # the job was cut off by shutdown, not by its own fault: it runs again
        try:
            record_lost_worker(job_id, self._env, code, message)
        except Exception:  # disk full, say: the record stays unfinished, the next start retries
            log.exception("job %s: could not record why its worker stopped", job_id)


def _timeout_message(limit_s: float) -> str:
    return f"The job ran longer than {limit_s:g} s (HOPPER_JOB_TIMEOUT) and was stopped."


def _crash_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            cause = f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            cause = f"signal {-exitcode}"
    else:
        cause = f"exit code {exitcode}"
    return f"The worker process running this job died ({cause}); a fresh one took its place."
