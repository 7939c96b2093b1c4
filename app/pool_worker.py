"""The job worker process: what runs inside each of the dispatcher's worker processes.

It imports no web framework. Each worker builds its own store and registry once, lowers
its CPU priority below the server's, and caps its own memory.
"""

from __future__ import annotations

import os
import resource

from app.backends import open_store
from app.config import Settings
from app.jobs import JobEnv, RunOutcome, run_job
from app.logs import configure_logging

WORKER_NICENESS = 10  # jobs yield the CPU to the server answering requests

_env: JobEnv | None = None


def init_worker(settings_json: str) -> None:
    """pebble calls this once in each new worker process."""
    global _env
    settings = Settings.model_validate_json(settings_json)
    configure_logging(settings.log_format, settings.log_level)  # job lines like the server's
    os.nice(WORKER_NICENESS)
    if settings.job_memory_bytes:
        limit = settings.job_memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _env = JobEnv.from_settings(settings, open_store(settings))


def run_in_worker(job_id: str) -> RunOutcome:
    if _env is None:  # pragma: no cover - init_worker always runs first
        raise RuntimeError("worker used before init_worker")
    return run_job(job_id, _env)
