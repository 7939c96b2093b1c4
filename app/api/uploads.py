"""POST /uploads: a thin route over app.uploads (which does the work)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Header, Query, Request, Response
from fastapi.responses import RedirectResponse
from starlette.requests import ClientDisconnect

from app.api.deps import services
from app.api.negotiation import prefers_html
from app.errors import ServiceBusy
from app.models import ErrorBody, Job
from app.uploads import UploadRequest, accept_upload

log = logging.getLogger("hopper.api")
router = APIRouter()

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "Malformed or truncated multipart body, missing or duplicate file part, "
        "unknown processor.",
        413: "The file is larger than HOPPER_MAX_UPLOAD_BYTES.",
        415: "The body is not multipart/form-data.",
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
    "document, with `Idempotent-Replayed: true`) and its body is not read.",
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
) -> Response:
    svc = services(request)
    with _upload_slot(request, svc.settings.max_concurrent_uploads):
        return await _accept(request, background_tasks, processors, idempotency_key)


async def _accept(
    request: Request,
    background_tasks: BackgroundTasks,
    processors: str | None,
    idempotency_key: str | None,
) -> Response:
    svc = services(request)
    upload = UploadRequest(
        chunks=request.stream(),
        content_type=request.headers.get("content-type"),
        content_length=_content_length(request),
        processors=processors,
        idempotency_key=idempotency_key,
    )
    try:
        accepted = await accept_upload(upload, svc.upload_env)
    except ClientDisconnect:
        log.info("client went away mid-upload; partial file removed")
        return Response(status_code=400)  # nobody is listening for it
    job = accepted.job
    if not accepted.replayed:
        # A plain def job: it only hands the id to the dispatcher's own workers.
        background_tasks.add_task(svc.dispatcher.submit, job.id)
    if prefers_html(request.headers.get("accept")):
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)
    headers = {"Location": f"/status/{job.id}"}
    if accepted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(
        job.model_dump_json(), status_code=202, media_type="application/json", headers=headers
    )


@contextmanager
def _upload_slot(request: Request, limit: int) -> Iterator[None]:
    """Count uploads streaming in this process; past the limit, 503 before the body."""
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


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None
