"""The Celery worker of HOPPER_BACKEND=celery: `celery -A app.worker worker` (or
`hopper worker`), with the same HOPPER_ settings as the API, HOPPER_DATA_DIR naming the
shared data directory.

Each worker process runs one job at a time exactly as the local pool does (app.jobs.
run_job: the same pipeline, record, artifacts and run lock), at a lower CPU priority and
under HOPPER_JOB_MEMORY_BYTES. Celery's soft time limit ends a job as `timeout`; a job
that ignores it is killed at the hard limit, marked here, and recorded `timeout` by the
API's sweep; a Redis that is away while a job ends has the job run again later; a
transient processor error is retried with the same backoff as in local mode. A job whose
worker process keeps dying is given up after HOPPER_MAX_RETRIES + 1 deliveries, as
`crashed`: a plugin that kills its process must not do so forever.
"""

from __future__ import annotations

import logging
import os
import resource
from dataclasses import replace
from typing import Any

import redis
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_failure, worker_process_init, worker_process_shutdown
from redis.exceptions import RedisError

from app.celery_app import RUN_JOB_TASK, make_celery
from app.celery_dispatch import Published, timed_out_key
from app.config import get_settings
from app.errors import StoreUnavailable
from app.jobmetrics import RedisJobMetrics
from app.jobs import JobEnv, record_lost_worker, run_job
from app.logs import configure_logging
from app.metrics import JOB_BUCKETS, count_finished
from app.models import ErrorCode
from app.pool_worker import WORKER_NICENESS
from app.redisstore import RedisJobStore, answering, connect
from app.webhooks.deliveries import Deliveries

log = logging.getLogger("hopper.worker")

settings = get_settings()
app = make_celery(settings)  # what `celery -A app.worker` finds

STARTS_TTL_S = 7 * 86400
STORE_RETRY_S = 5.0


class _Process:
    """What each worker process builds once, after the fork (sockets are per process)."""

    def __init__(self) -> None:
        self.client = connect(settings.redis_url)
        store = RedisJobStore(self.client, settings.queue)
        env = JobEnv.from_settings(settings, store)
        self.env = replace(env, timeout_errors=(SoftTimeLimitExceeded,))
        self.published = Published(self.client, settings.queue)
        self.webhooks = Deliveries(settings, self.env.layout, store)
        self.webhooks.start()
        self.metrics = RedisJobMetrics(self.client, settings.queue, JOB_BUCKETS)

    def starts(self, job_id: str) -> int:
        """Deliveries of this job since an attempt last ended by itself."""
        key = f"{settings.queue}:starts:{job_id}"
        with answering(), self.client.pipeline() as pipe:
            pipe.incr(key)
            pipe.expire(key, STARTS_TTL_S)
            count, _ = pipe.execute()
        return int(count)

    def ended(self, job_id: str) -> None:
        with answering():
            self.client.delete(f"{settings.queue}:starts:{job_id}")


_process: _Process | None = None
_main_client: redis.Redis | None = None  # the worker's main process's, for timeout marks


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    global _process
    configure_logging(settings.log_format, settings.log_level)
    os.nice(WORKER_NICENESS)
    if settings.job_memory_bytes:
        limit = settings.job_memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _process = _Process()


@worker_process_shutdown.connect
def _stop_process(**_: Any) -> None:
    if _process is not None:
        _process.webhooks.stop()


def _this_process() -> _Process:
    global _process
    if _process is None:  # a solo pool has no child processes, so no init signal
        _process = _Process()
    return _process


@app.task(name=RUN_JOB_TASK, bind=True)
def run(task: Task, job_id: str) -> None:  # type: ignore[type-arg]
    proc = _this_process()
    try:
        if proc.starts(job_id) > settings.max_retries + 1:
            message = "The worker process running this job was lost every time it ran."
            ended = record_lost_worker(job_id, proc.env, ErrorCode.CRASHED, message)
            _finished(proc, job_id, {}, ended=ended)
            return
        outcome = run_job(job_id, proc.env)
    except StoreUnavailable as exc:  # Redis away: its end is unrecorded; run it again later
        raise task.retry(countdown=STORE_RETRY_S, max_retries=None) from exc
    if not outcome.ran:
        return  # another worker runs it (a duplicate message): that one ends it
    proc.ended(job_id)
    if outcome.retry_in_s is not None:
        raise task.retry(countdown=outcome.retry_in_s, max_retries=None)
    _finished(proc, job_id, outcome.timings, ended=outcome.ended)


@task_failure.connect
def _hard_time_limit(
    sender: Task | None = None,  # type: ignore[type-arg]
    exception: BaseException | None = None,
    args: tuple[Any, ...] = (),
    **_: Any,
) -> None:
    """In the worker's main process: the job's process was killed at the hard time limit,
    so the job never recorded its end. Its message is acknowledged, not given back."""
    if getattr(sender, "name", None) != RUN_JOB_TASK or not isinstance(
        exception, TimeLimitExceeded
    ):
        return
    job_id = str(args[0])
    # Only a mark here: this process forks the pool's next processes, which must not
    # inherit a job's lock. The API's sweep records the timeout, under the job's lock.
    global _main_client
    if _main_client is None:
        _main_client = connect(settings.redis_url)
    try:
        _main_client.set(timed_out_key(settings.queue, job_id), "1", ex=STARTS_TTL_S)
    except RedisError:
        log.exception("job %s: its hard time limit could not be recorded", job_id)


def _finished(proc: _Process, job_id: str, timings: dict[str, float], *, ended: bool) -> None:
    proc.published.forget(job_id)
    if ended:  # counted by the run that ended it: a second delivery is not a second job
        try:
            count_finished(proc.env.store, proc.metrics, job_id, timings)
        except Exception:  # the job has ended; only its count is lost
            log.exception("job %s: not counted in /metrics", job_id)
    try:
        proc.webhooks.job_finished(job_id, timings)
    except Exception:  # the job has ended; a pending round is resumed by the API's sweep
        log.exception("job %s: its webhook could not be started", job_id)
