"""For operators: GET /healthz (the process answers), GET /readyz (it can take uploads and
run jobs), GET /metrics (Prometheus)."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from app.api.access import needs
from app.api.deps import services
from app.apikeys import Scope
from app.models import ErrorBody
from app.services import Services

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: data directory writable with room, store readable, workers running",
    responses={503: {"model": ErrorBody, "description": "A check failed; `detail` names it."}},
)
async def readyz(request: Request) -> JSONResponse:
    svc = services(request)
    checks: dict[str, Callable[[Services], str | None]] = {
        "data_dir": _data_dir_writable,
        "disk": _disk_has_room,
        "store": _store_readable,
        "workers": _workers_running,
    }
    # In a thread: a check may wait on the disk or on Redis, never on the event loop.
    failures = await run_in_threadpool(_failures, checks, svc)
    results = {name: failures.get(name, "ok") for name in checks}
    if failures:
        detail = "Not ready: " + "; ".join(f"{name}: {why}" for name, why in failures.items())
        body = {"detail": detail, "checks": results}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    return JSONResponse({"status": "ready", "checks": results})


def _failures(checks: dict[str, Callable[[Services], str | None]], svc: Services) -> dict[str, str]:
    return {name: problem for name, check in checks.items() if (problem := check(svc))}


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    dependencies=[needs(Scope.ADMIN)],  # they count every key's uploads
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
async def metrics(request: Request) -> Response:
    return await services(request).metrics.endpoint(request)


def _data_dir_writable(svc: Services) -> str | None:
    probe = svc.layout.root / f".readyz-{secrets.token_hex(6)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return f"cannot create a file in {svc.layout.root} ({exc.strerror})"
    os.close(fd)
    with contextlib.suppress(OSError):
        probe.unlink()
    return None


def _disk_has_room(svc: Services) -> str | None:
    free = svc.layout.free_bytes_now()
    reserve = svc.settings.min_free_bytes
    if free < reserve:
        return f"{free:,} bytes free, under the {reserve:,} kept free (HOPPER_MIN_FREE_BYTES)"
    return None


def _store_readable(svc: Services) -> str | None:
    return svc.store.ping()


def _workers_running(svc: Services) -> str | None:
    if svc.dispatcher.running():
        return None
    if svc.settings.backend == "celery":
        return "the Celery broker (Redis) is not answering"
    return "the job worker pool is not running"
