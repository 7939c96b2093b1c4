"""GET /status/<id>: the job document, cheap enough to poll many times a second.

This is the hot path, so it is a plain Starlette route: FastAPI's per-request parameter
and response machinery cost about a third of its CPU (docs/performance.md). Its OpenAPI
description is written out below and merged into the generated schema.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.access import authorize, visible_raw
from app.api.deps import services
from app.apikeys import Scope
from app.models import JobStatus

RETRY_AFTER_S = "1"
STATUS_PREFIX_BYTES = 256
_STATUS_RE = re.compile(rb'"status":"([a-z]+)"')


async def get_status(request: Request) -> Response:
    # A local record is a small file, read straight from the page cache: a thread
    # hand-off would cost more than the read. Redis is a round trip: off the loop. The
    # stored JSON is sent as is.
    caller = authorize(request, Scope.READ)
    job_id = request.path_params["job_id"]
    if services(request).store.remote:
        raw = await run_in_threadpool(visible_raw, request, caller, job_id)
    else:
        raw = visible_raw(request, caller, job_id)
    headers = {"Cache-Control": "no-store"}
    if not status_of(raw).finished:
        headers["Retry-After"] = RETRY_AFTER_S
    return Response(raw, media_type="application/json", headers=headers)


def status_of(raw: bytes) -> JobStatus:
    """The status without parsing a record that may hold large results: the store writes
    fields in the model's order, so it sits in the first few dozen bytes."""
    match = _STATUS_RE.search(raw, 0, STATUS_PREFIX_BYTES)
    if match is not None:
        return JobStatus(match.group(1).decode())
    return JobStatus(json.loads(raw)["status"])


routes = [Route("/status/{job_id}", get_status, methods=["GET"])]

OPENAPI_PATHS: dict[str, Any] = {
    "/status/{job_id}": {
        "get": {
            "summary": "The job document",
            "description": "While the job is not finished, `Retry-After` suggests when to "
            "poll again.",
            "operationId": "get_status",
            "parameters": [
                {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {
                    "description": "The job document.",
                    "headers": {
                        "Retry-After": {
                            "description": "Seconds to wait before polling again; only "
                            "while the job is queued or processing.",
                            "schema": {"type": "integer"},
                        }
                    },
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Job"}}
                    },
                },
                "404": {
                    "description": "No job with that id.",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                    },
                },
            },
        }
    }
}
