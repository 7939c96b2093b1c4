"""GET /status/<id>: the job document, cheap enough to poll many times a second.

This is the hot path, so it is a plain Starlette route: FastAPI's per-request parameter
and response machinery cost about a third of its CPU (docs/performance.md). Its OpenAPI
description is written out below and merged into the generated schema.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.deps import services
from app.models import JobStatus

RETRY_AFTER_S = "1"


async def get_status(request: Request) -> Response:
    # The record is a small local file, read straight from the page cache: a thread
    # hand-off would cost more than the read. The stored JSON is sent as is.
    raw = services(request).store.load_raw(request.path_params["job_id"])
    headers = {"Cache-Control": "no-store"}
    if not JobStatus(json.loads(raw)["status"]).finished:
        headers["Retry-After"] = RETRY_AFTER_S
    return Response(raw, media_type="application/json", headers=headers)


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
