"""The service's parts, built once per app and shared by routes and the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from app.config import Settings
from app.dispatch import Dispatcher, ProcessDispatcher
from app.jobs import JobEnv
from app.layout import DataDir
from app.processors.registry import Registry, load_registry
from app.store import JsonJobStore
from app.uploads import UploadEnv


@dataclass(frozen=True)
class Services:
    settings: Settings
    layout: DataDir
    store: JsonJobStore
    registry: Registry
    dispatcher: Dispatcher

    @property
    def upload_env(self) -> UploadEnv:
        return UploadEnv(
            self.settings, self.layout, self.store, self.registry, self.dispatcher.waiting
        )


def build_services(settings: Settings) -> Services:
    layout = DataDir(settings.data_dir)
    store = JsonJobStore(layout, fsync=settings.fsync)
    registry = load_registry()
    job_env = JobEnv(store, layout, registry, settings.max_retries)
    return Services(settings, layout, store, registry, ProcessDispatcher(settings, job_env))
