"""Start-up repair after a crash: drop leftovers, find the jobs that must run again."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

from app.jobs import record_lost
from app.layout import DataDir, is_job_id
from app.locks import job_lock
from app.models import ErrorCode, JobStatus
from app.store import JsonJobStore

log = logging.getLogger("hopper.recovery")


def recover(layout: DataDir, store: JsonJobStore, max_retries: int) -> list[str]:
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
            if job.status is JobStatus.PROCESSING and job.attempts > max_retries:
                _give_up(layout, store, job_id, job.attempts)
            else:
                pending.append(job_id)
    orphans = _remove_orphan_files(layout)
    if temps or orphans or pending:
        log.info(
            "recovery: %d temp records, %d unfinished uploads removed; %d jobs queued again",
            temps,
            orphans,
            len(pending),
        )
    return pending


def _give_up(layout: DataDir, store: JsonJobStore, job_id: str, attempts: int) -> None:
    """Mark a job interrupted, unless a live process holds it (then it is running)."""
    message = f"The server stopped while this job ran, {attempts} times."
    try:
        with job_lock(layout.upload(job_id)) as held:
            if held:
                record_lost(job_id, store, ErrorCode.INTERRUPTED, message)
    except FileNotFoundError:
        record_lost(job_id, store, ErrorCode.INTERRUPTED, message)


def _remove_orphan_files(layout: DataDir) -> int:
    """A stored file with no record and no lock never got its 202: an upload cut off by a
    crash (mid-body, or before its record was saved)."""
    removed = 0
    for entry in os.scandir(layout.files):
        if is_job_id(entry.name) and not layout.record(entry.name).exists():
            # Checked again under the lock: the record may have landed in between.
            removed += _remove_if_unlocked(entry.path, layout.record(entry.name))
    return removed


def _remove_if_unlocked(path: str, record: Path | None = None) -> bool:
    """Uploads hold an flock on their file until the record is saved (ingest.PartialFile)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # an upload under way in another live process
    else:
        if record is not None and record.exists():
            return False
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()
            return True
        return False
    finally:
        os.close(fd)
