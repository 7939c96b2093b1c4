"""HTML pages: the upload form and a job's page. Both work with JavaScript off."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path as FsPath

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates

from app.api.access import caller_of, raw_filter, visible_job
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

# The JSON answers, described by hand: a `model` here would be filed under text/html.
# Job and ErrorBody are in the components: the API routes use them as models.
_ERROR_JSON = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
_NO_SUCH_JOB = {"description": "No such job.", "content": _ERROR_JSON}
_BAD_PAGE = {"description": "`page` is not a number from 1 to 10000.", "content": _ERROR_JSON}
_JOBS_JSON = {
    "description": "One page of recent jobs: HTML, or JSON unless Accept prefers text/html.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["page", "has_next", "jobs"],
                "properties": {
                    "page": {"type": "integer"},
                    "has_next": {"type": "boolean"},
                    "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
                },
            }
        }
    },
}


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


@router.get(
    "/jobs/{job_id}",
    response_class=HTMLResponse,
    summary="A job's page",
    responses={404: _NO_SUCH_JOB},
)
async def job_page(request: Request, job_id: str = Path(max_length=64)) -> HTMLResponse:
    if not is_job_id(job_id):
        raise UnknownJob(job_id)
    job = visible_job(request, job_id)
    context = {
        "job": job,
        "refresh_s": None if job.status.finished else REFRESH_S,
        "result_json": json.dumps(job.result, indent=2, ensure_ascii=False),
    }
    return TEMPLATES.TemplateResponse(request, "job.html", context, headers=_HEADERS)


@router.get(
    "/jobs",
    response_class=HTMLResponse,
    summary="Recent jobs, newest first",
    responses={200: _JOBS_JSON, 400: _BAD_PAGE},
)
def jobs_page(request: Request, page: int = Query(default=1, ge=1, le=10_000)) -> Response:
    """HTML for people; the same list as JSON for a client that asks for it (`hopper ls`).

    A plain def, run in the threadpool: a key that sees only its own jobs reads records
    until it has a page of them, which on a big data directory takes a while."""
    store = services(request).store
    ids = _recent_visible(request, page)
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


def _recent_visible(request: Request, page: int) -> list[str]:
    """The page's ids and one more: a key that sees only its own jobs skips the others'."""
    store = services(request).store
    offset = (page - 1) * JOBS_PER_PAGE
    caller = caller_of(request)
    if caller.sees_all:
        return store.recent_ids(offset, JOBS_PER_PAGE + 1)
    visible = raw_filter(caller)
    mine: list[str] = []
    for job_id in store.recent_ids(0, sys.maxsize):
        with contextlib.suppress(UnknownJob):
            if visible(store.load_raw(job_id)):
                mine.append(job_id)
        if len(mine) > offset + JOBS_PER_PAGE:
            break
    return mine[offset:]


def _size_label(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"
