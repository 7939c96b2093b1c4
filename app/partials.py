"""Unfinished resumable (tus) uploads: their records, their running SHA-256, their expiry.

An unfinished upload is its bytes in files/<id> (named by the job id it will get, like
every upload) and a small record in partials/<id>.json: offset, length, metadata, owner,
expiry. The record is the truth about the offset: it is replaced atomically, only under
the flock on the upload's file, after the bytes it counts were written.

The SHA-256 of the bytes so far lives in the memory of the process that took the last
PATCH, with the offset it covers. A PATCH that lands in another process (or after a
restart) finds no hasher at its offset and rehashes the stored prefix first.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from app.atomic import write_atomically
from app.layout import DataDir, is_job_id
from app.locks import lock_if_free
from app.store import JobStore

HASH_CHUNK_BYTES = 1024 * 1024
MAX_HASHERS = 4096  # running digests kept per process; an older one is rehashed if needed
STALE_TEMP_S = 60.0


class Partial(BaseModel):
    """The record of one unfinished upload."""

    id: str
    owner: str | None = None
    length: int
    offset: int = 0
    metadata: str = Field(default="", description="The Upload-Metadata header, as sent.")
    filename: str
    content_type: str
    processors: list[str]
    created_at: datetime
    expires_at: datetime

    @property
    def expired(self) -> bool:
        return self.expires_at <= datetime.now(UTC)


def expiry_from_now(expiry_s: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=expiry_s)


class PartialStore:
    """partials/<id>.json. Writers hold the flock on files/<id>."""

    def __init__(self, layout: DataDir, *, fsync: bool = False) -> None:
        self._layout = layout
        self._fsync = fsync

    def load(self, upload_id: str) -> Partial | None:
        if not is_job_id(upload_id):
            return None
        try:
            return Partial.model_validate_json(self._layout.partial(upload_id).read_bytes())
        except (FileNotFoundError, ValidationError):
            return None

    def save(self, partial: Partial) -> None:
        data = partial.model_dump_json().encode()
        write_atomically(self._layout.partial(partial.id), data, mode=0o640, fsync=self._fsync)

    def delete(self, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._layout.partial(upload_id).unlink()


class Hashers:
    """The running SHA-256 of uploads this process took the last PATCH of, by id."""

    def __init__(self) -> None:
        self._by_id: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, upload_id: str, offset: int) -> Any | None:
        """The hasher covering exactly `offset` bytes, removed from the cache (the PATCH
        owns it now); None if this process has none at that offset."""
        with self._lock:
            found = self._by_id.pop(upload_id, None)
        if found is None or found[0] != offset:
            return None
        return found[1]

    def keep(self, upload_id: str, offset: int, hasher: Any) -> None:
        with self._lock:
            self._by_id[upload_id] = (offset, hasher)
            self._by_id.move_to_end(upload_id)
            while len(self._by_id) > MAX_HASHERS:
                self._by_id.popitem(last=False)

    def drop(self, upload_id: str) -> None:
        with self._lock:
            self._by_id.pop(upload_id, None)


def rehash(path: Path, length: int) -> Any:
    """SHA-256 of the first `length` bytes of `path` (blocks: run it in a thread)."""
    hasher = hashlib.sha256()
    left = length
    with path.open("rb") as f:
        while left > 0 and (chunk := f.read(min(HASH_CHUNK_BYTES, left))):
            hasher.update(chunk)
            left -= len(chunk)
    return hasher


def remove_expired(layout: DataDir, store: PartialStore, jobs: JobStore) -> int:
    """For the sweeper: expired unfinished uploads (file and record), records whose upload
    became a job (a crash between the two saves) or lost its file, and stale temp files.
    An upload taking a PATCH holds its file's lock and is left alone."""
    removed = 0
    cutoff = time.time() - STALE_TEMP_S
    for entry in os.scandir(layout.partials):
        name = entry.name
        if name.startswith(".") and name.endswith(".tmp"):
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    Path(entry.path).unlink()
                    removed += 1
            continue
        upload_id = name.removesuffix(".json")
        if is_job_id(upload_id) and name.endswith(".json"):
            removed += _remove_if_dead(layout, store, jobs, upload_id)
    return removed


def _remove_if_dead(layout: DataDir, store: PartialStore, jobs: JobStore, upload_id: str) -> int:
    if jobs.exists(upload_id):  # it became a job: only the record is stale
        store.delete(upload_id)
        return 1
    path = layout.upload(upload_id)
    if not path.exists():
        store.delete(upload_id)
        return 1
    partial = store.load(upload_id)
    if partial is not None and not partial.expired:
        return 0
    with lock_if_free(path) as held:
        if not held or jobs.exists(upload_id):
            return 0
        store.delete(upload_id)
        path.unlink(missing_ok=True)
    return 1
