"""One pure ASGI middleware for what every request leaves behind: its request id (taken
from a sane `X-Request-ID`, or made here, and sent back in the same header), one log
line and the response counter by route."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.layout import new_request_id
from app.logs import RequestLine, request_id, request_lines
from app.metrics import Metrics

REQUEST_ID_HEADER = b"x-request-id"
_INTERNAL_ERROR = json.dumps({"detail": "Internal error; the server log has details."}).encode()
log = logging.getLogger("hopper")
_SANE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")  # a proxy's id is kept; anything else not


class RequestObserver:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming_id(scope) or new_request_id().encode()
        rid_text = rid.decode()
        token = request_id.set(rid_text)
        started = time.perf_counter()
        status = 0  # no answer yet

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, rid)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Here, not in Starlette's outer error middleware: the log line and the 500
            # then carry the request id.
            log.exception("unexpected error on %s %s", scope["method"], scope["path"])
            if status:
                raise  # the answer has begun: the connection can only be dropped
            status = 500
            headers = [(b"content-type", b"application/json")]
            await send_with_id({"type": "http.response.start", "status": 500, "headers": headers})
            await send_with_id({"type": "http.response.body", "body": _INTERNAL_ERROR})
        finally:
            self._record(scope, status, time.perf_counter() - started, rid_text)
            request_id.reset(token)

    def _record(self, scope: Scope, status: int, seconds: float, rid: str) -> None:
        route = _route_of(scope)
        self.metrics.response_sent(route, status)
        state = scope.get("state")
        ids = None
        if state and ("job_id" in state or "key_id" in state):  # the key's public id only
            ids = {name: state[name] for name in ("job_id", "key_id") if state.get(name)}
        line = RequestLine(scope["method"], scope["path"], route, status, seconds, rid, ids)
        request_lines.write(line)


def _incoming_id(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            return value if _SANE_ID.fullmatch(value) else None
    return None


def _route_of(scope: Scope) -> str:
    """The route template (`/status/{job_id}`), never the raw path: ids would make a
    metric series per job, and unmatched paths one per probe."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    endpoint = scope.get("endpoint")
    if endpoint is None:
        return "unmatched"
    # FastAPI's router matches plain Starlette routes without naming them in the scope:
    # find the route that owns the endpoint, once per endpoint.
    template = _TEMPLATES.get(endpoint)
    if template is None:
        routes = getattr(getattr(scope.get("app"), "router", None), "routes", [])
        owners = [r.path for r in routes if getattr(r, "endpoint", None) is endpoint]
        template = _TEMPLATES[endpoint] = owners[0] if len(owners) == 1 else "unnamed"
    return template


_TEMPLATES: dict[Any, str] = {}
