"""POST /uploads: a thin route over app.uploads (which does the work)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Header, Query, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.types import DecoratedCallable
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from app.api.access import access_of, caller_of
from app.api.deps import services
from app.api.negotiation import prefers_html
from app.digests import expected_sha256
from app.dispatch import Dispatcher
from app.errors import HopperError, ServiceBusy
from app.filenames import sanitize_filename
from app.models import ErrorBody, Job
from app.quotas import Quotas, Slot, metered
from app.uploads import Accepted, UploadRequest, accept_upload

log = logging.getLogger("hopper.api")
router = APIRouter()

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "Malformed or truncated multipart body, missing or duplicate file part, "
        "unknown processor, a callback_url this server does not call.",
        413: "The file is larger than HOPPER_MAX_UPLOAD_BYTES.",
        415: "The body is not multipart/form-data.",
        429: "Over the API key's bytes a day or jobs at once; see Retry-After.",
        503: "Over HOPPER_MAX_QUEUE or HOPPER_MAX_CONCURRENT_UPLOADS; see Retry-After.",
        507: "The data directory lacks room (HOPPER_MIN_FREE_BYTES).",
    }.items()
}
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "processors": {
                            "type": "string",
                            "description": "Comma-separated processor names (default: auto).",
                        },
                        "callback_url": {
                            "type": "string",
                            "description": "POSTed the signed job document when the job "
                            "finishes (docs/webhooks.md).",
                        },
                    },
                }
            }
        },
    }
}


@router.post(
    "/uploads",
    status_code=202,
    response_model=Job,
    summary="Upload a file and queue a job for it",
    description="The file is streamed to disk and hashed as it arrives. The answer comes "
    "once the file and a queued job record are stored: 202 with the job document and "
    "`Location: /status/<id>`, or 303 to `/jobs/<id>` for a browser form post. With an "
    "`Idempotency-Key` header, a repeated key gets the first job again (its current "
    "document, with `Idempotent-Replayed: true`) and its body is not read. With "
    "HOPPER_DEDUPE, bytes a job with the same processors and owner is done for get a new "
    "job that is `done` at once, with `duplicate_of` naming that job and its results.",
    responses={
        **_ERRORS,
        303: {"description": "Browser form post: see the job's page."},
    },
    openapi_extra=_BODY,
)
async def create_upload(
    request: Request,
    background_tasks: BackgroundTasks,
    processors: str | None = Query(
        default=None, description="Comma-separated processor names; a form field may say it too."
    ),
    idempotency_key: str | None = Header(
        default=None, max_length=255, description="Retry safely: a repeated key gets its first job."
    ),
    callback_url: str | None = Query(
        default=None,
        max_length=2048,
        description="Webhook: POSTed the signed job document when the job finishes; a form "
        "field may say it too.",
    ),
) -> Response:
    return await _answer(
        request,
        lambda: _accept(request, background_tasks, processors, idempotency_key, callback_url),
    )


async def _answer(request: Request, accept: Callable[[], Awaitable[Response]]) -> Response:
    """Every way in: the concurrent-upload slot, and the upload's metrics whatever happens."""
    svc = services(request)
    started = time.perf_counter()
    code = 500
    try:
        with upload_slot(request, svc.settings.max_concurrent_uploads):
            response = await accept()
        code = response.status_code
        return response
    except HopperError as exc:
        code = exc.status_code
        raise
    finally:
        stored = getattr(request.state, "stored_bytes", 0)
        svc.metrics.upload_answered(code, time.perf_counter() - started, stored)


async def _accept(
    request: Request,
    background_tasks: BackgroundTasks,
    processors: str | None,
    idempotency_key: str | None,
    callback_url: str | None = None,
    raw: RawFile | None = None,
) -> Response:
    svc = services(request)
    caller, quotas = caller_of(request), access_of(request).quotas
    content_length = declared_length(request)
    slot: Slot | None = None

    async def admit(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The key's quotas: after the Idempotency-Key lookup (a replay costs none), before
        a byte of the body is read (usage files: in a thread)."""
        nonlocal slot
        if caller.key is not None:
            slot = await run_in_threadpool(quotas.admit, caller.key, content_length)
        return metered(body, slot)

    upload = UploadRequest(
        chunks=request.stream(),
        content_type=request.headers.get("content-type"),
        content_length=content_length,
        processors=processors,
        idempotency_key=idempotency_key,
        owner=caller.owner,
        callback_url=callback_url,
        admit=admit,
        raw_filename=None if raw is None else raw.filename,
        sha256=None if raw is None else raw.sha256,
    )
    accepted = None
    try:
        accepted = await accept_upload(upload, svc.upload_env)
    except ClientDisconnect:
        log.info("client went away mid-upload; partial file removed")
        return Response(status_code=400)  # nobody is listening for it
    finally:
        if slot is not None:
            await run_in_threadpool(_settle, quotas, slot, accepted)
    job = accepted.job
    request.state.job_id = job.id  # for the request's log line
    if not accepted.replayed:
        request.state.stored_bytes = job.size
        hand_on(background_tasks, svc.dispatcher, job)
    if prefers_html(request.headers.get("accept")):
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)
    headers = {"Location": f"/status/{job.id}"}
    if accepted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(
        job.model_dump_json(), status_code=202, media_type="application/json", headers=headers
    )


def hand_on(background_tasks: BackgroundTasks, dispatcher: Dispatcher, job: Job) -> None:
    """After the answer, a new job goes to the dispatcher's workers; a duplicate
    (HOPPER_DEDUPE), done already, only to its finish hooks (its webhook, the metrics).
    Plain def tasks: they only hand the id on."""
    if job.status.finished:
        background_tasks.add_task(dispatcher.notify_finished, job.id)
    else:
        background_tasks.add_task(dispatcher.submit, job.id)


def _settle(quotas: Quotas, slot: Slot, accepted: Accepted | None) -> None:
    """A stored upload counts against its key; a failed or replayed one gives back its slot."""
    if accepted is None or accepted.replayed:
        quotas.release(slot)
    else:
        quotas.stored(slot, accepted.job.id, accepted.job.size)


@contextmanager
def upload_slot(request: Request, limit: int) -> Iterator[None]:
    """Count uploads streaming in this process (every way in: multipart, raw, tus PATCHes);
    past the limit, 503 before the body."""
    state = request.app.state
    active = getattr(state, "active_uploads", 0)
    if active >= limit:
        raise ServiceBusy(
            f"{limit} uploads are already streaming (HOPPER_MAX_CONCURRENT_UPLOADS). "
            "Try again in a few seconds.",
            retry_after_s=2,
        )
    state.active_uploads = active + 1  # one event loop: no lock needed
    try:
        yield
    finally:
        state.active_uploads -= 1


def declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


@dataclass(frozen=True)
class RawFile:
    filename: str
    sha256: str | None  # hex, from the digest headers


_RAW_BODY = {
    "requestBody": {
        "required": True,
        "description": "The file's bytes; its Content-Type is recorded as declared.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
_RAW_ERRORS = {
    **{code: spec for code, spec in _ERRORS.items() if code != 415},
    400: {
        "model": ErrorBody,
        "description": "A malformed digest header, a digest that does not match the bytes "
        "received, unknown processor, a callback_url this server does not call.",
    },
}


def _raw_route(method: str, operation_id: str) -> Callable[[DecoratedCallable], DecoratedCallable]:
    return router.api_route(
        "/uploads/raw",
        methods=[method],
        operation_id=operation_id,
        status_code=202,
        response_model=Job,
        summary=f"Upload a file sent as the whole body ({method}, as curl -T does PUT)",
        description="The body is the file, streamed to disk and hashed as it arrives, with "
        "the same limits and answers as POST /uploads. `Content-Digest` or `Repr-Digest` "
        "(RFC 9530, `sha-256=:<base64>:`) is checked against the bytes received: a mismatch "
        "is 400 and nothing is kept. Other algorithms are ignored.",
        responses=_RAW_ERRORS,
        openapi_extra=_RAW_BODY,
    )


@_raw_route("PUT", "upload_raw_put")
@_raw_route("POST", "upload_raw")
async def create_raw_upload(
    request: Request,
    background_tasks: BackgroundTasks,
    filename: str = Query(
        default="", max_length=4096, description="The file's name, for display (sanitised)."
    ),
    processors: str | None = Query(default=None, description="Comma-separated processor names."),
    idempotency_key: str | None = Header(
        default=None, max_length=255, description="Retry safely: a repeated key gets its first job."
    ),
    callback_url: str | None = Query(
        default=None,
        max_length=2048,
        description="Webhook: POSTed the signed job document when the job finishes.",
    ),
    content_digest: str | None = Header(
        default=None, description="RFC 9530: `sha-256=:<base64 of the file's SHA-256>:`."
    ),
    repr_digest: str | None = Header(default=None, description="As Content-Digest."),
) -> Response:
    headers = {"Content-Digest": content_digest, "Repr-Digest": repr_digest}
    raw = RawFile(sanitize_filename(filename), expected_sha256(headers))
    return await _answer(
        request,
        lambda: _accept(request, background_tasks, processors, idempotency_key, callback_url, raw),
    )
