"""What the client's two ways of sending a file share: the file read a MiB at a time with
the SHA-256 of what was read, a sent file's content type, and refusals as ApiError."""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

CHUNK_BYTES = 1024 * 1024  # read from disk and sent a MiB at a time: memory stays flat

Progress = Callable[[int], None]  # bytes sent since the last call


class ApiError(Exception):
    """The server refused, or could not be reached: the message says which and why."""


class FileDigest:
    """The SHA-256 of a file's first `size` bytes, from the chunks read to send them: the
    file is read once. Bytes not sent in order (those a resumed upload skips) are read
    from the file at the end.

    Hashed in the sending thread: a MiB hashes in about 1 ms while the socket's buffer
    drains, and a thread of its own cost more CPU (0.2-0.4 s a GiB of hand-offs and GIL
    switches) that a server on the same two cores then lacks (docs/performance.md)."""

    def __init__(self, path: Path, size: int) -> None:
        self._path, self._size = path, size
        self._hash = hashlib.sha256()
        self._at = 0  # the bytes hashed so far: [0, _at)

    def feed(self, at: int, chunk: bytes) -> None:
        if at == self._at:
            self._hash.update(chunk)
            self._at += len(chunk)

    def hexdigest(self) -> str:
        for at, chunk in chunks(self._path, self._at, self._size):
            self.feed(at, chunk)
        return self._hash.hexdigest()


def chunks(path: Path, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) of the file from `start` to `stop`, at most a MiB each."""
    with path.open("rb") as f:
        f.seek(start)
        at = start
        while at < stop and (chunk := f.read(min(CHUNK_BYTES, stop - at))):
            yield at, chunk
            at += len(chunk)


def body(
    path: Path, start: int, stop: int, digest: FileDigest, on_progress: Progress
) -> Iterator[bytes]:
    """A request body streamed from the file, hashed and counted as it goes."""
    for at, chunk in chunks(path, start, stop):
        digest.feed(at, chunk)
        yield chunk
        on_progress(len(chunk))


def content_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"  # as curl -F does


def raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        detail = str(response.json()["detail"])
    except (ValueError, KeyError, TypeError):
        detail = response.reason_phrase or "no reason given"
    raise ApiError(f"{response.status_code}: {detail}")
