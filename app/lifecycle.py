"""Cancelling and deleting jobs at a client's request.

A job nobody is running (queued, or finished) is changed at once, under its lock. A
running job holds its lock in its worker, so it is asked to stop instead: its worker
notices at its next progress report and records the cancel, or deletes the job, itself.
"""

from __future__ import annotations

from enum import Enum

from app.cleanup import StopKind, clear_stop, purge, request_stop
from app.errors import HopperError, UnknownJob
from app.jobs import JobEnv, stop
from app.locks import job_lock
from app.models import Job

DELETE_WAIT_S = 5.0  # a running job reports progress often: give it a moment to stop


class JobFinished(HopperError):
    status_code = 409


class Outcome(Enum):
    DONE = "done"  # cancelled or deleted now
    PENDING = "pending"  # the job is running; its worker stops it at its next report


def cancel_job(job_id: str, env: JobEnv) -> tuple[Job | None, Outcome]:
    """Cancel a queued or running job. Raises UnknownJob, or JobFinished (409)."""
    job = env.store.load(job_id)
    if job.status.finished:
        raise JobFinished(f"The job is already {job.status.value}; there is nothing to cancel.")
    request_stop(env.layout, job_id, StopKind.CANCEL)  # first, so a worker starting now sees it
    return _stop_if_free(job_id, env, wait_s=0.0)


def delete_job(job_id: str, env: JobEnv) -> Outcome:
    """Delete a job's file, artifacts and record, cancelling it first if it runs."""
    env.store.load(job_id)  # UnknownJob for an id with no record
    request_stop(env.layout, job_id, StopKind.DELETE)
    _, outcome = _stop_if_free(job_id, env, wait_s=DELETE_WAIT_S)
    return outcome


def _stop_if_free(job_id: str, env: JobEnv, wait_s: float) -> tuple[Job | None, Outcome]:
    try:
        with job_lock(env.layout.upload(job_id), wait_s=wait_s) as held:
            if not held:
                return env.store.load(job_id), Outcome.PENDING
            return _stop_now(job_id, env), Outcome.DONE
    except FileNotFoundError:  # the file went first: a purge under way, or a broken job
        purge(env.layout, env.store, job_id)
        return None, Outcome.DONE


def _stop_now(job_id: str, env: JobEnv) -> Job | None:
    """Under the job's lock, so no worker runs it: act on the request just written."""
    try:
        job = env.store.load(job_id)
    except UnknownJob:
        return None  # its worker deleted it while we waited for the lock
    if env.stop_requested(job_id) is StopKind.DELETE:
        purge(env.layout, env.store, job_id)
        return None
    if job.status.finished:  # it finished before the lock was ours
        clear_stop(env.layout, job_id)
    else:
        stop(job, env)
    return job
