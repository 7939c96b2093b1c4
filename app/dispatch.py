"""The dispatcher: the app's own bounded job workers, fed by job id.

Jobs never run on the request threadpool, nor in the server process: the
BackgroundTasks job only calls submit(), which hands the id to a pool of
HOPPER_WORKERS worker processes (pebble). A job that runs past HOPPER_JOB_TIMEOUT has
its worker killed; a worker that crashes is replaced; neither disturbs the server or
the other jobs. CPU-heavy processors therefore never hold the server's GIL.

Of several server processes sharing a data directory, each owns the jobs it queues: it
holds their lease (app.locks) from the upload's 202, or from taking over a job nobody
owns, until the job is finished. A job another live process owns is never queued here.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, TimeoutError
from typing import Protocol

from pebble import ProcessExpired, ProcessPool

from app.config import Settings
from app.jobs import JobEnv, RunOutcome, put_back, record_lost_worker, timeout_message
from app.locks import Leases
from app.models import ErrorCode
from app.pool_worker import init_worker, run_in_worker

log = logging.getLogger("hopper.dispatch")

FinishHook = Callable[[str, dict[str, float]], None]

HOLD_WAIT_S = 2.0


class Dispatcher(Protocol):
    def start(self) -> None: ...

    def hold(self, job_id: str) -> bool:
        """Own a new job before its 202 (its upload holds its run lock meanwhile)."""
        ...

    def submit(self, job_id: str) -> None:
        """Queue a job; a job already queued or running here is not queued twice, nor
        one another live process owns."""
        ...

    def adopt(self, job_id: str) -> bool:
        """Queue a job unless it is queued here or another live process owns it; True if
        it was queued now."""
        ...

    def running(self) -> bool: ...

    def revoke(self, job_id: str) -> None:
        """A job was cancelled or deleted: drop what is queued for it, where that means
        anything (its worker also stops it through its stop request)."""
        ...

    def sweep(self) -> int:
        """The sweeper's turn for the backend's own repairs; the count acted on."""
        ...

    def when_finished(self, callback: FinishHook) -> None:
        """Call `callback(job_id, processor_seconds)` after a job run here ends, unless it
        is to be retried or was cut off by shutdown. The record says how it ended (a
        job another process ran is not final here: callbacks check the record)."""
        ...

    def notify_finished(self, job_id: str, timings: dict[str, float] | None = None) -> None:
        """Run the finish callbacks for a job that ended here without a worker (a queued
        job cancelled), as for one a worker ran."""
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
        self._leases = Leases()
        self._finish_hooks: list[FinishHook] = []

    def start(self) -> None:
        # forkserver: workers start from a clean, single-threaded process, not from the
        # server with its threads and event loop.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["app.pool_worker"])
        self._pool = ProcessPool(
            max_workers=self._settings.workers,
            initializer=init_worker,
            initargs=(self._settings.model_dump_json(),),
            context=context,
        )

    def hold(self, job_id: str) -> bool:
        # Only a sweep's look at whether the job is free can be in the way: moments.
        owned = self._leases.take(job_id, self._env.layout.upload(job_id), wait_s=HOLD_WAIT_S)
        if not owned:
            log.warning("job %s: could not take its lease; a sweep will hand it on", job_id)
        return owned

    def submit(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._active or self._pool is None or self._stopping:
                return
            if not self._leases.take(job_id, self._env.layout.upload(job_id)):
                return  # another live process owns it
            self._active[job_id] = None
        try:
            self._schedule(job_id)
        except Exception:  # a broken pool: the record stays queued for the next start
            log.exception("job %s could not be scheduled", job_id)
            self._forget(job_id)

    def adopt(self, job_id: str) -> bool:
        with self._lock:
            if job_id in self._active:
                return False
        self.submit(job_id)  # checks again, and takes the lease unless another owns it
        with self._lock:
            return job_id in self._active

    def waiting(self) -> int:
        return len(self._active)

    def revoke(self, job_id: str) -> None:
        pass  # a queued job's stop request is read when it comes up

    def sweep(self) -> int:
        return 0  # dead processes' jobs come through JobEnv.adopt, from the sweep itself

    def running(self) -> bool:
        """The pool is up and taking jobs (for /readyz)."""
        return self._pool is not None and self._pool.active and not self._stopping

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
        self._leases.release_all()  # what is still queued is free for another process

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

    def when_finished(self, callback: FinishHook) -> None:
        self._finish_hooks.append(callback)

    def _finished(self, job_id: str, future: Future[RunOutcome]) -> None:
        retry_in_s = None
        timings: dict[str, float] = {}
        try:
            outcome = future.result()
            retry_in_s, timings = outcome.retry_in_s, outcome.timings
        except TimeoutError:
            self._lost(job_id, ErrorCode.TIMEOUT, timeout_message(self._settings.job_timeout))
        except ProcessExpired as exc:
            self._lost(job_id, ErrorCode.CRASHED, _crash_message(exc.exitcode))
        except CancelledError:
            pass  # shutting down: the record still says queued or processing
        except Exception:
            log.exception("job %s: the worker pool failed", job_id)
            self._lost(job_id, ErrorCode.INTERNAL, "The job could not be run; the log has details.")
        finally:
            # A job to retry stays owned through its backoff; the timer queues it again.
            retry = retry_in_s is not None and not self._stopping
            self._forget(job_id, keep_lease=retry)
        if retry:
            timer = threading.Timer(retry_in_s or 0.0, self.submit, args=(job_id,))
            timer.daemon = True
            timer.start()
        elif not self._stopping and not future.cancelled():
            self.notify_finished(job_id, timings)

    def notify_finished(self, job_id: str, timings: dict[str, float] | None = None) -> None:
        for hook in self._finish_hooks:
            try:
                hook(job_id, timings or {})
            except Exception:  # a hook's failure must not lose the next job's
                log.exception("job %s: a finish hook failed", job_id)

    def _forget(self, job_id: str, *, keep_lease: bool = False) -> None:
        with self._lock:
            self._active.pop(job_id, None)
            if not keep_lease:
                self._leases.release(job_id)

    def _lost(self, job_id: str, code: ErrorCode, message: str) -> None:
        if self._stopping:
            return  # the job was cut off by shutdown, not by its own fault: it runs again
        try:
            record_lost_worker(job_id, self._env, code, message)
        except Exception:  # disk full, say: the record stays unfinished, the next start retries
            log.exception("job %s: could not record why its worker stopped", job_id)


def _crash_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            cause = f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            cause = f"signal {-exitcode}"
    else:
        cause = f"exit code {exitcode}"
    return f"The worker process running this job died ({cause}); a fresh one took its place."
