"""/files/: tus 1.0 resumable uploads, thin routes over app.resumable.

A finished upload is a job like a multipart one: its id is the upload's, `/status/<id>`
follows it, and it is handed to the dispatcher the same way (BackgroundTasks).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Header, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from app.api.access import Caller, access_of, caller_of, needs
from app.api.deps import services
from app.api.uploads import declared_length, hand_on, upload_slot
from app.apikeys import Scope
from app.errors import HopperError, UnsupportedMediaType
from app.models import ErrorBody
from app.quotas import Slot
from app.resumable import PatchRequest, State, TusEnv, Visible, append, create, state, terminate
from app.tusproto import (
    CHECKSUM_ALGORITHMS,
    OFFSET_CONTENT_TYPE,
    TUS_EXTENSIONS,
    TUS_VERSION,
    check_version,
    http_date,
    parse_checksum,
    parse_length,
    parse_metadata,
    parse_offset,
)

log = logging.getLogger("hopper.api")
router = APIRouter(prefix="/files", tags=["tus"])
TUS = {"Tus-Resumable": TUS_VERSION}


def _error(text: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": text}


def _headers(*names: str) -> dict[str, Any]:
    return {name: {"schema": {"type": "string"}} for name in names}


_COMMON: dict[int | str, dict[str, Any]] = {
    404: _error("No unfinished upload with that id (another owner's is the same)."),
    412: _error("Tus-Resumable is missing or not 1.0.0."),
}


def _version() -> Any:
    return Header(default=None, alias="Tus-Resumable", description="Must be 1.0.0.")


_OCTETS = {
    "requestBody": {
        "content": {OFFSET_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}
    }
}


def tus_env(request: Request) -> TusEnv:
    found: TusEnv = request.app.state.tus
    return found


def _visible(caller: Caller) -> Visible:
    return lambda owner: caller.sees_all or owner == caller.owner


@contextmanager
def _tus_answer(extra: dict[str, str] | None = None) -> Iterator[None]:
    """Errors carry Tus-Resumable too (and the upload's Location once it exists)."""
    try:
        yield
    except HopperError as exc:
        exc.headers = {**(exc.headers or {}), **TUS, **(extra or {})}
        raise


@router.options(
    "/",
    status_code=204,
    summary="What this tus server offers",
    response_class=Response,
    responses={
        204: {
            "description": "Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm.",
            "headers": _headers("Tus-Version", "Tus-Extension", "Tus-Max-Size"),
        }
    },
)
async def tus_options(request: Request) -> Response:
    headers = {
        **TUS,
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": TUS_EXTENSIONS,
        "Tus-Max-Size": str(services(request).settings.max_upload_bytes),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
    }
    return Response(status_code=204, headers=headers)


@router.post(
    "/",
    status_code=201,
    summary="Create a resumable upload (tus creation, creation-with-upload)",
    description="`Upload-Length` is the file's size; `Upload-Metadata` may carry `filename`, "
    "`filetype` (or `type`) and `processors`. A body sent as "
    "`application/offset+octet-stream` is the upload's first bytes. The answer's `Location` "
    "is the upload's URL, `/files/<id>`; once complete, `/status/<id>` is its job.",
    response_class=Response,
    dependencies=[needs(Scope.UPLOAD)],
    responses={
        201: {
            "description": "Created: Location, Upload-Offset, Upload-Expires.",
            "headers": _headers("Location", "Upload-Offset", "Upload-Expires"),
        },
        400: _error("Upload-Length missing or malformed, bad metadata, unknown processor."),
        412: _COMMON[412],
        413: _error("Upload-Length over HOPPER_MAX_UPLOAD_BYTES."),
        429: _error("Over the API key's quota; see Retry-After."),
        460: _error("The first bytes do not match their Upload-Checksum (discarded)."),
        503: _error("Over HOPPER_MAX_QUEUE or HOPPER_MAX_CONCURRENT_UPLOADS."),
        507: _error("The data directory lacks room (HOPPER_MIN_FREE_BYTES)."),
    },
    openapi_extra=_OCTETS,
)
async def tus_create(
    request: Request,
    background_tasks: BackgroundTasks,
    tus_resumable: str | None = _version(),
    upload_length: str | None = Header(default=None, alias="Upload-Length"),
    upload_metadata: str | None = Header(default=None, alias="Upload-Metadata"),
    upload_checksum: str | None = Header(default=None, alias="Upload-Checksum"),
) -> Response:
    with _tus_answer():
        check_version(tus_resumable)
        length = parse_length(upload_length)
        metadata = parse_metadata(upload_metadata)
        checksum = parse_checksum(upload_checksum)
        caller = caller_of(request)
        if caller.key is not None:  # the whole length must fit the key's day
            quotas = access_of(request).quotas
            slot = await run_in_threadpool(quotas.admit, caller.key, length)
            if slot is not None:
                await run_in_threadpool(quotas.release, slot)
        env = tus_env(request)
        partial, job = await run_in_threadpool(
            create, env, caller.owner, length, metadata, upload_metadata or ""
        )
    location = {"Location": f"/files/{partial.id}"}
    result = State(0, length, partial.metadata, partial.expires_at, job, job is not None)
    if job is None and _is_octets(request):
        with _tus_answer(location):
            try:
                result = await _append(request, background_tasks, partial.id, 0, checksum)
            except ClientDisconnect:
                return Response(status_code=400)  # nobody is listening for it
    elif job is not None:
        _queue(request, background_tasks, result)
    return Response(status_code=201, headers={**_state_headers(result), **location})


@router.head(
    "/{job_id}",
    summary="How much of a resumable upload the server has",
    response_class=Response,
    dependencies=[needs(Scope.UPLOAD)],
    responses={
        200: {
            "description": "Upload-Offset and Upload-Length (equal once it is a job).",
            "headers": _headers("Upload-Offset", "Upload-Length", "Upload-Expires"),
        },
        404: {"description": _COMMON[404]["description"]},
        410: {"description": "The upload expired (HOPPER_TUS_EXPIRY)."},
        412: {"description": _COMMON[412]["description"]},
    },
)
async def tus_head(
    job_id: str, request: Request, tus_resumable: str | None = _version()
) -> Response:
    with _tus_answer({"Cache-Control": "no-store"}):
        check_version(tus_resumable)
        found = await run_in_threadpool(
            state, tus_env(request), job_id, _visible(caller_of(request))
        )
    headers = {**_state_headers(found), "Upload-Length": str(found.length)}
    if found.metadata:
        headers["Upload-Metadata"] = found.metadata
    return Response(status_code=200, headers={**headers, "Cache-Control": "no-store"})


@router.patch(
    "/{job_id}",
    status_code=204,
    summary="Append bytes to a resumable upload",
    description="`Upload-Offset` must be the server's offset (HEAD). An optional "
    "`Upload-Checksum: <algorithm> <base64 digest>` covers this PATCH's bytes. When the "
    "offset reaches the length the upload becomes a queued job with the same id (with "
    "HOPPER_DEDUPE, possibly a duplicate that is done at once, as for POST /uploads).",
    response_class=Response,
    dependencies=[needs(Scope.UPLOAD)],
    responses={
        204: {
            "description": "Stored: the new Upload-Offset.",
            "headers": _headers("Upload-Offset", "Upload-Expires"),
        },
        400: _error("Upload-Offset missing, a malformed or unsupported Upload-Checksum."),
        404: _COMMON[404],
        408: _error("The body stalled (HOPPER_BODY_IDLE_TIMEOUT); what arrived is kept."),
        409: _error("Upload-Offset is not the server's offset."),
        410: _error("The upload expired (HOPPER_TUS_EXPIRY)."),
        412: _COMMON[412],
        413: _error("The bytes go past Upload-Length."),
        415: _error("Content-Type is not application/offset+octet-stream."),
        423: _error("Another PATCH of this upload is under way."),
        429: _error("Over the API key's quota; see Retry-After."),
        460: _error("The bytes do not match Upload-Checksum; they were discarded."),
        503: _error("Over HOPPER_MAX_CONCURRENT_UPLOADS; see Retry-After."),
        507: _error("The data directory lacks room (HOPPER_MIN_FREE_BYTES)."),
    },
    openapi_extra=_OCTETS,
)
async def tus_patch(
    job_id: str,
    request: Request,
    background_tasks: BackgroundTasks,
    tus_resumable: str | None = _version(),
    upload_offset: str | None = Header(default=None, alias="Upload-Offset"),
    upload_checksum: str | None = Header(default=None, alias="Upload-Checksum"),
) -> Response:
    with _tus_answer():
        check_version(tus_resumable)
        if not _is_octets(request):
            raise UnsupportedMediaType(f"Send the bytes as Content-Type: {OFFSET_CONTENT_TYPE}.")
        offset = parse_offset(upload_offset)
        checksum = parse_checksum(upload_checksum)
        try:
            found = await _append(request, background_tasks, job_id, offset, checksum)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening for it
    return Response(status_code=204, headers=_state_headers(found))


@router.delete(
    "/{job_id}",
    status_code=204,
    summary="Terminate an unfinished resumable upload",
    description="Its bytes and record are removed. A finished upload is a job: "
    "`DELETE /jobs/<id>`.",
    response_class=Response,
    dependencies=[needs(Scope.UPLOAD)],
    responses={204: {"description": "Terminated."}, **_COMMON, 423: _error("A PATCH runs.")},
)
async def tus_delete(
    job_id: str, request: Request, tus_resumable: str | None = _version()
) -> Response:
    with _tus_answer():
        check_version(tus_resumable)
        await run_in_threadpool(terminate, tus_env(request), job_id, _visible(caller_of(request)))
    return Response(status_code=204, headers=TUS)


async def _append(
    request: Request, background_tasks: BackgroundTasks, upload_id: str, offset: int, checksum: Any
) -> State:
    caller = caller_of(request)
    quotas = access_of(request).quotas
    patch = PatchRequest(
        upload_id, offset, request.stream(), declared_length(request), checksum, _visible(caller)
    )
    with upload_slot(request, services(request).settings.max_concurrent_uploads):
        slot = None
        if caller.key is not None:
            slot = await run_in_threadpool(quotas.admit, caller.key, patch.content_length)
        result: State | None = None
        try:
            result = await append(tus_env(request), patch)
        except ClientDisconnect:
            log.info("client went away mid-PATCH; the bytes received are kept")
            raise
        finally:
            if slot is not None:
                await run_in_threadpool(_settle, quotas, slot, result)
    _queue(request, background_tasks, result)
    return result


def _settle(quotas: Any, slot: Slot, result: State | None) -> None:
    """A finished upload counts against its key like a multipart one; a PATCH that did not
    finish it gives back its slot."""
    if result is not None and result.completed and result.job is not None:
        quotas.stored(slot, result.job.id, result.job.size)
    else:
        quotas.release(slot)


def _queue(request: Request, background_tasks: BackgroundTasks, result: State) -> None:
    if result.completed and result.job is not None:
        request.state.job_id = result.job.id  # for the request's log line
        request.state.stored_bytes = result.job.size
        hand_on(background_tasks, services(request).dispatcher, result.job)


def _state_headers(found: State) -> dict[str, str]:
    headers = {**TUS, "Upload-Offset": str(found.offset)}
    if found.job is None and found.expires_at is not None:
        headers["Upload-Expires"] = http_date(found.expires_at)
    return headers


def _is_octets(request: Request) -> bool:
    ctype = request.headers.get("content-type", "")
    return ctype.split(";", 1)[0].strip().lower() == OFFSET_CONTENT_TYPE
