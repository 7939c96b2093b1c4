"""Start-up repair after a crash: drop leftovers, find the jobs that must run again."""

from __future__ import annotations

import contextlib
import logging

from app.cleanup import remove_orphans
from app.jobs import JobEnv, record_lost
from app.locks import lease_if_free, lock_if_free
from app.models import ErrorCode, JobStatus
from app.store import JobStore

log = logging.getLogger("hopper.recovery")


def recover(env: JobEnv, store: JobStore) -> list[str]:
    """Remove unfinished uploads and temp records; return the ids of jobs to queue again.

    A job that was running when the server died is run again, unless it has been started
    more than `max_retries` times already: a job that takes the server down with it must
    not do so at every start. It ends `failed` with code `interrupted`.
    """
    temps = store.remove_temp_files()
    pending: list[str] = []
    for job_id in store.job_ids():
        with contextlib.suppress(Exception):  # an unreadable record is left for a person
            job = store.load(job_id)
            if job.status.finished:
                continue
            if job.status is JobStatus.PROCESSING and job.attempts > env.max_retries:
                _give_up(env, job_id, job.attempts)
            else:
                pending.append(job_id)
    orphans = remove_orphans(env.layout, store)
    if temps or orphans or pending:
        log.info(
            "recovery: %d temp records, %d leftovers removed; %d jobs queued again",
            temps,
            orphans,
            len(pending),
        )
    return pending


def _give_up(env: JobEnv, job_id: str, attempts: int) -> None:
    """Mark a job interrupted, unless a live process owns it or runs it."""
    message = f"The server stopped while this job ran, {attempts} times."
    path = env.layout.upload(job_id)
    with lease_if_free(path) as free, lock_if_free(path) as held:
        if (free and held) or not path.exists():
            record_lost(job_id, env, ErrorCode.INTERRUPTED, message)
