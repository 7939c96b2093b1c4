"""What the client's two ways of sending a file share: the file read a MiB at a time, its
identity (to tell that it changed while it was sent), its SHA-256, its content type, and
refusals as ApiError."""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

CHUNK_BYTES = 1024 * 1024  # read from disk and sent a MiB at a time: memory stays flat

Progress = Callable[[int], None]  # bytes sent since the last call


class ApiError(Exception):
    """The server refused, or could not be reached: the message says which and why."""


@dataclass(frozen=True)
class Identity:
    """What changes when a file is written to, truncated or replaced: compared before and
    after an upload, it tells that the file changed while it was sent, at no cost."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> Identity:
        stat = path.stat()
        return cls(stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def chunks(path: Path, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) of the file from `start` to `stop`, at most a MiB each."""
    with path.open("rb") as f:
        f.seek(start)
        at = start
        while at < stop and (chunk := f.read(min(CHUNK_BYTES, stop - at))):
            yield at, chunk
            at += len(chunk)


def body(
    path: Path, start: int, stop: int, digest: Any | None, on_progress: Progress
) -> Iterator[bytes]:
    """A request body streamed from the file, counted (and hashed into `digest`) as it goes."""
    for _, chunk in chunks(path, start, stop):
        if digest is not None:
            digest.update(chunk)
        yield chunk
        on_progress(len(chunk))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    for _, chunk in chunks(path, 0, path.stat().st_size):
        digest.update(chunk)
    return digest.hexdigest()


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
