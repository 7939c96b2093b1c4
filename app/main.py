"""The ASGI app: create_app() wires settings, services, routes and the lifespan."""

from __future__ import annotations

import contextlib
import logging
import resource
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from app import __version__
from app.api import events, jobs, lifecycle, ops, status, tus, uploads, webhooks
from app.api.access import Access, needs, needs_page
from app.api.cors import add_cors
from app.apikeys import Scope
from app.config import Settings, get_settings
from app.errors import HopperError
from app.logs import configure_logging
from app.middleware import BodyIdleTimeout
from app.models import ErrorBody
from app.observe import RequestObserver
from app.partials import PartialStore, remove_expired
from app.recovery import recover
from app.resumable import TusEnv
from app.services import Services, build_services
from app.sweeper import Sweeper
from app.watch import WatchFolder
from app.web import login, pages
from app.web.assets import CachedStaticFiles

log = logging.getLogger("hopper")


def create_app(settings: Settings | None = None) -> FastAPI:
    svc = build_services(settings or get_settings())
    configure_logging(svc.settings.log_format, svc.settings.log_level)
    tus_env = TusEnv(svc.upload_env, PartialStore(svc.layout, fsync=svc.settings.fsync))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _start(svc)
        sweeper = Sweeper(
            svc.job_env,
            svc.store,
            svc.settings.sweep_interval,
            tasks=[
                svc.webhooks.resume_pending,  # rounds a killed process left pending
                partial(remove_expired, svc.layout, tus_env.partials, svc.store),  # tus expiry
                svc.dispatcher.sweep,  # celery: jobs never published, or past the hard limit
            ],
        )
        sweeper.start()
        watcher = _watch_folder(svc)
        yield
        if watcher is not None:  # first: it queues jobs
            await watcher.stop(svc.shutdown.remaining_s(svc.settings.shutdown_grace))
        sweeper.stop()
        # Jobs get what is left of the grace period the uploads in flight had.
        svc.dispatcher.stop(svc.shutdown.remaining_s(svc.settings.shutdown_grace))
        svc.webhooks.stop()

    app = FastAPI(
        title="Hopper",
        version=__version__,
        summary="Upload a file, get a job id at once, poll /status/<id> for the result.",
        lifespan=lifespan,
    )
    app.state.services = svc
    app.state.access = Access(svc.settings, svc.layout, svc.store)
    app.state.tus = tus_env
    # Every route names the scope it needs (README, "Keys and ownership"); the plain
    # Starlette routes (status, events) check theirs themselves.
    app.include_router(uploads.router, dependencies=[needs(Scope.UPLOAD)])
    app.router.routes.extend(events.routes)  # before /status/{job_id}: "events" is no id
    app.router.routes.extend(status.routes)
    app.include_router(jobs.router, dependencies=[needs(Scope.READ)])
    app.include_router(lifecycle.router, dependencies=[needs(Scope.UPLOAD)])
    app.include_router(webhooks.router, dependencies=[needs(Scope.UPLOAD)])
    app.include_router(pages.router, dependencies=[needs_page(Scope.READ)])
    app.include_router(ops.router)  # /metrics needs admin; health checks are open
    app.include_router(login.router)
    app.include_router(tus.router)  # each route names its scope (OPTIONS needs none)
    app.mount("/static", CachedStaticFiles(directory=Path(__file__).parent / "web" / "static"))
    app.add_middleware(BodyIdleTimeout, idle_s=svc.settings.body_idle_timeout)
    add_cors(app, svc.settings.cors_origins)  # inside the observer: preflights are logged too
    app.add_middleware(RequestObserver, metrics=svc.metrics)  # outermost: sees every answer
    app.add_exception_handler(HopperError, _hopper_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.openapi = partial(_openapi, app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated schema plus the routes that are plain Starlette for speed."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        schema["paths"].update(status.OPENAPI_PATHS)
        schema["paths"].update(events.OPENAPI_PATHS)
        schema["components"]["schemas"].setdefault("ErrorBody", _error_body_schema())
        for operation in _operations(schema):
            _describe_invalid_request(operation)
        schema["components"]["schemas"].pop("HTTPValidationError", None)
        schema["components"]["schemas"].pop("ValidationError", None)
        app.openapi_schema = schema
    return app.openapi_schema


def _operations(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for path_item in schema["paths"].values():
        yield from (op for op in path_item.values() if isinstance(op, dict))


def _describe_invalid_request(operation: dict[str, Any]) -> None:
    """FastAPI documents a 422 for values it cannot validate; _invalid_request answers
    400 for a bad query or header value and 404 for a malformed id instead."""
    responses = operation.get("responses", {})
    if responses.pop("422", None) is None:
        return
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    places = {param.get("in") for param in operation.get("parameters", [])}
    if places & {"query", "header", "cookie"} or "requestBody" in operation:
        responses.setdefault("400", {"description": "An invalid value.", "content": error})
    if "path" in places:
        responses.setdefault("404", {"description": "No such resource.", "content": error})


def _error_body_schema() -> dict[str, Any]:
    return ErrorBody.model_json_schema()


def _start(svc: Services) -> None:
    _raise_open_file_limit()
    svc.shutdown.install()
    svc.layout.create()
    try:
        # With Celery, unfinished jobs are the workers' and the broker's; the sweep
        # publishes any that were lost.
        pending = recover(svc.job_env, svc.store) if svc.settings.backend == "local" else []
    except Exception:
        # A start that fails makes uvicorn's --workers supervisor stop every process; the
        # sweeper takes over unfinished jobs anyway, so serve and let it.
        log.exception("start-up recovery failed; the sweeper will take over unfinished jobs")
        pending = []
    svc.webhooks.start()
    svc.dispatcher.start()
    for job_id in pending:
        svc.dispatcher.submit(job_id)


def _watch_folder(svc: Services) -> WatchFolder | None:
    """Started in every process; the one that holds watch.lock watches."""
    if svc.settings.watch_dir is None:
        return None
    watcher = WatchFolder(
        svc.upload_env,
        svc.dispatcher.submit,
        svc.metrics,
        stopping=lambda: svc.shutdown.requested,
    )
    watcher.start()
    return watcher


def _raise_open_file_limit() -> None:
    """Each queued job holds its lease's fd, each pending webhook round its claim's:
    with the default soft limit (often 1024) a full queue would run out. The hard limit
    is what the operator allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _hopper_error(request: Request, exc: HopperError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A path or query value of the wrong shape: one sentence, not a list of dicts."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
    )
    if any(error["loc"][0] == "path" for error in exc.errors()):
        return JSONResponse({"detail": "No such resource."}, status_code=404)
    return JSONResponse({"detail": f"Invalid request: {problems}."}, status_code=400)


app = create_app()
