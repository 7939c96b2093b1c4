"""The ASGI app: create_app() wires settings, services, routes and the lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from app import __version__
from app.api import status, uploads
from app.config import Settings, get_settings
from app.errors import HopperError
from app.recovery import recover
from app.services import Services, build_services
from app.web import pages

log = logging.getLogger("hopper")

SHUTDOWN_GRACE_S = 30.0


def create_app(settings: Settings | None = None) -> FastAPI:
    svc = build_services(settings or get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _start(svc)
        yield
        svc.dispatcher.stop(SHUTDOWN_GRACE_S)

    app = FastAPI(
        title="Hopper",
        version=__version__,
        summary="Upload a file, get a job id at once, poll /status/<id> for the result.",
        lifespan=lifespan,
    )
    app.state.services = svc
    app.include_router(uploads.router)
    app.include_router(status.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "web" / "static"))
    app.add_exception_handler(HopperError, _hopper_error)  # type: ignore[arg-type]
    return app


def _start(svc: Services) -> None:
    svc.layout.create()
    pending = recover(svc.layout, svc.store)
    svc.dispatcher.start()
    for job_id in pending:
        svc.dispatcher.submit(job_id)


async def _hopper_error(request: Request, exc: HopperError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


app = create_app()
