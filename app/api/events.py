"""Server-Sent Events: one event per change of a job document, ending when it finishes.

Each stream is an async generator that re-reads the (small) record every
POLL_INTERVAL_S: no thread per stream, so many open streams cost little. A browser page
follows all its jobs on one stream (`/status/events?ids=a,b,c`), since browsers allow
about six connections per host.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from app.api.access import authorize, raw_filter, visible_raw
from app.api.deps import services
from app.api.status import status_of
from app.apikeys import Scope
from app.errors import BadUpload, StoreUnavailable, UnknownJob
from app.layout import is_job_id
from app.store import JobStore

POLL_INTERVAL_S = 0.5
MAX_STREAM_S = 3600.0  # then the stream ends; EventSource reconnects by itself
KEEPALIVE_S = 15.0
MAX_IDS = 100
_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


async def job_events(request: Request) -> StreamingResponse:
    job_id = request.path_params["job_id"]
    caller = authorize(request, Scope.READ)
    store = services(request).store
    await run_in_threadpool(visible_raw, request, caller, job_id)  # 404 before the stream
    return _stream(_follow(store, [job_id], _stopping(request), raw_filter(caller)))


async def many_job_events(request: Request) -> StreamingResponse:
    caller = authorize(request, Scope.READ)
    ids = [i for i in request.query_params.get("ids", "").split(",") if i]
    if not ids or len(ids) > MAX_IDS or not all(is_job_id(i) for i in ids):
        raise BadUpload(f"Give 1 to {MAX_IDS} job ids: /status/events?ids=ID1,ID2")
    unique_ids = list(dict.fromkeys(ids))
    store = services(request).store
    return _stream(_follow(store, unique_ids, _stopping(request), raw_filter(caller)))


def _stream(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers=_HEADERS)


def _stopping(request: Request) -> Callable[[], bool]:
    watch = services(request).shutdown
    return lambda: watch.requested


async def _follow(
    store: JobStore,
    ids: list[str],
    stopping: Callable[[], bool],
    visible: Callable[[bytes], bool],
) -> AsyncIterator[str]:
    """Yield `job` events for each change, `missing` for an unknown id (or another
    owner's), then end (also when the server shuts down: EventSource reconnects, to this
    or another process)."""
    last: dict[str, bytes] = {}
    pending = list(ids)
    quiet_s = 0.0
    deadline = time.monotonic() + MAX_STREAM_S
    while pending and time.monotonic() < deadline and not stopping():
        changed = False
        for job_id in list(pending):
            if store.remote:  # a Redis round trip: off the event loop
                event = await asyncio.to_thread(_event_for, store, job_id, last, visible)
            else:
                event = _event_for(store, job_id, last, visible)
            if event is None:
                continue
            changed = True
            yield event
            if not event.startswith("event: job") or _finished(last.get(job_id)):
                pending.remove(job_id)
        if not pending:
            break
        quiet_s = 0.0 if changed else quiet_s + POLL_INTERVAL_S
        if quiet_s >= KEEPALIVE_S:
            quiet_s = 0.0
            yield ": keep-alive\n\n"  # proxies close streams that stay silent
        await asyncio.sleep(POLL_INTERVAL_S)


def _event_for(
    store: JobStore, job_id: str, last: dict[str, bytes], visible: Callable[[bytes], bool]
) -> str | None:
    try:
        raw = store.load_raw(job_id)
        status_of(raw)  # an unreadable record is treated like a missing one
        if not visible(raw):
            raise UnknownJob(job_id)
    except StoreUnavailable:
        return None  # Redis away for a moment: the stream stays open and looks again
    except (UnknownJob, ValueError, KeyError):
        return f'event: missing\ndata: {{"id": "{job_id}"}}\n\n'
    if last.get(job_id) == raw:
        return None
    last[job_id] = raw
    return f"event: job\nid: {job_id}\ndata: {raw.decode()}\n\n"


def _finished(raw: bytes | None) -> bool:
    return raw is not None and status_of(raw).finished


routes = [
    Route("/status/events", many_job_events, methods=["GET"]),
    Route("/status/{job_id}/events", job_events, methods=["GET"]),
]

OPENAPI_PATHS: dict[str, Any] = {
    "/status/{job_id}/events": {
        "get": {
            "summary": "Follow a job as Server-Sent Events",
            "description": "One `job` event (data: the job document) per change, ending once "
            "the job is finished. `curl -N http://HOST/status/ID/events`.",
            "operationId": "job_events",
            "parameters": [
                {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {"description": "An event stream.", "content": {"text/event-stream": {}}},
                "404": {"description": "No job with that id."},
            },
        }
    },
    "/status/events": {
        "get": {
            "summary": "Follow several jobs on one event stream",
            "description": "`ids` is a comma-separated list of up to 100 job ids. Each `job` "
            "event carries one job's document; `missing` names an unknown id. The stream ends "
            "when every job is finished.",
            "operationId": "many_job_events",
            "parameters": [
                {"name": "ids", "in": "query", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {"description": "An event stream.", "content": {"text/event-stream": {}}},
                "400": {"description": "No ids, too many, or a malformed one."},
            },
        }
    },
}
