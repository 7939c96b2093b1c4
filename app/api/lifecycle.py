"""POST /jobs/<id>/cancel and DELETE /jobs/<id>: thin routes over app.lifecycle.

Plain def routes: they touch files and may wait for a job's lock, so they run on the
threadpool, never on the event loop.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from app.api.access import caller_of, visible_raw
from app.api.deps import services
from app.api.negotiation import prefers_html
from app.errors import UnknownJob
from app.lifecycle import Outcome, cancel_job, delete_job
from app.models import ErrorBody, Job

router = APIRouter()


def _error(text: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": text}


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=Job,
    summary="Cancel a job",
    description="A queued job never starts: 200 with the cancelled job. A running job "
    "stops at its next progress report: 202 with the job as it is now; poll /status.",
    responses={
        202: {"model": Job, "description": "Running: it stops at its next progress report."},
        303: {"description": "Browser form post: back to the job's page."},
        404: _error("No such job."),
        409: _error("The job has already finished."),
    },
)
def cancel(request: Request, job_id: str = Path(max_length=64)) -> Response:
    visible_raw(request, caller_of(request), job_id)  # another owner's job: 404
    job, outcome = cancel_job(job_id, services(request).job_env)
    services(request).dispatcher.revoke(job_id)
    if outcome is Outcome.DONE:  # finished here, not by a worker: metrics, webhook
        services(request).dispatcher.notify_finished(job_id)
    if prefers_html(request.headers.get("accept")):
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)
    if job is None:  # deleted meanwhile
        raise UnknownJob(job_id)
    code = 200 if outcome is Outcome.DONE else 202
    return Response(job.model_dump_json(), status_code=code, media_type="application/json")


@router.delete(
    "/jobs/{job_id}",
    status_code=204,
    summary="Delete a job: its file, artifacts and record",
    description="A running job is cancelled first. 204 once everything is gone; 202 if "
    "the job is still stopping (it is deleted when it stops, within its next progress "
    "report).",
    responses={
        202: {"model": ErrorBody, "description": "Still stopping; deleted when it stops."},
        404: _error("No such job."),
    },
)
def delete(request: Request, job_id: str = Path(max_length=64)) -> Response:
    visible_raw(request, caller_of(request), job_id)  # another owner's job: 404
    outcome = delete_job(job_id, services(request).job_env)
    services(request).dispatcher.revoke(job_id)
    if outcome is Outcome.PENDING:
        detail = "The job is stopping; it is deleted when it stops."
        return JSONResponse({"detail": detail}, status_code=202)
    return Response(status_code=204)
