"""HTML pages: the upload form and a job's page. Both work with JavaScript off."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path as FsPath

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates

from app.api.deps import services
from app.api.negotiation import prefers_html
from app.errors import UnknownJob
from app.layout import is_job_id

TEMPLATES = Jinja2Templates(directory=FsPath(__file__).parent / "templates")
REFRESH_S = 2  # with JavaScript off, the job page reloads itself until the job is finished
JOBS_PER_PAGE = 50
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}

router = APIRouter(include_in_schema=True)


@router.get("/", response_class=HTMLResponse, summary="Upload page")
async def upload_page(request: Request) -> HTMLResponse:
    svc = services(request)
    context = {
        "max_upload_label": _size_label(svc.settings.max_upload_bytes),
        "processors": svc.registry.all(),
        "max_upload_bytes": svc.settings.max_upload_bytes,
        "default_processors": svc.settings.default_processors,
    }
    return TEMPLATES.TemplateResponse(request, "index.html", context, headers=_HEADERS)


@router.get("/jobs/{job_id}", response_class=HTMLResponse, summary="A job's page")
async def job_page(request: Request, job_id: str = Path(max_length=64)) -> HTMLResponse:
    if not is_job_id(job_id):
        raise UnknownJob(job_id)
    job = services(request).store.load(job_id)
    context = {
        "job": job,
        "refresh_s": None if job.status.finished else REFRESH_S,
        "result_json": json.dumps(job.result, indent=2, ensure_ascii=False),
    }
    return TEMPLATES.TemplateResponse(request, "job.html", context, headers=_HEADERS)


@router.get("/jobs", response_class=HTMLResponse, summary="Recent jobs, newest first")
async def jobs_page(request: Request, page: int = Query(default=1, ge=1, le=10_000)) -> Response:
    """HTML for people; the same list as JSON for a client that asks for it (`hopper ls`)."""
    store = services(request).store
    ids = store.recent_ids((page - 1) * JOBS_PER_PAGE, JOBS_PER_PAGE + 1)
    jobs = []
    for job_id in ids[:JOBS_PER_PAGE]:
        with contextlib.suppress(UnknownJob):  # an upload whose record is still being saved
            jobs.append(store.load(job_id))
    has_next = len(ids) > JOBS_PER_PAGE
    if not prefers_html(request.headers.get("accept")):
        body = {
            "page": page,
            "has_next": has_next,
            "jobs": [j.model_dump(mode="json") for j in jobs],
        }
        return JSONResponse(body)
    context = {"jobs": jobs, "page": page, "has_next": has_next}
    return TEMPLATES.TemplateResponse(request, "jobs.html", context, headers=_HEADERS)


def _size_label(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"
