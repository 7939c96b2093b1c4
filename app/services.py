"""The service's parts, built once per app and shared by routes and the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from app.config import Settings
from app.dispatch import Dispatcher, ProcessDispatcher
from app.jobs import JobEnv
from app.layout import DataDir
from app.processors.registry import Registry, load_registry
from app.shutdown import ShutdownWatch
from app.store import JsonJobStore
from app.uploads import UploadEnv


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


def build_services(settings: Settings) -> Services:
    layout = DataDir(settings.data_dir)
    store = JsonJobStore(layout, fsync=settings.fsync)
    registry = load_registry()
    job_env = JobEnv(store, layout, registry, settings.max_retries, settings.retention)
    dispatcher = ProcessDispatcher(settings, job_env)
    upload_env = UploadEnv(settings, layout, store, registry, dispatcher.waiting)
    return Services(
        settings, layout, store, registry, job_env, dispatcher, upload_env, ShutdownWatch()
    )
