"""Running one job: the pipeline, progress in the store, and every failure recorded.

Plain values in, no web framework: the local dispatcher calls run_job in its own worker
threads, and a Celery worker can import it the same way.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import __version__
from app.artifacts import Artifacts
from app.config import Settings
from app.detect import detect_type, refine_text_type
from app.errors import UnknownJob
from app.layout import DataDir
from app.locks import job_lock
from app.models import ErrorCode, Job, JobError, JobStatus, Warning, utc_now
from app.processors.base import Context, ProcessorError
from app.processors.registry import Registry, load_registry
from app.store import JobStore, JsonJobStore

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

    @classmethod
    def from_settings(cls, settings: Settings) -> JobEnv:
        layout = DataDir(settings.data_dir)
        return cls(
            store=JsonJobStore(layout, fsync=settings.fsync),
            layout=layout,
            registry=load_registry(),
            max_retries=settings.max_retries,
        )


@dataclass(frozen=True)
class RunOutcome:
    """What the dispatcher must do next: nothing, or run the job again after a pause."""

    retry_in_s: float | None = None


MAX_BACKOFF_S = 60.0
LOST_WORKER_WAIT_S = 10.0  # the pool stops a timed-out worker as it reports it: ms, not s


class _Progress:
    """A running job's visible state: `processing` and its progress, saved at most every
    0.25 s. A job that finishes sooner is never saved as `processing` at all (most jobs
    take milliseconds, and every save is a file create and rename); a slower one shows
    `processing` after 0.25 s even if its processor never reports progress."""

    def __init__(self, job: Job, store: JobStore) -> None:
        self._job, self._store = job, store
        self._step, self._steps = 0, 1
        self._last_save = time.monotonic()
        self._closed = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(PROGRESS_SAVE_INTERVAL_S, self._save_started)
        self._timer.daemon = True
        self._timer.start()

    def begin_step(self, index: int, steps: int) -> None:
        self._step, self._steps = index, max(steps, 1)
        self.report(0.0)

    def report(self, fraction: float) -> None:
        """Combine the step's 0..1 into the job's progress, which never goes back."""
        overall = (self._step + min(max(fraction, 0.0), 1.0)) / self._steps
        with self._lock:
            if overall <= self._job.progress or self._closed:
                return
            self._job.progress = round(overall, 4)
            now = time.monotonic()
            if now - self._last_save >= PROGRESS_SAVE_INTERVAL_S:
                self._last_save = now
                self._store.save(self._job)

    def close(self) -> None:
        """No save of this object lands after this returns: the final one comes next."""
        self._timer.cancel()
        with self._lock:
            self._closed = True

    def _save_started(self) -> None:
        with self._lock:
            if not self._closed:
                self._last_save = time.monotonic()
                self._store.save(self._job)


def run_job(job_id: str, env: JobEnv) -> RunOutcome:
    """Run a job to a final state (or back to queued, for a retry). Never raises for
    anything a processor does. A job another process is running is left alone."""
    try:
        with job_lock(env.layout.upload(job_id)) as held:
            if not held:
                log.info("job %s is running in another process", job_id)
                return RunOutcome()
            return _run_locked(job_id, env)
    except FileNotFoundError:
        record_lost(job_id, env.store, ErrorCode.INTERNAL, "The uploaded file is missing.")
        return RunOutcome()


def _run_locked(job_id: str, env: JobEnv) -> RunOutcome:
    try:
        job = env.store.load(job_id)
    except UnknownJob:
        log.warning("job %s vanished before it ran", job_id)
        return RunOutcome()
    if job.status.finished:
        return RunOutcome()
    _start(job)
    try:
        progress = _Progress(job, env.store)
        try:
            _run_pipeline(job, env, progress)
        finally:
            progress.close()
        env.store.save(job)
    except ProcessorError as exc:
        if exc.transient and job.attempts <= env.max_retries:
            return _requeue(job, env.store, exc.message)
        _fail(job, env.store, exc.code, exc.message)
    except MemoryError:
        message = "The job needed more memory than HOPPER_JOB_MEMORY_BYTES allows."
        _fail(job, env.store, ErrorCode.MEMORY, message)
    except Exception as exc:
        log.exception("job %s failed", job_id)
        message = f"Processing failed unexpectedly ({type(exc).__name__}); the log has details."
        _fail(job, env.store, ErrorCode.INTERNAL, message)
    return RunOutcome()


def record_lost(job_id: str, store: JobStore, code: ErrorCode, message: str) -> None:
    """The worker running a job was stopped or died: record why, unless it finished."""
    try:
        job = store.load(job_id)
    except UnknownJob:
        return
    if not job.status.finished:
        _fail(job, store, code, message)


def record_lost_worker(job_id: str, env: JobEnv, code: ErrorCode, message: str) -> None:
    """Like record_lost, once the dead worker's lock is gone: a killed worker's last
    progress save can then no longer land after (and over) this failure."""
    try:
        with job_lock(env.layout.upload(job_id), wait_s=LOST_WORKER_WAIT_S) as held:
            if not held:
                log.error("job %s: its worker still holds it; not marked %s", job_id, code)
                return
            record_lost(job_id, env.store, code, message)
    except FileNotFoundError:
        record_lost(job_id, env.store, code, message)


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


def _run_pipeline(job: Job, env: JobEnv, progress: _Progress) -> None:
    """Run the processors; on return the job is done (the caller saves it)."""
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
    job.result = results
    job.artifacts = list(artifacts.written.values())
    job.status = JobStatus.DONE
    job.progress = 1.0
    job.finished_at = utc_now()


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


def _fail(job: Job, store: JobStore, code: ErrorCode, message: str) -> None:
    job.status = JobStatus.FAILED
    job.error = JobError(code=code, message=message)
    job.finished_at = utc_now()
    store.save(job)
