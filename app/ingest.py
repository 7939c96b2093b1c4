"""Request body -> one file in the data directory, written once and hashed as it streams.

A multipart body (`receive_form`) is fed to python-multipart's streaming parser chunk by
chunk; a raw body (`receive_raw`) is the file itself. Either way, file bytes are collected
as zero-copy views of the received chunks and handed off in 1 MiB batches to two I/O
threads, one writing and one hashing (both release the GIL), so the event loop never
blocks on the disk and thread hand-offs stay rare. The size limit is checked as bytes
arrive. Any failure removes the partial file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser

from app.errors import BadUpload, InsufficientStorage, UploadTooLarge
from app.formdata import Disposition, boundary_of, parse_disposition

FILE_FIELD = "file"
BATCH_BYTES = 1024 * 1024  # one hand-off per MiB; at most three batches held in memory
BATCH_VIEWS = 256  # and at most this many pieces per batch (writev takes up to IOV_MAX)
MAX_BATCHES_IN_FLIGHT = 2
ROOM_CHECK_BYTES = 16 * 1024 * 1024  # a statvfs every 16 MiB: microseconds per check
IOV_MAX = 1024
IO_THREADS = 16  # disk writes and hashing of uploads in flight (each takes up to four)
MAX_PARTS = 32  # one file plus the text fields browser upload libraries add
MAX_FIELD_BYTES = 64 * 1024  # a text field is a name or a list, never a payload
MAX_PART_HEADERS = 8
MAX_PART_HEADER_BYTES = 4096
FILE_MODE = 0o640
# Room for boundaries, part headers and small text fields around a file of exactly the
# limit, so that file still fits; the whole body may not exceed the limit by more.
FRAMING_ALLOWANCE_BYTES = 64 * 1024

T = TypeVar("T")

_IO_THREADS = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="hopper-io")


@dataclass
class Received:
    """What the body held: the stored file's facts and the text fields."""

    size: int
    sha256: str
    filename: str
    content_type: str
    fields: dict[str, str] = field(default_factory=dict)


class PartialFile:
    """The stored file of one upload, while it is written. Its methods block, so they run
    in a thread. It is written in place (files/<id>) and locked (flock) until its record
    exists: a sweep can tell an upload in progress from one a crash left behind.
    """

    def __init__(
        self, path: Path, *, fsync: bool, room_left: Callable[[], int] | None = None
    ) -> None:
        self.path = path
        self._fsync = fsync
        self._room_left = room_left  # bytes that may still be written before the reserve
        self._next_room_check = ROOM_CHECK_BYTES
        self._fd: int | None = None
        self._hasher = hashlib.sha256()
        self.size = 0

    def write(self, views: list[memoryview]) -> None:
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _write_all(self._fd, views)
        except OSError as exc:
            raise _storage_error(exc) from exc
        self.size += sum(len(view) for view in views)
        if self.size >= self._next_room_check:
            self._next_room_check = self.size + ROOM_CHECK_BYTES
            self._check_room()

    def _check_room(self) -> None:
        """Stop before the disk's reserve is gone, not at ENOSPC: the records, the jobs'
        artifacts and the other uploads need room too."""
        if self._room_left is not None and self._room_left() < 0:
            raise InsufficientStorage(
                "The server ran short of disk space during the upload "
                "(HOPPER_MIN_FREE_BYTES). Try again later."
            )

    def hash(self, views: list[memoryview]) -> None:
        for view in views:
            self._hasher.update(view)

    def finish(self, views: list[memoryview]) -> str:
        """Write the last bytes and make them durable if asked; return the SHA-256.

        The lock stays held until release(): a sweep must not take a file whose record
        is still being written.
        """
        self.write(views)
        self.hash(views)
        if self._fsync and self._fd is not None:
            os.fsync(self._fd)
        return self._hasher.hexdigest()

    def release(self) -> None:
        self._close()

    def discard(self) -> None:
        self._close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _write_all(fd: int, views: list[memoryview]) -> None:
    pending = views
    while pending:
        written = os.writev(fd, pending[:IOV_MAX])
        # A short write (rare on a regular file) leaves the rest for another round.
        while pending and written >= len(pending[0]):
            written -= len(pending[0])
            pending = pending[1:]
        if pending and written:
            pending = [pending[0][written:], *pending[1:]]


def _storage_error(exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage("The server's disk is full. Try again later.")
    return exc


class _Pipeline:
    """Hands batches of views to worker threads, up to two batches in flight.

    A batch is written and hashed by two threads at once: both release the GIL, and
    hashing (about 1.4-1.8 GB/s here) is the upload's speed limit, so it must never wait
    for the event loop: the loop keeps receiving while a batch is hashed. Writes and
    hashes each stay in order (a task waits for its predecessor in the same lane). A batch
    is handed off at 1 MiB or 256 views, whichever comes first, so a client that sends
    tiny pieces cannot make one batch huge in memory or too long for writev.
    """

    def __init__(self, partial: PartialFile) -> None:
        self.partial = partial
        self.views: list[memoryview] = []
        self.pending = 0
        self._inflight: list[Future[None]] = []  # [write, hash] of each batch, oldest first

    def add(self, view: memoryview) -> None:
        self.views.append(view)
        self.pending += len(view)

    async def flush_if_full(self) -> None:
        if self.pending < BATCH_BYTES and len(self.views) < BATCH_VIEWS:
            return
        if len(self._inflight) >= 2 * MAX_BATCHES_IN_FLIGHT:
            await self._wait(self._inflight[:2])
        batch, self.views, self.pending = self.views, [], 0
        last_write, last_hash = self._inflight[-2:] if self._inflight else (None, None)
        self._inflight += [
            _IO_THREADS.submit(_after, last_write, self.partial.write, batch),
            _IO_THREADS.submit(_after, last_hash, self.partial.hash, batch),
        ]

    async def settle(self) -> None:
        """Wait for every batch in flight (an error, if any, surfaces here)."""
        await self._wait(list(self._inflight))

    async def _wait(self, batch_futures: list[Future[None]]) -> None:
        if not batch_futures:
            return
        # All are done before anything is raised; they leave the list only then, so a
        # cancellation in between leaves abandon() something to wait for.
        await asyncio.wait([asyncio.wrap_future(f) for f in batch_futures])
        self._inflight = [f for f in self._inflight if f not in batch_futures]
        for future in batch_futures:
            future.result()

    async def abandon(self) -> None:
        """Remove the partial file once no thread can touch its fd any more.

        The wait and the removal run together in one thread, so they complete even if
        this request is cancelled (a server shutting down) while they run.
        """
        inflight, partial = list(self._inflight), self.partial

        def wait_then_discard() -> None:
            futures.wait(inflight)
            partial.discard()

        # Shielded: cancelling this request must not cancel the clean-up still queued.
        await asyncio.shield(asyncio.wrap_future(_IO_THREADS.submit(wait_then_discard)))


def _after(
    previous: Future[None] | None, step: Callable[[list[memoryview]], None], batch: list[memoryview]
) -> None:
    """Run `step` once the previous batch's step in the same lane is done (order matters
    for the hash and the file), and not at all if that one failed."""
    if previous is not None:
        previous.result()
    step(batch)


class _FormReader:
    """python-multipart callbacks: route file bytes to the pipeline, keep text fields."""

    def __init__(self, pipeline: _Pipeline, max_bytes: int) -> None:
        self.pipeline = pipeline
        self.max_bytes = max_bytes
        self.file_seen = False
        self.file_bytes = 0
        self.filename = ""
        self.content_type = "application/octet-stream"
        self.fields: dict[str, str] = {}
        self.ended = False
        self._parts = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._field = b""
        self._value = b""
        self._current: Disposition | None = None
        self._text = bytearray()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise BadUpload(f"The form has more than {MAX_PARTS} parts.")
        self._headers, self._current, self._text = [], None, bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers.append((self._field.strip().lower(), self._value.strip()))
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        dispositions = [v for k, v in self._headers if k == b"content-disposition"]
        if len(dispositions) != 1:
            raise BadUpload("Each part needs exactly one Content-Disposition header.")
        current = parse_disposition(dispositions[0].decode("utf-8", errors="replace"))
        if current.filename is not None:
            self._start_file(current)
        self._current = current

    def _start_file(self, part: Disposition) -> None:
        if part.name != FILE_FIELD:
            raise BadUpload(f"Send the file in a part named '{FILE_FIELD}', not {part.name!r}.")
        if self.file_seen:
            raise BadUpload(f"The form has more than one '{FILE_FIELD}' part; send one file.")
        self.file_seen = True
        self.filename = part.filename or ""
        for key, value in self._headers:
            if key == b"content-type" and value:
                self.content_type = value.decode("latin-1")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        current = self._current
        if current is None:
            return
        if current.filename is None:
            self._text += data[start:end]
            if len(self._text) > MAX_FIELD_BYTES:
                raise BadUpload(f"The form field {current.name!r} is over 64 KiB.")
            return
        self.file_bytes += end - start
        if self.file_bytes > self.max_bytes:
            raise UploadTooLarge(_too_large(self.max_bytes))
        self.pipeline.add(memoryview(data)[start:end])

    def _part_end(self) -> None:
        current = self._current
        if current is not None and current.filename is None and current.name != FILE_FIELD:
            self.fields[current.name] = self._text.decode("utf-8", errors="replace")
        elif current is not None and current.filename is None:
            raise BadUpload("The 'file' part is not a file: it has no filename parameter.")
        self._current = None

    def _end(self) -> None:
        self.ended = True


def _too_large(max_bytes: int) -> str:
    return f"The file is larger than the limit of {max_bytes:,} bytes (HOPPER_MAX_UPLOAD_BYTES)."


async def receive_form(
    chunks: AsyncIterator[bytes],
    content_type: str | None,
    partial: PartialFile,
    max_bytes: int,
    on_stored: Callable[[Received], T],
) -> T:
    """Stream a multipart body into `partial` and return what `on_stored` returns.

    `on_stored` runs in a worker thread while the file is still locked (it saves the job
    record). On any error (bad body, size limit, disk full, client gone, `on_stored`
    refusing) no file is left when this raises.
    """
    boundary = boundary_of(content_type)
    pipeline = _Pipeline(partial)
    reader = _FormReader(pipeline, max_bytes)

    async def read() -> None:
        await _parse(chunks, boundary, reader, max_bytes + FRAMING_ALLOWANCE_BYTES)
        _check_complete(reader)

    def received(size: int, digest: str) -> Received:
        return Received(size, digest, reader.filename, reader.content_type, reader.fields)

    return await _store(pipeline, read, received, on_stored)


async def receive_raw(
    chunks: AsyncIterator[bytes],
    filename: str,
    content_type: str,
    partial: PartialFile,
    max_bytes: int,
    on_stored: Callable[[Received], T],
) -> T:
    """Stream a body that is the file itself (`curl -T`) into `partial`; as receive_form,
    with the name and type from the request rather than from a part's headers."""
    pipeline = _Pipeline(partial)

    async def read() -> None:
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise UploadTooLarge(_too_large(max_bytes))
            if chunk:
                pipeline.add(memoryview(chunk))
                await pipeline.flush_if_full()

    def received(size: int, digest: str) -> Received:
        return Received(size, digest, filename, content_type)

    return await _store(pipeline, read, received, on_stored)


async def _store(
    pipeline: _Pipeline,
    read: Callable[[], Awaitable[None]],
    received: Callable[[int, str], Received],
    on_stored: Callable[[Received], T],
) -> T:
    """Run `read` (which feeds the pipeline), then commit in a thread: the last bytes,
    the digest and `on_stored`. Whatever fails, the partial file goes."""
    partial = pipeline.partial
    try:
        await read()
        await pipeline.settle()
    except FormParserError as exc:
        await pipeline.abandon()
        raise BadUpload(f"The multipart body is malformed: {exc}.") from None
    except BaseException:
        await pipeline.abandon()
        raise

    def complete() -> T:
        try:
            digest = partial.finish(pipeline.views)
            stored = on_stored(received(partial.size, digest))
        except BaseException as exc:
            partial.discard()
            if isinstance(exc, OSError):
                raise _storage_error(exc) from exc
            raise
        partial.release()
        return stored

    # Shielded: once queued, the commit (or its clean-up) runs even if the request is cancelled.
    return await asyncio.shield(asyncio.wrap_future(_IO_THREADS.submit(complete)))


async def _parse(
    chunks: AsyncIterator[bytes], boundary: bytes, reader: _FormReader, max_body: int
) -> None:
    parser = MultipartParser(
        boundary,
        reader.callbacks(),  # type: ignore[arg-type]  # a TypedDict of callables
        max_header_count=MAX_PART_HEADERS,
        max_header_size=MAX_PART_HEADER_BYTES,
    )
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > max_body:  # preamble, fields and epilogue count too
            raise UploadTooLarge(_too_large(reader.max_bytes))
        parser.write(chunk)
        if reader.ended:
            break  # whatever follows the closing boundary is ignored, unread
        await reader.pipeline.flush_if_full()


def _check_complete(reader: _FormReader) -> None:
    if not reader.ended:
        raise BadUpload(
            "The multipart body ended early: it is truncated or lacks its closing boundary."
        )
    if not reader.file_seen:
        raise BadUpload(f"The form has no file part named '{FILE_FIELD}'.")
    if reader.filename == "" and reader.file_bytes == 0:
        raise BadUpload("No file was chosen: the 'file' part is empty and has no name.")
