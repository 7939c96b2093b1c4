"""Running one job: the pipeline, progress in the store, and every failure recorded.

Plain values in, no web framework: the local dispatcher calls run_job in its own worker
threads, and a Celery worker can import it the same way.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from app import __version__
from app.artifacts import Artifacts
from app.cleanup import StopKind, clear_stop, purge, read_stop
from app.config import Settings
from app.dedupe import remember
from app.detect import detect_type, refine_text_type
from app.errors import ServiceBusy, UnknownJob
from app.layout import DataDir
from app.locks import job_lock
from app.models import ErrorCode, Job, JobError, JobStatus, Warning, utc_now
from app.processors.base import Context, ProcessorError
from app.processors.registry import Registry, load_registry
from app.store import JobStore

log = logging.getLogger("hopper.jobs")

MAX_RESULT_BYTES = 256 * 1024  # status stays cheap to poll
PROGRESS_SAVE_INTERVAL_S = 0.25  # polling clients see movement; the store is not hammered


@dataclass(frozen=True)
class JobEnv:
    """Everything a job needs from the service, as plain values."""

    store: JobStore
    layout: DataDir
    registry: Registry
    max_retries: int = 0
    retention_s: float = 0.0  # finished jobs expire this long after they end; 0: never
    # Queue an unfinished job here unless another live process owns it (server only).
    adopt: Callable[[str], bool] | None = None
    job_timeout_s: float = 0.0
    # Raised inside a job that ran out of time (Celery's soft time limit): `timeout`.
    timeout_errors: tuple[type[BaseException], ...] = ()
    dedupe: bool = False  # HOPPER_DEDUPE: a job done names its results in digests/

    @classmethod
    def from_settings(cls, settings: Settings, store: JobStore) -> JobEnv:
        return cls(
            store=store,
            layout=DataDir(settings.data_dir),
            registry=load_registry(),
            max_retries=settings.max_retries,
            retention_s=settings.retention,
            job_timeout_s=settings.job_timeout,
            dedupe=settings.dedupe,
        )

    def stop_requested(self, job_id: str) -> StopKind | None:
        return read_stop(self.layout, job_id)


@dataclass(frozen=True)
class RunOutcome:
    """What the dispatcher must do next: nothing, or run the job again after a pause;
    and how long each processor of this run took (for the metrics)."""

    retry_in_s: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    ran: bool = True  # False: another process was running it, this run did nothing
    # True: this run recorded the job's end. False for a second delivery of a job that
    # had ended already: it must not be counted (or announced) twice.
    ended: bool = False


MAX_BACKOFF_S = 60.0
LOST_WORKER_WAIT_S = 10.0  # the pool stops a timed-out worker as it reports it: ms, not s
CANCELLED_MESSAGE = "Cancelled at the client's request."


class JobStopped(BaseException):
    """Raised from a progress report when the job was asked to stop. A BaseException, so
    a processor's `except Exception` does not swallow it."""


class _Progress:
    """A running job's visible state: `processing` and its progress, saved at most every
    0.25 s. A job that finishes sooner is never saved as `processing` at all (most jobs
    take milliseconds, and every save is a file create and rename); a slower one shows
    `processing` after 0.25 s even if its processor never reports progress.

    A report is also where a cancel or delete request is noticed (looked for at most
    every 0.25 s): the report raises JobStopped."""

    def __init__(self, job: Job, store: JobStore, stop_requested: Callable[[], bool]) -> None:
        self._job, self._store = job, store
        self._stop_requested = stop_requested
        self._step, self._steps = 0, 1
        self._last_save = self._last_stop_check = time.monotonic()
        self._stopping = self._closed = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(PROGRESS_SAVE_INTERVAL_S, self._save_started)
        self._timer.daemon = True
        self._timer.start()

    def begin_step(self, index: int, steps: int) -> None:
        self._step, self._steps = index, max(steps, 1)
        self._last_stop_check = float("-inf")  # look for a stop request between steps
        self.report(0.0)

    def report(self, fraction: float) -> None:
        """Combine the step's 0..1 into the job's progress, which never goes back."""
        overall = (self._step + min(max(fraction, 0.0), 1.0)) / self._steps
        with self._lock:
            if self._closed:
                return
            now = time.monotonic()
            self._raise_if_stopped(now)
            if overall <= self._job.progress:
                return
            self._job.progress = round(overall, 4)
            if now - self._last_save >= PROGRESS_SAVE_INTERVAL_S:
                self._last_save = now
                self._save()

    def _raise_if_stopped(self, now: float) -> None:
        if not self._stopping and now - self._last_stop_check >= PROGRESS_SAVE_INTERVAL_S:
            self._last_stop_check = now
            self._stopping = self._stop_requested()
        if self._stopping:
            raise JobStopped

    def close(self) -> None:
        """No save of this object lands after this returns: the final one comes next."""
        self._timer.cancel()
        with self._lock:
            self._closed = True

    def _save_started(self) -> None:
        with self._lock:
            if not self._closed:
                self._last_save = self._last_stop_check = time.monotonic()
                self._stopping = self._stop_requested()  # the next report raises
                self._save()

    def _save(self) -> None:
        """Progress is shown, not promised: a store that is away for a moment (Redis
        restarting) skips a save rather than failing the job."""
        try:
            self._store.save(self._job)
        except ServiceBusy:
            log.warning("job %s: progress not saved (the job store is unavailable)", self._job.id)


def run_job(job_id: str, env: JobEnv) -> RunOutcome:
    """Run a job to a final state (or back to queued, for a retry). Never raises for
    anything a processor does. A job another process is running is left alone."""
    try:
        with job_lock(env.layout.upload(job_id)) as held:
            if not held:
                log.info("job %s is running in another process", job_id)
                return RunOutcome(ran=False)
            return _run_locked(job_id, env)
    except FileNotFoundError:
        ended = record_lost(job_id, env, ErrorCode.INTERNAL, "The uploaded file is missing.")
        return RunOutcome(ended=ended)


def _startable(job_id: str, env: JobEnv) -> Job | RunOutcome:
    """The job to run, or the outcome if it is gone, ended already (by an earlier run, or
    cancelled while queued) or was cancelled or deleted while queued (ended here)."""
    try:
        job = env.store.load(job_id)
    except UnknownJob:
        log.warning("job %s vanished before it ran", job_id)
        return RunOutcome()
    if job.status.finished:
        return RunOutcome()
    if env.stop_requested(job_id):
        stop(job, env)  # it never starts
        return RunOutcome(ended=True)
    return job


def _run_locked(job_id: str, env: JobEnv) -> RunOutcome:
    job = _startable(job_id, env)
    if isinstance(job, RunOutcome):
        return job
    _start(job)
    timings: dict[str, float] = {}
    try:
        _run_with_progress(job, env, timings)
    except JobStopped:
        stop(job, env)
    except ProcessorError as exc:
        if exc.transient and job.attempts <= env.max_retries and not env.stop_requested(job_id):
            return _requeue(job, env.store, exc.message)  # not ended: run again later
        _fail(job, env, exc.code, exc.message)
    except MemoryError:
        message = "The job needed more memory than HOPPER_JOB_MEMORY_BYTES allows."
        _fail(job, env, ErrorCode.MEMORY, message)
    except env.timeout_errors:
        _fail(job, env, ErrorCode.TIMEOUT, timeout_message(env.job_timeout_s))
    except ServiceBusy:
        raise  # the store is away: the end cannot be recorded; the caller runs it again
    except Exception as exc:
        log.exception("job %s failed", job_id)
        message = f"Processing failed unexpectedly ({type(exc).__name__}); the log has details."
        _fail(job, env, ErrorCode.INTERNAL, message)
    return RunOutcome(timings=timings, ended=True)


def _run_with_progress(job: Job, env: JobEnv, timings: dict[str, float]) -> None:
    progress = _Progress(job, env.store, lambda: env.stop_requested(job.id) is not None)
    try:
        _run_pipeline(job, env, progress, timings)
    finally:
        progress.close()
    if env.stop_requested(job.id):
        raise JobStopped  # asked while the last step ran: the client was told it would stop
    _finish(job, env, JobStatus.DONE)


def stop(job: Job, env: JobEnv) -> None:
    """Act on a cancel or delete request; the caller holds the job's lock."""
    if env.stop_requested(job.id) is StopKind.DELETE:
        purge(env.layout, env.store, job.id)
        return
    shutil.rmtree(env.layout.artifacts(job.id), ignore_errors=True)  # partial output
    job.artifacts, job.result = [], None
    job.error = JobError(code=ErrorCode.CANCELLED, message=CANCELLED_MESSAGE)
    _finish(job, env, JobStatus.CANCELLED)


def timeout_message(limit_s: float) -> str:
    return f"The job ran longer than {limit_s:g} s (HOPPER_JOB_TIMEOUT) and was stopped."


def record_lost(job_id: str, env: JobEnv, code: ErrorCode, message: str) -> bool:
    """The worker running a job was stopped or died: record why, unless it finished.
    Whether this recorded the job's end."""
    try:
        job = env.store.load(job_id)
    except UnknownJob:
        return False
    if job.status.finished:
        return False
    _fail(job, env, code, message)
    return True


def record_lost_worker(job_id: str, env: JobEnv, code: ErrorCode, message: str) -> bool:
    """Like record_lost, once the dead worker's lock is gone: a killed worker's last
    progress save can then no longer land after (and over) this failure."""
    try:
        with job_lock(env.layout.upload(job_id), wait_s=LOST_WORKER_WAIT_S) as held:
            if not held:
                log.error("job %s: its worker still holds it; not marked %s", job_id, code)
                return False
            return record_lost(job_id, env, code, message)
    except FileNotFoundError:
        return record_lost(job_id, env, code, message)


def put_back(job_id: str, env: JobEnv) -> None:
    """A job cut off by shutdown: queued again, as if this attempt never started."""
    try:
        with job_lock(env.layout.upload(job_id), wait_s=LOST_WORKER_WAIT_S) as held:
            job = env.store.load(job_id) if held else None
            if job is not None and job.status is JobStatus.PROCESSING:
                job.status, job.progress, job.started_at = JobStatus.QUEUED, 0.0, None
                job.attempts = max(job.attempts - 1, 0)
                env.store.save(job)
    except (FileNotFoundError, UnknownJob):
        pass  # deleted meanwhile


def _requeue(job: Job, store: JobStore, reason: str) -> RunOutcome:
    delay = min(2.0 ** (job.attempts - 1), MAX_BACKOFF_S)
    job.status = JobStatus.QUEUED
    job.progress = 0.0
    job.warnings.append(Warning(processor="hopper", message=f"Attempt {job.attempts}: {reason}"))
    store.save(job)
    return RunOutcome(retry_in_s=delay)


def _start(job: Job) -> None:
    job.status = JobStatus.PROCESSING
    job.started_at = utc_now()
    job.attempts += 1
    job.progress = 0.0
    log.info("job started", extra={"job_id": job.id, "attempt": job.attempts})


def _run_pipeline(job: Job, env: JobEnv, progress: _Progress, timings: dict[str, float]) -> None:
    """Run the processors; on return the job is done (the caller records it). Each
    processor's time goes in `timings`, the failed one's too."""
    path = env.layout.upload(job.id)
    job.detected_type = refine_text_type(detect_type(path), job.filename, job.content_type)
    asked = set(job.processors)
    job.processors = env.registry.expand(job.processors, job.detected_type)
    job.versions = {"hopper": __version__}
    artifacts = Artifacts(job.id, env.layout.artifacts(job.id))
    results: dict[str, Any] = {}
    for index, name in enumerate(job.processors):
        processor = env.registry.get(name)
        job.versions[name] = processor.version
        progress.begin_step(index, len(job.processors))
        ctx = _context(job, path, progress.report, artifacts)
        started = time.perf_counter()
        try:
            results[name] = _bounded(job, name, processor.run(ctx))
        except ProcessorError as exc:
            if name not in asked and exc.code is ErrorCode.INVALID_INPUT and not exc.transient:
                # `auto` guessed from the bytes and the guess did not hold: a partial
                # result with a warning, not a failed job.
                job.warnings.append(Warning(processor=name, message=exc.message))
                continue
            exc.message = f"{name}: {exc.message}"
            raise
        finally:
            timings[name] = time.perf_counter() - started
            _log_step(job.id, name, timings[name])
    job.result = results
    job.artifacts = list(artifacts.written.values())
    job.progress = 1.0


def _log_step(job_id: str, processor: str, seconds: float) -> None:
    extra = {"job_id": job_id, "processor": processor, "duration_ms": round(seconds * 1000, 3)}
    log.info("processor finished", extra=extra)


def _bounded(job: Job, name: str, result: dict[str, Any]) -> dict[str, Any]:
    """A result over MAX_RESULT_BYTES of JSON is dropped with a warning, not stored."""
    size = len(json.dumps(result, default=str))
    if size <= MAX_RESULT_BYTES:
        return result
    message = f"The result was {size:,} bytes of JSON, over the {MAX_RESULT_BYTES:,} limit."
    job.warnings.append(Warning(processor=name, message=message))
    return {"truncated": True}


def _context(
    job: Job, path: Path, report: Callable[[float], None], artifacts: Artifacts
) -> Context:
    return Context(
        job_id=job.id,
        path=path,
        filename=job.filename,
        size=job.size,
        sha256=job.sha256,
        detected_type=job.detected_type or "application/octet-stream",
        declared_type=job.content_type,
        progress=report,
        artifacts=artifacts,
    )


def _fail(job: Job, env: JobEnv, code: ErrorCode, message: str) -> None:
    job.error = JobError(code=code, message=message)
    _finish(job, env, JobStatus.FAILED)


def _finish(job: Job, env: JobEnv, status: JobStatus) -> None:
    """Save the job's final state, or delete it if that was asked for meanwhile."""
    if env.stop_requested(job.id) is StopKind.DELETE:
        purge(env.layout, env.store, job.id)
        return
    job.status = status
    job.finished_at = utc_now()
    if env.retention_s:
        job.expires_at = job.finished_at + timedelta(seconds=env.retention_s)
    if env.dedupe and status is JobStatus.DONE:
        remember(env.layout, job)
    env.store.save(job)
    clear_stop(env.layout, job.id)
    fields = {"job_id": job.id, "status": status.value}
    if job.error is not None:
        fields["error_code"] = job.error.code.value
    log.info("job finished", extra=fields)
