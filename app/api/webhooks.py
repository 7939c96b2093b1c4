"""POST /jobs/<id>/webhook/redeliver: a thin route over app.webhooks.deliveries.

A plain def route: it may wait a moment for the job's lock, so it runs on the threadpool.
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Request, Response

from app.api.access import caller_of, visible_raw
from app.api.deps import services
from app.models import ErrorBody, Job

router = APIRouter()


@router.post(
    "/jobs/{job_id}/webhook/redeliver",
    status_code=202,
    response_model=Job,
    summary="Send a finished job's webhook again",
    description="Starts a new delivery round to the job's callback_url, with its own "
    "attempts and backoff; they are appended to the job's `webhook.attempts` (poll "
    "/status). See docs/webhooks.md.",
    responses={
        404: {"model": ErrorBody, "description": "No such job."},
        409: {
            "model": ErrorBody,
            "description": "The job is not finished, has no callback_url, or a delivery "
            "is under way; or the server has no HOPPER_WEBHOOK_SECRET.",
        },
    },
)
def redeliver(request: Request, job_id: str = Path(max_length=64)) -> Response:
    visible_raw(request, caller_of(request), job_id)  # another owner's job: 404
    job = services(request).webhooks.redeliver(job_id)
    return Response(
        job.model_dump_json(),
        status_code=202,
        media_type="application/json",
        headers={"Location": f"/status/{job_id}"},
    )
