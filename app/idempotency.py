"""Idempotency-Key on POST /uploads: a repeated key returns the first job, not a new one.

keys/<sha256 of the key> holds the job's id. It is linked into place complete (temp file,
then os.link, which fails if the name exists) once the job's record is saved, so of two
concurrent uploads with one key exactly one wins; the other's file and record are removed
and its client gets the winner's job. A key lives as long as its job.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from pathlib import Path

from app.errors import BadUpload, UnknownJob
from app.layout import DataDir, is_job_id
from app.models import Job
from app.store import JobStore

_KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, as in HTTP header values
DANGLING_MIN_AGE_S = 2.0


class KeyTaken(Exception):
    """Another upload with the same key got there first."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


def key_digest(key: str, owner: str = "") -> str:
    if not _KEY_RE.fullmatch(key):
        raise BadUpload("Idempotency-Key must be 1 to 255 visible ASCII characters.")
    return hashlib.sha256(f"{owner}\0{key}".encode()).hexdigest()


def find(layout: DataDir, store: JobStore, digest: str) -> Job | None:
    """The job a key names, if the key and the job exist."""
    job_id = _holder(layout, digest)
    if job_id is None:
        return None
    try:
        return store.load(job_id)
    except UnknownJob:
        return None


def claim(layout: DataDir, store: JobStore, digest: str, job_id: str) -> None:
    """Bind the key to `job_id`; raise KeyTaken if a live job holds it already."""
    path = layout.key(digest)
    tmp = path.with_name(f".{job_id}.tmp")
    tmp.write_text(job_id)
    try:
        for _ in range(2):
            try:
                os.link(tmp, path)
                return
            except FileExistsError:
                holder = _holder(layout, digest)
                if holder is not None and store.exists(holder):
                    raise KeyTaken(holder) from None
                path.unlink(missing_ok=True)  # the key of a deleted job: take it over
        # Only if other uploads keep replacing a deleted job's key at this very moment.
    finally:
        tmp.unlink(missing_ok=True)


def remove_dangling_keys(layout: DataDir, store: JobStore) -> int:
    """Keys whose job was deleted, and temp files a crash left."""
    cutoff = time.time() - DANGLING_MIN_AGE_S
    removed = 0
    for entry in os.scandir(layout.keys):
        with contextlib.suppress(FileNotFoundError):
            if entry.stat().st_mtime >= cutoff:
                continue
            holder = None if entry.name.startswith(".") else _holder(layout, entry.name)
            if holder is None or not store.exists(holder):
                Path(entry.path).unlink()
                removed += 1
    return removed


def _holder(layout: DataDir, digest: str) -> str | None:
    try:
        job_id = layout.key(digest).read_text()
    except (FileNotFoundError, ValueError):
        return None
    return job_id if is_job_id(job_id) else None
