"""What a job produced: its artifacts and the original file; and the processors on offer."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel

from app.api.access import visible_job
from app.api.deps import services
from app.artifacts import is_artifact_name
from app.errors import HopperError, UnknownJob
from app.models import ErrorBody

router = APIRouter()

# Nothing served from here may run script in Hopper's origin, whatever its bytes.
_SAFE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; sandbox",
    "Cache-Control": "private, max-age=3600",
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such job or artifact."}
}


class ArtifactMissing(HopperError):
    status_code = 404


class ProcessorInfo(BaseModel):
    name: str
    description: str
    version: str
    in_auto: bool


@router.get("/processors", response_model=list[ProcessorInfo], summary="Available processors")
async def list_processors(request: Request) -> list[ProcessorInfo]:
    return [
        ProcessorInfo(name=p.name, description=p.description, version=p.version, in_auto=p.in_auto)
        for p in services(request).registry.all()
    ]


@router.get(
    "/jobs/{job_id}/artifacts/{name}",
    response_class=FileResponse,
    summary="An artifact a processor wrote",
    responses=_NOT_FOUND,
)
async def get_artifact(
    request: Request, job_id: str = Path(max_length=64), name: str = Path(max_length=64)
) -> FileResponse:
    svc = services(request)
    job = visible_job(request, job_id)
    artifact = next((a for a in job.artifacts if a.name == name), None)
    if artifact is None or not is_artifact_name(name):
        raise ArtifactMissing(f"Job {job_id} has no artifact named {name[:64]!r}.")
    disposition = "inline" if artifact.content_type.startswith("image/") else "attachment"
    return FileResponse(
        svc.layout.artifacts(job_id) / name,
        media_type=artifact.content_type,
        headers={**_SAFE_HEADERS, "Content-Disposition": f'{disposition}; filename="{name}"'},
    )


@router.get(
    "/jobs/{job_id}/file",
    response_class=FileResponse,
    summary="Download the original upload",
    responses=_NOT_FOUND,
)
async def get_file(request: Request, job_id: str = Path(max_length=64)) -> FileResponse:
    svc = services(request)
    job = visible_job(request, job_id)
    path = svc.layout.upload(job.id)
    if not path.exists():
        raise UnknownJob(job_id)
    # Served as opaque bytes under the sanitised name (RFC 6266), never as the client's type.
    return FileResponse(
        path,
        media_type="application/octet-stream",
        headers={**_SAFE_HEADERS, "Content-Disposition": _attachment(job.filename)},
    )


def _attachment(filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
