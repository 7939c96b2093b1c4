"""The service's parts, built once per app and shared by routes and the lifespan."""

from __future__ import annotations

from dataclasses import dataclass, replace

from app.config import Settings
from app.dedupe import Dedupe
from app.dispatch import Dispatcher, FinishHook, ProcessDispatcher
from app.errors import UnknownJob
from app.jobs import JobEnv
from app.layout import DataDir
from app.metrics import Metrics
from app.processors.registry import Registry, load_registry
from app.shutdown import ShutdownWatch
from app.store import JsonJobStore
from app.uploads import UploadEnv
from app.webhooks.deliveries import Deliveries


@dataclass(frozen=True)
class Services:
    settings: Settings
    layout: DataDir
    store: JsonJobStore
    registry: Registry
    job_env: JobEnv  # what running, cancelling and deleting a job need
    dispatcher: Dispatcher
    upload_env: UploadEnv  # what an upload needs, built once rather than per request
    shutdown: ShutdownWatch
    metrics: Metrics
    webhooks: Deliveries


def build_services(settings: Settings) -> Services:
    layout = DataDir(settings.data_dir)
    store = JsonJobStore(layout, fsync=settings.fsync)
    registry = load_registry()
    job_env = JobEnv(
        store, layout, registry, settings.max_retries, settings.retention, dedupe=settings.dedupe
    )
    dispatcher = ProcessDispatcher(settings, job_env)
    job_env = replace(job_env, adopt=dispatcher.adopt)  # the sweeper hands it orphans
    dedupe = None
    if settings.dedupe:  # the workers name finished jobs' results; uploads look them up
        dedupe = Dedupe(layout, store, registry, settings.retention, settings.fsync)
    upload_env = UploadEnv(
        settings, layout, store, registry, dispatcher.waiting, dispatcher.hold, dedupe
    )
    metrics = Metrics(queue_depth=dispatcher.waiting, free_bytes=layout.free_bytes_now)
    dispatcher.when_finished(_count_finished(store, metrics))
    webhooks = Deliveries(settings, layout, store)
    dispatcher.when_finished(webhooks.job_finished)
    return Services(
        settings,
        layout,
        store,
        registry,
        job_env,
        dispatcher,
        upload_env,
        ShutdownWatch(),
        metrics,
        webhooks,
    )


def _count_finished(store: JsonJobStore, metrics: Metrics) -> FinishHook:
    def count(job_id: str, timings: dict[str, float]) -> None:
        try:
            job = store.load(job_id)
        except UnknownJob:
            return  # deleted as it ended
        if job.status.finished:
            metrics.job_finished(job.status.value, timings, duplicate=job.duplicate_of is not None)

    return count
