"""Where everything lives under HOPPER_DATA_DIR, and the job ids that name it.

No path is ever built from client input: files are named by job id, and an id is
validated before it touches a path.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import threading
import time
from pathlib import Path

JOB_ID_BYTES = 16  # 128 bits of randomness
FREE_SPACE_TTL_S = 1.0
_JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{22}")
_KEY_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_API_KEY_ID_RE = re.compile(r"[A-Za-z0-9_-]{10}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_VARIANT_RE = re.compile(r"[0-9a-f]{16}")


class _RandomPool:
    """CSPRNG bytes fetched 4 KiB at a time.

    os.urandom per id costs a syscall that releases and re-takes the GIL; under load the
    event loop then queues behind busy worker threads for every upload.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._buf = b""
        self._lock = threading.Lock()

    def take(self, n: int) -> bytes:
        with self._lock:
            if len(self._buf) < n:
                self._buf = secrets.token_bytes(self._size)
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


_pool = _RandomPool()


def new_job_id() -> str:
    """128 random bits, URL-safe; never starting with '-', which a command line (`hopper
    watch ID`) would take for an option."""
    while True:
        job_id = base64.urlsafe_b64encode(_pool.take(JOB_ID_BYTES)).rstrip(b"=").decode()
        if not job_id.startswith("-"):
            return job_id


def new_request_id() -> str:
    """64 random bits as 16 hex digits: names one request in the logs, not a secret."""
    return _pool.take(8).hex()


def is_job_id(value: str) -> bool:
    return _JOB_ID_RE.fullmatch(value) is not None


class DataDir:
    """The folder layout: records in jobs/, uploads in files/ (written there as they
    arrive, locked until their record exists), what processors write in artifacts/<id>/,
    cancel or delete requests for running jobs in stops/<id>, idempotency keys in keys/;
    with HOPPER_AUTH=keys, API keys (hashed) in apikeys.json and their usage in usage/;
    unfinished resumable (tus) uploads' records in partials/ (their bytes in files/); with
    HOPPER_DEDUPE, which finished job has the results for a file's bytes in digests/; the
    locks that let one server process at a time sweep and watch the watch folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.jobs = root / "jobs"
        self.files = root / "files"
        self.artifacts_root = root / "artifacts"
        self.stops = root / "stops"
        self.keys = root / "keys"
        self.apikeys = root / "apikeys.json"
        self.usage_root = root / "usage"
        self.partials = root / "partials"
        self.sweeper_lock = root / "sweeper.lock"
        self.watch_lock = root / "watch.lock"
        self.digests = root / "digests"
        self._free_bytes = 0
        self._free_checked_at = -FREE_SPACE_TTL_S

    def free_bytes(self) -> int:
        """Free space for uploads, read at most once a second (for every request's
        admission check; statvfs is not free at thousands a second)."""
        now = time.monotonic()
        if now - self._free_checked_at > FREE_SPACE_TTL_S:
            self._free_bytes = self.free_bytes_now()
            self._free_checked_at = now
        return self._free_bytes

    def free_bytes_now(self) -> int:
        stats = os.statvfs(self.files)
        return stats.f_bavail * stats.f_frsize

    def create(self) -> None:
        folders = (self.jobs, self.files, self.artifacts_root, self.stops, self.keys)
        for folder in (*folders, self.partials, self.digests):
            folder.mkdir(parents=True, exist_ok=True)

    def record(self, job_id: str) -> Path:
        return self.jobs / f"{_checked(job_id)}.json"

    def upload(self, job_id: str) -> Path:
        return self.files / _checked(job_id)

    def artifacts(self, job_id: str) -> Path:
        return self.artifacts_root / _checked(job_id)

    def partial(self, job_id: str) -> Path:
        """The record of an unfinished resumable upload, named by its (future) job id."""
        return self.partials / f"{_checked(job_id)}.json"

    def stop_request(self, job_id: str) -> Path:
        return self.stops / _checked(job_id)

    def key(self, digest: str) -> Path:
        if not _KEY_DIGEST_RE.fullmatch(digest):
            raise ValueError(f"not a key digest: {digest!r}")
        return self.keys / digest

    def digest_folder(self, sha256: str) -> Path:
        """The dedupe entries of one file content: a folder, so one stat tells whether
        any job is known for the bytes."""
        if not _SHA256_RE.fullmatch(sha256):
            raise ValueError(f"not a SHA-256: {sha256!r}")
        return self.digests / sha256

    def digest(self, sha256: str, variant: str) -> Path:
        """The dedupe entry for a file's SHA-256 and a pipeline-and-owner variant."""
        if not _VARIANT_RE.fullmatch(variant):
            raise ValueError(f"not a dedupe variant: {variant!r}")
        return self.digest_folder(sha256) / variant

    def usage(self, key_id: str) -> Path:
        if not _API_KEY_ID_RE.fullmatch(key_id):
            raise ValueError(f"not an API key id: {key_id!r}")
        return self.usage_root / f"{key_id}.json"


def _checked(job_id: str) -> str:
    if not is_job_id(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return job_id


def fsync_dir(folder: Path) -> None:
    """Make a rename or create in `folder` durable (power loss, not just a crash)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
