"""Running one job: the pipeline, progress in the store, and every failure recorded.

Plain values in, no web framework: the local dispatcher calls run_job in its own worker
threads, and a Celery worker can import it the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app import __version__
from app.detect import detect_type
from app.errors import UnknownJob
from app.layout import DataDir
from app.models import ErrorCode, Job, JobError, JobStatus, utc_now
from app.processors.base import Context, ProcessorError
from app.processors.registry import Registry
from app.store import JobStore

log = logging.getLogger("hopper.jobs")

PROGRESS_SAVE_INTERVAL_S = 0.25  # polling clients see movement; the store is not hammered


@dataclass(frozen=True)
class JobEnv:
    """Everything a job needs from the service, as plain values."""

    store: JobStore
    layout: DataDir
    registry: Registry


class _Progress:
    """Combines a step's 0..1 into the job's progress: monotonic, saved at most every 0.25 s."""

    def __init__(self, job: Job, store: JobStore, steps: int) -> None:
        self._job, self._store, self._steps = job, store, max(steps, 1)
        self._step = 0
        self._last_save = 0.0
        self._lock = threading.Lock()

    def begin_step(self, index: int) -> None:
        self._step = index
        self.report(0.0)

    def report(self, fraction: float) -> None:
        overall = (self._step + min(max(fraction, 0.0), 1.0)) / self._steps
        with self._lock:
            if overall <= self._job.progress:
                return
            self._job.progress = round(overall, 4)
            now = time.monotonic()
            if now - self._last_save >= PROGRESS_SAVE_INTERVAL_S:
                self._last_save = now
                self._store.save(self._job)


def run_job(job_id: str, env: JobEnv) -> None:
    """Run a job to a final state. Never raises for anything a processor does."""
    try:
        job = env.store.load(job_id)
    except UnknownJob:
        log.warning("job %s vanished before it ran", job_id)
        return
    if job.status.finished:
        return
    _start(job, env.store)
    try:
        _run_pipeline(job, env)
    except ProcessorError as exc:
        _fail(job, env.store, exc.code, exc.message)
    except Exception as exc:
        log.exception("job %s failed", job_id)
        message = f"Processing failed unexpectedly ({type(exc).__name__}); the log has details."
        _fail(job, env.store, ErrorCode.INTERNAL, message)


def _start(job: Job, store: JobStore) -> None:
    job.status = JobStatus.PROCESSING
    job.started_at = utc_now()
    job.attempts += 1
    job.progress = 0.0
    store.save(job)


def _run_pipeline(job: Job, env: JobEnv) -> None:
    path = env.layout.upload(job.id)
    if not path.exists():
        raise ProcessorError(ErrorCode.INTERNAL, "The uploaded file is missing from storage.")
    job.detected_type = detect_type(path)
    job.processors = env.registry.expand(job.processors, job.detected_type)
    job.versions = {"hopper": __version__}
    progress = _Progress(job, env.store, len(job.processors))
    results = {}
    for index, name in enumerate(job.processors):
        processor = env.registry.get(name)
        job.versions[name] = processor.version
        progress.begin_step(index)
        ctx = _context(job, path, progress.report)
        try:
            results[name] = processor.run(ctx)
        except ProcessorError as exc:
            exc.message = f"{name}: {exc.message}"
            raise
    job.result = results
    job.status = JobStatus.DONE
    job.progress = 1.0
    job.finished_at = utc_now()
    env.store.save(job)


def _context(job: Job, path: Path, report: Callable[[float], None]) -> Context:
    return Context(
        job_id=job.id,
        path=path,
        filename=job.filename,
        size=job.size,
        sha256=job.sha256,
        detected_type=job.detected_type or "application/octet-stream",
        declared_type=job.content_type,
        progress=report,
    )


def _fail(job: Job, store: JobStore, code: ErrorCode, message: str) -> None:
    job.status = JobStatus.FAILED
    job.error = JobError(code=code, message=message)
    job.finished_at = utc_now()
    store.save(job)
