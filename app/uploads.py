"""Taking an upload: admission checks, streaming to disk, and the queued job record.

When accept_upload returns, the whole file and a `queued` record are in the data
directory (and durable, with HOPPER_FSYNC): that is what the 202 promises.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from app.config import Settings
from app.dedupe import Dedupe
from app.digests import check_sha256, sha256_field
from app.errors import InsufficientStorage, ServiceBusy, UploadTooLarge
from app.filenames import sanitize_filename
from app.idempotency import KeyTaken, claim, find, key_digest
from app.ingest import (
    FRAMING_ALLOWANCE_BYTES,
    PartialFile,
    Received,
    receive_form,
    receive_raw,
)
from app.layout import DataDir, fsync_dir, new_job_id
from app.models import Job, Webhook
from app.processors.registry import Registry
from app.store import JobStore
from app.webhooks.targets import accept_callback

T = TypeVar("T")


@dataclass(frozen=True)
class UploadRequest:
    chunks: AsyncIterator[bytes]
    content_type: str | None
    content_length: int | None
    processors: str | None  # from the query string; a form field may also name them
    idempotency_key: str | None = None
    owner: str | None = None  # the API key's id; its idempotency keys are its own
    callback_url: str | None = None  # from the query string; a form field may also name it
    raw_filename: str | None = None  # set: the body is the file itself, under this name
    sha256: str | None = None  # hex, from Content-Digest / Repr-Digest; checked when stored
    # The caller's own admission (the key's quotas), once the upload is known not to be a
    # replay and before a byte of the body is read: it may refuse by raising, and gives the
    # body back as it may be read. A replay never calls it, so it costs no quota.
    admit: Callable[[AsyncIterator[bytes]], Awaitable[AsyncIterator[bytes]]] | None = None


@dataclass(frozen=True)
class UploadEnv:
    settings: Settings
    layout: DataDir
    store: JobStore
    registry: Registry
    queue_depth: Callable[[], int]  # jobs queued or running in this process
    hold: Callable[[str], bool] = lambda job_id: True  # this process owns the new job
    dedupe: Dedupe | None = None  # HOPPER_DEDUPE


@dataclass(frozen=True)
class Accepted:
    job: Job
    replayed: bool = False  # an earlier upload with the same Idempotency-Key


async def accept_upload(request: UploadRequest, env: UploadEnv) -> Accepted:
    """Refuse early what can be refused from the headers, then stream and record."""
    if request.processors is not None:
        env.registry.parse_pipeline(request.processors)  # 400 before a byte is read
    if request.callback_url:  # 400 before a byte is read too; the DNS lookup off the loop
        await asyncio.to_thread(accept_callback, request.callback_url, env.settings)
    key = (
        None
        if request.idempotency_key is None
        else key_digest(request.idempotency_key, request.owner or "")
    )
    if key is not None and (earlier := await _off_loop(env, find, env.layout, env.store, key)):
        return Accepted(earlier, replayed=True)  # the body is never read
    chunks = request.chunks if request.admit is None else await request.admit(request.chunks)
    _check_announced_size(request.content_length, env, raw=request.raw_filename is not None)
    await _off_loop(env, _check_capacity, request.content_length, env)
    job_id = new_job_id()
    partial = PartialFile(
        env.layout.upload(job_id),
        fsync=env.settings.fsync,
        room_left=lambda: env.layout.free_bytes_now() - env.settings.min_free_bytes,
    )

    def record(received: Received) -> Job:
        _check_digest(received, request)  # a mismatch: 400, and the file goes
        job = _new_job(job_id, received, request, env)
        return commit(
            job,
            env,
            then=None if key is None else lambda: claim(env.layout, env.store, key, job_id),
        )

    try:
        job = await _receive(chunks, request, partial, env.settings.max_upload_bytes, record)
    except KeyTaken as taken:  # a concurrent upload with the same key won
        return Accepted(env.store.load(taken.job_id), replayed=True)
    return Accepted(job)


def commit(job: Job, env: UploadEnv, then: Callable[[], None] | None = None) -> Job:
    """Record a whole, hashed upload as its job: the last step of every way in (multipart,
    raw, tus), in a thread, while the upload still holds the file's run lock. Queued, or
    with HOPPER_DEDUPE, done at once with the results of a job that had the same bytes.
    `then` (the Idempotency-Key's claim) runs once the record is saved; if it fails, or
    anything here, there is no job."""
    if env.dedupe is not None:
        job = env.dedupe.reuse(job, env.layout.upload(job.id))
    try:
        env.store.save(job)
        if env.settings.fsync:
            fsync_dir(env.layout.files)
        if then is not None:
            then()
    except BaseException:
        env.store.delete(job.id)  # no 202, so no job: the caller removes the file
        shutil.rmtree(env.layout.artifacts(job.id), ignore_errors=True)  # a duplicate's
        raise
    if not job.status.finished:
        # Owned before the upload lets go of the file's run lock: from here to its end
        # the job has an owner, and no other process takes it.
        env.hold(job.id)
    return job


async def _off_loop(env: UploadEnv, call: Callable[..., T], *args: Any) -> T:
    """A call that may read the job store: a Redis round trip goes to a thread (a slow
    Redis must not stall every request), a local file read does not."""
    if env.store.remote:
        return await asyncio.to_thread(call, *args)
    return call(*args)


def _receive(
    chunks: AsyncIterator[bytes],
    request: UploadRequest,
    partial: PartialFile,
    max_bytes: int,
    record: Callable[[Received], Job],
) -> Awaitable[Job]:
    if request.raw_filename is None:
        return receive_form(chunks, request.content_type, partial, max_bytes, on_stored=record)
    content_type = request.content_type or "application/octet-stream"
    return receive_raw(chunks, request.raw_filename, content_type, partial, max_bytes, record)


def _check_digest(received: Received, request: UploadRequest) -> None:
    """Both the headers' digest and the form's `sha256` field (which may come after the
    file part, so only now is it known) must match the bytes stored."""
    field = received.fields.get("sha256")
    check_sha256(received.sha256, request.sha256)
    check_sha256(received.sha256, None if field is None else sha256_field(field))


def _check_announced_size(content_length: int | None, env: UploadEnv, *, raw: bool) -> None:
    if content_length is None:
        return  # chunked: the limit is enforced as the bytes arrive
    limit = env.settings.max_upload_bytes
    if content_length > limit + (0 if raw else FRAMING_ALLOWANCE_BYTES):
        raise UploadTooLarge(
            f"The upload is {content_length:,} bytes; the limit is {limit:,} bytes "
            "(HOPPER_MAX_UPLOAD_BYTES)."
        )


def _check_capacity(content_length: int | None, env: UploadEnv) -> None:
    """Refuse before the body is read: a full queue (503) or a nearly full disk (507)."""
    if env.queue_depth() >= env.settings.max_queue:
        raise ServiceBusy(
            f"The server has {env.settings.max_queue} jobs waiting (HOPPER_MAX_QUEUE). "
            "Try again in a few seconds."
        )
    needed = (content_length or 0) + env.settings.min_free_bytes
    if env.layout.free_bytes() < needed:
        raise InsufficientStorage(
            "The server is short of disk space (HOPPER_MIN_FREE_BYTES). Try again later."
        )


def _new_job(job_id: str, received: Received, request: UploadRequest, env: UploadEnv) -> Job:
    spec = received.fields.get("processors") or request.processors
    return Job(
        id=job_id,
        owner=request.owner,
        filename=sanitize_filename(received.filename),
        size=received.size,
        sha256=received.sha256,
        content_type=received.content_type[:255],
        processors=env.registry.parse_pipeline(spec or env.settings.default_processors),
        webhook=_webhook(received, request, env),
    )


def _webhook(received: Received, request: UploadRequest, env: UploadEnv) -> Webhook | None:
    """The form field wins over the query, like `processors`; the query's was checked
    before the body was read. Runs on an I/O thread, so the field's DNS lookup may block."""
    field = received.fields.get("callback_url")
    url = accept_callback(field, env.settings) if field else (request.callback_url or "").strip()
    return Webhook(url=url) if url else None
