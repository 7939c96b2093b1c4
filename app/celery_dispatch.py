"""The dispatcher of HOPPER_BACKEND=celery: jobs are published to Celery, not run here.

The upload's record (queued, in Redis) is saved before its 202; its BackgroundTasks job
then publishes it. A process that dies between the two leaves a job nobody published:
`<queue>:published` (a hash of job id to when it was published, until it ends) tells the
sweep, which publishes every queued job that never was. A message a worker took and lost
comes back through Redis's visibility timeout; a job published twice runs once (the worker
skips a finished job, and one another worker holds the run lock of).

The sweep also ends what cannot end by itself: a job whose process Celery killed at the
hard time limit (the worker's main process leaves a `<queue>:timedout:<id>` mark) is
recorded `timeout`, here, under its run lock; a `processing` job whose lock is free and
that no redelivery restarted within the visibility timeout is published again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import timedelta
from typing import cast

import redis
from kombu.exceptions import OperationalError

from app.celery_app import RUN_JOB_TASK, make_celery, visibility_timeout_s
from app.config import Settings
from app.dispatch import FinishHook
from app.errors import StoreUnavailable, UnknownJob
from app.jobs import JobEnv, record_lost, timeout_message
from app.locks import job_lock
from app.models import ErrorCode, Job, JobStatus, utc_now
from app.redisstore import answering
from app.store import is_open

log = logging.getLogger("hopper.dispatch")

PUBLISH_GRACE_S = 30.0  # an upload's own BackgroundTasks job publishes within moments
# A connection Redis dropped (it restarted) is replaced at once; a Redis that is down is
# not waited for: the sweep publishes later.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def timed_out_key(prefix: str, job_id: str) -> str:
    return f"{prefix}:timedout:{job_id}"


class Published:
    """When each unfinished job was last handed to Celery."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis, self._key, self._prefix = client, f"{prefix}:published", prefix

    def mark(self, job_id: str) -> None:
        with answering():
            self._redis.hset(self._key, job_id, str(time.time()))

    def timed_out(self, job_id: str) -> bool:
        with answering():
            return bool(self._redis.exists(timed_out_key(self._prefix, job_id)))

    def forget(self, job_id: str) -> None:
        with answering():
            self._redis.hdel(self._key, job_id)
            self._redis.delete(timed_out_key(self._prefix, job_id))

    def last(self, job_id: str) -> float | None:
        with answering():
            value = self._redis.hget(self._key, job_id)
        return None if value is None else float(value)

    def count(self) -> int:
        with answering():
            return int(self._redis.hlen(self._key))

    def ids(self) -> list[str]:
        with answering():
            keys = cast(list[bytes], self._redis.hkeys(self._key))
        return [job_id.decode() for job_id in keys]


class CeleryDispatcher:
    def __init__(self, settings: Settings, env: JobEnv, client: redis.Redis) -> None:
        self._settings, self._env, self._redis = settings, env, client
        self._celery = make_celery(settings)
        self.published = Published(client, settings.queue)
        self._republish_after_s = visibility_timeout_s(settings)
        self._finish_hooks: list[FinishHook] = []

    def start(self) -> None:
        pass  # the broker connection opens with the first publish

    def hold(self, job_id: str) -> bool:
        return True  # the record in Redis is the job's claim; the sweep publishes it if lost

    def submit(self, job_id: str) -> None:
        """Publish the job; if Redis is down, the sweep publishes it once it is back."""
        try:
            self.published.mark(job_id)  # first: a fast worker's end of it comes after
        except StoreUnavailable:
            log.warning("job %s could not be published; a sweep will", job_id, exc_info=True)
            return
        try:
            self._celery.send_task(
                RUN_JOB_TASK,
                args=(job_id,),
                task_id=job_id,
                queue=self._settings.queue,
                retry_policy=PUBLISH_RETRY,
            )
        except (OperationalError, redis.RedisError):
            log.warning("job %s could not be published; a sweep will", job_id, exc_info=True)
            with contextlib.suppress(StoreUnavailable):
                self.published.forget(job_id)

    def adopt(self, job_id: str) -> bool:
        self.submit(job_id)
        return True

    def revoke(self, job_id: str) -> None:
        """Workers drop the job's message unstarted (a running job stops at its next
        progress report, through its stop request, as in local mode). In a thread: Kombu
        retries a broadcast for as long as Redis is away, and the request must not wait."""
        threading.Thread(target=self._revoke, args=(job_id,), daemon=True).start()

    def _revoke(self, job_id: str) -> None:
        with contextlib.suppress(OperationalError, redis.RedisError, StoreUnavailable):
            self._celery.control.revoke(job_id)
            if not self._unfinished(job_id):  # deleted, or cancelled while queued
                self.published.forget(job_id)

    def _unfinished(self, job_id: str) -> bool:
        try:
            return not self._env.store.load(job_id).status.finished
        except UnknownJob:
            return False

    def running(self) -> bool:
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False

    def waiting(self) -> int:
        """Jobs published and not finished, queued or running: the whole deployment's."""
        return self.published.count()

    def when_finished(self, callback: FinishHook) -> None:
        self._finish_hooks.append(callback)

    def notify_finished(self, job_id: str, timings: dict[str, float] | None = None) -> None:
        with contextlib.suppress(StoreUnavailable):
            self.published.forget(job_id)  # cancelled while queued: its worker never ends it
        for hook in self._finish_hooks:
            try:
                hook(job_id, timings or {})
            except Exception:
                log.exception("job %s: a finish hook failed", job_id)

    def stop(self, timeout_s: float) -> None:
        pass  # jobs run in the workers: an API process stopping cuts none of them off

    def sweep(self) -> int:
        """Publish lost jobs; fail those killed at the hard time limit; forget finished and
        deleted ones (the queue's length, HOPPER_MAX_QUEUE, counts the rest). The count
        acted on."""
        acted = self._forget_ended()
        now = time.time()
        store = self._env.store
        for job_id in store.open_candidates():
            with contextlib.suppress(ValueError, FileNotFoundError):  # unreadable, or gone
                try:
                    job = store.load(job_id)
                except UnknownJob:
                    job = None
                if job is None or not is_open(job):
                    store.drop_if_closed(job_id)
                elif job.status is JobStatus.QUEUED and self._never_published(job, now):
                    log.info("job %s was recorded but never published: publishing it", job_id)
                    self.submit(job_id)
                    acted += 1
                elif job.status is JobStatus.PROCESSING:
                    acted += self._end_if_stuck(job)
        return acted

    def _forget_ended(self) -> int:
        forgotten = 0
        for job_id in self.published.ids():
            with contextlib.suppress(ValueError):
                try:
                    ended = self._env.store.load(job_id).status.finished
                except UnknownJob:
                    ended = True
                if ended:
                    self.published.forget(job_id)
                    forgotten += 1
        return forgotten

    def _never_published(self, job: Job, now: float) -> bool:
        recent = job.created_at.timestamp() >= now - PUBLISH_GRACE_S
        return not recent and self.published.last(job.id) is None

    def _end_if_stuck(self, job: Job) -> int:
        """Record the timeout of a job killed at the hard limit; publish again one whose
        worker vanished and whose message never came back. Never one that runs."""
        timed_out = self.published.timed_out(job.id)
        if not timed_out and not self._past_redelivery(job):
            return 0
        with job_lock(self._env.layout.upload(job.id)) as free:
            if not free:
                return 0  # it runs
            if timed_out:
                message = timeout_message(self._settings.job_timeout)
                record_lost(job.id, self._env, ErrorCode.TIMEOUT, message)
        if timed_out:
            self.notify_finished(job.id)  # its webhook, and the published mark goes
        else:
            log.warning("job %s: its worker was lost and its message did not come back", job.id)
            self.submit(job.id)
        return 1

    def _past_redelivery(self, job: Job) -> bool:
        limit = timedelta(seconds=self._republish_after_s + PUBLISH_GRACE_S)
        return job.started_at is not None and job.started_at + limit < utc_now()
