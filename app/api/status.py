"""GET /status/<id>: the job document, cheap enough to poll many times a second."""

from __future__ import annotations

import json

from fastapi import APIRouter, Path, Request, Response

from app.api.deps import services
from app.models import ErrorBody, Job, JobStatus

router = APIRouter()

RETRY_AFTER_S = "1"


@router.get(
    "/status/{job_id}",
    response_model=Job,
    summary="The job document",
    description="While the job is not finished, `Retry-After` suggests when to poll again.",
    responses={404: {"model": ErrorBody, "description": "No job with that id."}},
)
async def get_status(request: Request, job_id: str = Path(max_length=64)) -> Response:
    # The record is a small local file, read straight from the page cache: a thread
    # hand-off would cost more than the read. The stored JSON is sent as is.
    raw = services(request).store.load_raw(job_id)
    headers = {"Cache-Control": "no-store"}
    if not JobStatus(json.loads(raw)["status"]).finished:
        headers["Retry-After"] = RETRY_AFTER_S
    return Response(raw, media_type="application/json", headers=headers)
