"""Resumable (tus) uploads: create one, append a PATCH's bytes, terminate it, and turn a
complete one into a job exactly like a multipart upload's.

A PATCH holds the flock on files/<id> while it writes (a second one at once gets 423); its
bytes are written at their offset and hashed in I/O threads as they arrive, so the event
loop never blocks on the disk. Whatever ends the PATCH (the last byte, the client going
away, a stalled body) the bytes received so far are kept and the record says so, which is
what makes the upload resumable; only a checksum mismatch (or a PATCH with a checksum that
did not arrive whole) discards the PATCH's bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from app.errors import InsufficientStorage, ServiceBusy, UnknownJob, UploadTooLarge
from app.filenames import sanitize_filename
from app.layout import new_job_id
from app.models import Job
from app.partials import Hashers, Partial, PartialStore, expiry_from_now, rehash
from app.tusproto import Checksum, ChecksumMismatch, OffsetMismatch, UploadGone, UploadLocked
from app.uploads import UploadEnv, commit

BATCH_BYTES = 1024 * 1024  # one hand-off per MiB, at most two batches in flight
MAX_BATCHES_IN_FLIGHT = 2
ROOM_CHECK_BYTES = 16 * 1024 * 1024
FILE_MODE = 0o640
DEFAULT_CONTENT_TYPE = "application/octet-stream"
T = TypeVar("T")

_IO = ThreadPoolExecutor(max_workers=16, thread_name_prefix="hopper-tus")


@dataclass(frozen=True)
class TusEnv:
    upload: UploadEnv
    partials: PartialStore
    hashers: Hashers = field(default_factory=Hashers)

    @property
    def expiry_s(self) -> float:
        return self.upload.settings.tus_expiry


@dataclass(frozen=True)
class State:
    """Where an upload stands: its partial record, or the job it became."""

    offset: int
    length: int
    metadata: str = ""
    expires_at: datetime | None = None
    job: Job | None = None  # set once the upload is complete
    completed: bool = False  # by this request: its job is to be queued


Visible = Callable[[str | None], bool]  # may the caller see an upload of this owner?


async def _off_loop(fn: Callable[..., T], *args: Any) -> T:
    # Shielded: once queued, a step that holds a lock or commits runs to its end even if
    # the request is cancelled (a server shutting down).
    return await asyncio.shield(asyncio.wrap_future(_IO.submit(fn, *args)))


def create(
    env: TusEnv, owner: str | None, length: int, metadata: dict[str, str], raw_metadata: str
) -> tuple[Partial, Job | None]:
    """A new upload (blocks: run it in a thread). Refused before anything is stored: over
    the size limit 413, an unknown processor 400, a full queue 503, a nearly full disk 507.
    An upload of length 0 is complete at once: its job is returned too."""
    settings = env.upload.settings
    if length > settings.max_upload_bytes:
        raise UploadTooLarge(
            f"The upload is {length:,} bytes; the limit is {settings.max_upload_bytes:,} "
            "bytes (HOPPER_MAX_UPLOAD_BYTES)."
        )
    processors = env.upload.registry.parse_pipeline(
        metadata.get("processors") or settings.default_processors
    )
    _check_capacity(env, length)
    now = datetime.now(UTC)
    partial = Partial(
        id=new_job_id(),
        owner=owner,
        length=length,
        metadata=raw_metadata,
        filename=sanitize_filename(metadata.get("filename") or metadata.get("name") or ""),
        content_type=(metadata.get("filetype") or metadata.get("type") or DEFAULT_CONTENT_TYPE)[
            :255
        ],
        processors=processors,
        created_at=now,
        expires_at=expiry_from_now(env.expiry_s),
    )
    path = env.upload.layout.upload(partial.id)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a sweep leaves a locked file alone
        if length == 0:
            return partial, _finish(env, partial, rehash(path, 0))
        env.partials.save(partial)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return partial, None


def _check_capacity(env: TusEnv, length: int) -> None:
    settings = env.upload.settings
    if env.upload.queue_depth() >= settings.max_queue:
        raise ServiceBusy(
            f"The server has {settings.max_queue} jobs waiting (HOPPER_MAX_QUEUE). "
            "Try again in a few seconds."
        )
    if env.upload.layout.free_bytes() < length + settings.min_free_bytes:
        raise InsufficientStorage(
            "The server is short of disk space (HOPPER_MIN_FREE_BYTES). Try again later."
        )


def state(env: TusEnv, upload_id: str, visible: Visible) -> State:
    """For HEAD (blocks briefly: a record read). Another owner's upload is unknown."""
    partial = env.partials.load(upload_id)
    if partial is None:
        job = env.upload.store.load(upload_id)  # UnknownJob if there is none either
        if not visible(job.owner):
            raise UnknownJob(upload_id)
        return State(job.size, job.size, job=job)
    if not visible(partial.owner):
        raise UnknownJob(upload_id)
    if partial.expired:
        raise UploadGone("This upload expired (HOPPER_TUS_EXPIRY); start it again.")
    return State(partial.offset, partial.length, partial.metadata, partial.expires_at)


def terminate(env: TusEnv, upload_id: str, visible: Visible) -> None:
    """DELETE: the unfinished upload's file and record go (blocks: run it in a thread)."""
    partial = env.partials.load(upload_id)
    if partial is None or not visible(partial.owner):
        raise UnknownJob(upload_id)
    path = env.upload.layout.upload(upload_id)
    fd = _lock(path)
    try:
        env.partials.delete(upload_id)
        path.unlink(missing_ok=True)
        env.hashers.drop(upload_id)
    finally:
        os.close(fd)


def _lock(path: Path) -> int:
    """An fd holding the upload's flock; 423 if another request holds it."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        raise UnknownJob() from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UploadLocked(
            "Another request is writing to this upload; wait for it to end, then ask "
            "for the offset (HEAD) and go on."
        ) from None
    return fd


@dataclass(frozen=True)
class PatchRequest:
    upload_id: str
    offset: int
    chunks: AsyncIterator[bytes]
    content_length: int | None
    checksum: Checksum | None
    visible: Visible


async def append(env: TusEnv, request: PatchRequest) -> State:
    """PATCH: the bytes at `offset`; the upload's new state (with its job once complete)."""
    partial = await asyncio.to_thread(_patchable, env, request)
    if isinstance(partial, State):
        return partial  # already a job: nothing to write
    path = env.upload.layout.upload(partial.id)
    fd = await _off_loop(_lock, path)
    try:
        partial = await _off_loop(_under_lock, env, request, fd)
        hasher = env.hashers.take(partial.id, partial.offset)
        if hasher is None:  # the last PATCH went to another process, or before a restart
            hasher = await _off_loop(rehash, path, partial.offset)
        return await _receive(env, request, partial, fd, hasher)
    finally:
        os.close(fd)  # and with it the lock


def _patchable(env: TusEnv, request: PatchRequest) -> Partial | State:
    partial = env.partials.load(request.upload_id)
    if partial is None:
        done = state(env, request.upload_id, request.visible)  # a job, or 404
        _check_offset(request.offset, done.offset)
        if request.content_length:
            raise UploadTooLarge("This upload is complete: it takes no more bytes.")
        return done
    if not request.visible(partial.owner):
        raise UnknownJob(request.upload_id)
    if partial.expired:
        raise UploadGone("This upload expired (HOPPER_TUS_EXPIRY); start it again.")
    _check_offset(request.offset, partial.offset)
    _check_room(env, partial, request.content_length)
    return partial


def _check_offset(sent: int, stored: int) -> None:
    if sent != stored:
        raise OffsetMismatch(
            f"The server has {stored:,} bytes of this upload, not {sent:,}; send the rest "
            f"from Upload-Offset: {stored}."
        )


def _check_room(env: TusEnv, partial: Partial, content_length: int | None) -> None:
    left = partial.length - partial.offset
    if content_length is not None and content_length > left:
        raise UploadTooLarge(
            f"This PATCH has {content_length:,} bytes; the upload needs only {left:,} more "
            "(Upload-Length)."
        )
    settings = env.upload.settings
    needed = (left if content_length is None else content_length) + settings.min_free_bytes
    if env.upload.layout.free_bytes() < needed:
        raise InsufficientStorage(
            "The server is short of disk space (HOPPER_MIN_FREE_BYTES). Try again later."
        )


def _under_lock(env: TusEnv, request: PatchRequest, fd: int) -> Partial:
    """Checked again once the lock is held: a PATCH that just ended may have moved the
    offset. Bytes past the record (a crash mid-PATCH) are not the upload's: cut."""
    partial = env.partials.load(request.upload_id)
    if partial is None:
        raise UnknownJob(request.upload_id)  # terminated or finished meanwhile
    size = os.fstat(fd).st_size
    if size < partial.offset:  # the disk lost the tail (power loss without fsync)
        partial = partial.model_copy(update={"offset": size})
        env.partials.save(partial)
    _check_offset(request.offset, partial.offset)
    if size > partial.offset:
        os.ftruncate(fd, partial.offset)
    return partial


async def _receive(
    env: TusEnv, request: PatchRequest, partial: Partial, fd: int, hasher: Any
) -> State:
    checked = request.checksum
    backup = hasher.copy() if checked is not None else None
    writer = _Appender(env, fd, partial, hasher, checked.hasher() if checked else None)
    failure: BaseException | None = None
    # The client gone, a stalled body, bytes past the length, a disk error: what was
    # written is kept (that is the point of resuming), then the error is answered.
    try:
        await writer.take(request.chunks)
    except BaseException as exc:  # noqa: BLE001 - raised again after the commit
        failure = exc
    await writer.settle()
    keep = True
    if checked is not None and (failure is not None or writer.digest() != checked.digest):
        keep = False
        failure = failure or ChecksumMismatch(
            f"The bytes of this PATCH do not match its {checked.algorithm} Upload-Checksum; "
            "they were discarded. Send them again."
        )
    result = await _off_loop(_commit, env, partial, writer, fd, keep, backup)
    if failure is not None and not result.completed:  # complete: a job, whatever came after
        raise failure
    return result


def _commit(
    env: TusEnv, partial: Partial, writer: _Appender, fd: int, keep: bool, backup: Any
) -> State:
    """Under the lock: the new offset in the record (or the PATCH's bytes discarded), and
    the job once the upload is complete."""
    if not keep:
        os.ftruncate(fd, partial.offset)
        if backup is not None:
            env.hashers.keep(partial.id, partial.offset, backup)
        return _state(partial)
    offset = writer.written
    if os.fstat(fd).st_size > offset:
        os.ftruncate(fd, offset)  # a failed write may have left part of a batch
    if env.upload.settings.fsync:
        os.fsync(fd)
    updated = partial.model_copy(
        update={"offset": offset, "expires_at": expiry_from_now(env.expiry_s)}
    )
    if offset == partial.length:
        hasher = writer.hasher
        if writer.hashed != offset:  # the hash lane stopped early: count from the file
            hasher = rehash(env.upload.layout.upload(partial.id), offset)
        job = _finish(env, updated, hasher)
        return State(offset, partial.length, job=job, completed=True)
    env.partials.save(updated)
    if writer.hashed == offset:
        env.hashers.keep(partial.id, offset, writer.hasher)
    return _state(updated)


def _state(partial: Partial) -> State:
    return State(partial.offset, partial.length, partial.metadata, partial.expires_at)


def _finish(env: TusEnv, partial: Partial, hasher: Any) -> Job:
    """The upload is whole: its job record, committed as a multipart upload's (queued and
    owned by this process before the lock on the file is let go, or a duplicate done at
    once); then the partial record goes."""
    job = Job(
        id=partial.id,
        owner=partial.owner,
        filename=partial.filename,
        size=partial.length,
        sha256=hasher.hexdigest(),
        content_type=partial.content_type,
        processors=partial.processors,
    )
    job = commit(job, env.upload)
    env.partials.delete(partial.id)
    env.hashers.drop(partial.id)
    return job


class _Appender:
    """Writes (pwritev at the offset) and hashes a PATCH's bytes in I/O threads, a batch
    at a time, up to two batches in flight: the loop keeps receiving meanwhile. Writes and
    hashes each stay in order; `written` and `hashed` say how far each lane got."""

    def __init__(
        self, env: TusEnv, fd: int, partial: Partial, hasher: Any, digest: Any | None
    ) -> None:
        self._env, self._fd = env, fd
        self._limit = partial.length
        self.hasher, self._digest = hasher, digest
        self.written = self.hashed = self._received = partial.offset
        self._next_room_check = partial.offset + ROOM_CHECK_BYTES
        self._views: list[memoryview] = []
        self._pending = 0
        self._inflight: list[Future[None]] = []

    async def take(self, chunks: AsyncIterator[bytes]) -> None:
        async for chunk in chunks:
            room = self._limit - self._received
            if len(chunk) > room:
                self._add(memoryview(chunk)[:room])
                raise UploadTooLarge(
                    f"The PATCH goes past the upload's length of {self._limit:,} bytes "
                    "(Upload-Length); the bytes up to it were kept."
                )
            if chunk:
                self._add(memoryview(chunk))
            if self._pending >= BATCH_BYTES or len(self._views) >= 256:
                await self._flush()

    def _add(self, view: memoryview) -> None:
        if len(view):
            self._views.append(view)
            self._pending += len(view)
            self._received += len(view)

    async def _flush(self) -> None:
        if len(self._inflight) >= 2 * MAX_BATCHES_IN_FLIGHT:
            oldest = self._inflight[:2]
            await _wait(oldest)  # they leave the list once done: settle() waits for all
            self._inflight = self._inflight[2:]
            for future in oldest:
                future.result()  # a full disk stops the PATCH here, not at its end
        batch, at = self._views, self._received - self._pending
        self._views, self._pending = [], 0
        last_write, last_hash = self._inflight[-2:] if self._inflight else (None, None)
        self._inflight += [
            _IO.submit(_after, last_write, self._write, batch, at),
            _IO.submit(_after, last_hash, self._hash, batch, at),
        ]

    async def settle(self) -> None:
        """Hand off what is buffered and wait for every batch; errors are not raised here
        (`written` says what is on disk)."""
        if self._views:
            with contextlib.suppress(Exception):
                await self._flush()
        await _wait(self._inflight)
        self._inflight = []

    def _write(self, batch: list[memoryview], at: int) -> None:
        _pwrite_all(self._fd, batch, at)
        self.written = at + sum(len(v) for v in batch)
        if self.written >= self._next_room_check:
            self._next_room_check = self.written + ROOM_CHECK_BYTES
            settings = self._env.upload.settings
            if self._env.upload.layout.free_bytes_now() < settings.min_free_bytes:
                raise InsufficientStorage(
                    "The server ran short of disk space during the upload "
                    "(HOPPER_MIN_FREE_BYTES). Try again later."
                )

    def _hash(self, batch: list[memoryview], at: int) -> None:
        for view in batch:
            self.hasher.update(view)
            if self._digest is not None:
                self._digest.update(view)
        self.hashed = at + sum(len(v) for v in batch)

    def digest(self) -> bytes:
        return b"" if self._digest is None else bytes(self._digest.digest())


async def _wait(pending: list[Future[None]]) -> None:
    if pending:
        # Shielded like every step here: the file is written by these threads until done.
        await asyncio.shield(asyncio.wait([asyncio.wrap_future(f) for f in pending]))


def _after(
    previous: Future[None] | None,
    step: Callable[[list[memoryview], int], None],
    batch: list[memoryview],
    at: int,
) -> None:
    """Run `step` once the previous batch's step in the same lane is done, and not at all
    if that one failed: each lane stays in order, and stops at its first error."""
    if previous is not None:
        previous.result()
    step(batch, at)


def _pwrite_all(fd: int, views: list[memoryview], at: int) -> None:
    pending = views
    while pending:
        try:
            written = os.pwritev(fd, pending[:1024], at)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage("The server's disk is full. Try again later.") from exc
            raise
        at += written
        while pending and written >= len(pending[0]):
            written -= len(pending[0])
            pending = pending[1:]
        if pending and written:
            pending = [pending[0][written:], *pending[1:]]
