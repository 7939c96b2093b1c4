"""The service's parts, built once per app and shared by routes and the lifespan."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from app.backends import open_store
from app.config import Settings
from app.dedupe import Dedupe
from app.dispatch import Dispatcher, ProcessDispatcher
from app.errors import HopperError
from app.jobs import JobEnv
from app.layout import DataDir
from app.metrics import JOB_BUCKETS, Metrics, count_finished
from app.processors.registry import Registry
from app.shutdown import ShutdownWatch
from app.store import JobStore
from app.uploads import UploadEnv
from app.webhooks.deliveries import Deliveries

if TYPE_CHECKING:  # imported where used: the local backend never loads redis-py
    from app.jobmetrics import RedisJobMetrics
    from app.redisstore import RedisJobStore


@dataclass(frozen=True)
class Services:
    settings: Settings
    layout: DataDir
    store: JobStore
    registry: Registry
    job_env: JobEnv  # what running, cancelling and deleting a job need
    dispatcher: Dispatcher
    upload_env: UploadEnv  # what an upload needs, built once rather than per request
    shutdown: ShutdownWatch
    metrics: Metrics
    webhooks: Deliveries


def build_services(settings: Settings) -> Services:
    layout = DataDir(settings.data_dir)
    store = open_store(settings)
    job_env = JobEnv.from_settings(settings, store)
    dispatcher = _dispatcher(settings, job_env)
    dedupe = None
    if settings.dedupe:  # the workers name finished jobs' results; uploads look them up
        dedupe = Dedupe(layout, store, job_env.registry, settings.retention, settings.fsync)
    upload_env = UploadEnv(
        settings, layout, store, job_env.registry, dispatcher.waiting, dispatcher.hold, dedupe
    )
    metrics = Metrics(
        queue_depth=_last_known(dispatcher.waiting),
        free_bytes=layout.free_bytes_now,
        shared_jobs=_shared_job_metrics(settings, store),
    )
    dispatcher.when_finished(functools.partial(count_finished, store, metrics.jobs))
    webhooks = Deliveries(settings, layout, store)
    dispatcher.when_finished(webhooks.job_finished)
    if isinstance(dispatcher, ProcessDispatcher):
        job_env = replace(job_env, adopt=dispatcher.adopt)  # the sweeper hands it orphans
    return Services(
        settings,
        layout,
        store,
        job_env.registry,
        job_env,
        dispatcher,
        upload_env,
        ShutdownWatch(),
        metrics,
        webhooks,
    )


def _dispatcher(settings: Settings, job_env: JobEnv) -> Dispatcher:
    if settings.backend == "celery":
        # Imported here: Celery, Kombu and redis-py are 40-odd MiB a process the local
        # backend never needs.
        from app.celery_dispatch import CeleryDispatcher

        return CeleryDispatcher(settings, job_env, _redis_store(job_env.store).client)
    return ProcessDispatcher(settings, job_env)


def _last_known(read: Callable[[], int]) -> Callable[[], int]:
    """For a gauge: a value that cannot be read now (Redis down) is the last one read."""
    last = 0

    def gauge() -> int:
        nonlocal last
        with contextlib.suppress(HopperError):
            last = read()
        return last

    return gauge


def _shared_job_metrics(settings: Settings, store: JobStore) -> RedisJobMetrics | None:
    """With Celery, jobs end in the workers: their metrics are counted in Redis."""
    if settings.backend != "celery":
        return None
    from app.jobmetrics import RedisJobMetrics

    return RedisJobMetrics(_redis_store(store).client, settings.queue, JOB_BUCKETS)


def _redis_store(store: JobStore) -> RedisJobStore:
    from app.redisstore import RedisJobStore

    assert isinstance(store, RedisJobStore)  # noqa: S101 - open_store made it so
    return store
