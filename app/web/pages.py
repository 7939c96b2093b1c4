"""HTML pages: the upload form and a job's page. Both work with JavaScript off."""

from __future__ import annotations

import json
from pathlib import Path as FsPath

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from app.api.deps import services
from app.errors import UnknownJob
from app.layout import is_job_id

TEMPLATES = Jinja2Templates(directory=FsPath(__file__).parent / "templates")
REFRESH_S = 2  # the job page reloads itself until the job is finished
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
    headers = dict(_HEADERS)
    if not job.status.finished:
        headers["Refresh"] = str(REFRESH_S)
    context = {
        "job": job,
        "refresh_s": None if job.status.finished else REFRESH_S,
        "result_json": json.dumps(job.result, indent=2, ensure_ascii=False),
    }
    return TEMPLATES.TemplateResponse(request, "job.html", context, headers=headers)
