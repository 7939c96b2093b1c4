"""Job records: the JobStore interface and its local JSON implementation.

Each record is written to a temp file in the same folder and moved over the old one
with os.replace, so a reader sees the old record or the new one, never a torn one,
whatever moment the process is killed at.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from app.errors import UnknownJob
from app.layout import DataDir, fsync_dir, is_job_id
from app.models import Job, WebhookState

STALE_TEMP_S = 60.0  # a save takes milliseconds; a temp file this old is a crash's leftover


def is_open(job: Job) -> bool:
    """Not over yet: unfinished, or finished with its webhook round still pending."""
    pending = job.webhook is not None and job.webhook.state is WebhookState.PENDING
    return not job.status.finished or pending


class JobStore(Protocol):
    remote: bool  # reads cross a network: the event loop hands them to a thread

    def save(self, job: Job) -> None: ...

    def load(self, job_id: str) -> Job: ...

    def load_raw(self, job_id: str) -> bytes:
        """The stored JSON document as is: the cheap path for /status."""
        ...

    def exists(self, job_id: str) -> bool: ...

    def job_ids(self) -> Iterator[str]: ...

    def ended_before_candidates(self, cutoff: float) -> Iterator[str]:
        """Ids of jobs that may have ended before `cutoff` (epoch seconds): a superset,
        cheap to list, for the retention sweep to load and check."""
        ...

    def open_candidates(self) -> Iterator[str]:
        """Ids of jobs that may be open (`is_open`): a superset, for the sweeps that
        look for lost jobs and webhook rounds, which must not read every record."""
        ...

    def drop_if_closed(self, job_id: str) -> None:
        """A candidate found not open (or gone): the store may take it off its index."""
        ...

    def delete(self, job_id: str) -> None: ...

    def remove_temp_files(self) -> int:
        """What a crash mid-save left behind; the count removed."""
        ...

    def recent_ids(self, offset: int, limit: int) -> list[str]:
        """Job ids, newest upload first."""
        ...

    def ping(self) -> str | None:
        """None if the records can be read now, else why not (for /readyz)."""
        ...


class JsonJobStore:
    """One JSON file per job in DATA_DIR/jobs/."""

    remote = False  # a small file from the page cache: cheaper read inline

    def __init__(self, layout: DataDir, *, fsync: bool = False) -> None:
        self._layout = layout
        self._fsync = fsync

    def save(self, job: Job) -> None:
        target = self._layout.record(job.id)
        data = job.model_dump_json().encode()
        # Unique per process and thread, so concurrent saves never share a temp file.
        tmp = target.with_name(f".{job.id}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with tmp.open("wb") as f:
                f.write(data)
                if self._fsync:
                    f.flush()
                    os.fsync(f.fileno())
            tmp.replace(target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        if self._fsync:
            fsync_dir(target.parent)

    def load_raw(self, job_id: str) -> bytes:
        if not is_job_id(job_id):
            raise UnknownJob(job_id)
        try:
            return self._layout.record(job_id).read_bytes()
        except FileNotFoundError:
            raise UnknownJob(job_id) from None

    def load(self, job_id: str) -> Job:
        return Job.model_validate_json(self.load_raw(job_id))

    def exists(self, job_id: str) -> bool:
        return is_job_id(job_id) and self._layout.record(job_id).exists()

    def delete(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._layout.record(job_id).unlink()

    def recent_ids(self, offset: int, limit: int) -> list[str]:
        # A stored file is never modified after its upload: its mtime is the upload's time.
        stamped = []
        for entry in os.scandir(self._layout.files):
            if is_job_id(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    stamped.append((entry.stat().st_mtime_ns, entry.name))
        stamped.sort(reverse=True)
        return [job_id for _, job_id in stamped[offset : offset + limit]]

    def job_ids(self) -> Iterator[str]:
        for entry in os.scandir(self._layout.jobs):
            name = entry.name
            if name.endswith(".json") and is_job_id(name[:-5]):
                yield name[:-5]

    def open_candidates(self) -> Iterator[str]:
        # Every record: a folder listing, and the sweeps tell open ones from the raw bytes.
        return self.job_ids()

    def drop_if_closed(self, job_id: str) -> None:
        pass  # no index to keep

    def ping(self) -> str | None:
        jobs = self._layout.jobs
        if not os.access(jobs, os.R_OK | os.X_OK):
            return f"the job records in {jobs} cannot be read"
        try:
            with os.scandir(jobs) as entries:
                next(entries, None)
        except OSError as exc:
            return f"the job records cannot be listed ({exc.strerror})"
        return None

    def ended_before_candidates(self, cutoff: float) -> Iterator[str]:
        # A finished record is not saved again: one written since the cutoff has not ended
        # before it.
        for entry in os.scandir(self._layout.jobs):
            job_id = entry.name.removesuffix(".json")
            if is_job_id(job_id) and _mtime(entry) <= cutoff:
                yield job_id

    def remove_temp_files(self) -> int:
        """Temp files left by a crash mid-save: never a record.

        A temp file names the process that wrote it; one whose process is gone (or that is
        older than a minute) is a leftover. A save under way elsewhere is never cut short.
        """
        removed = 0
        cutoff = time.time() - STALE_TEMP_S
        for entry in os.scandir(self._layout.jobs):
            name = entry.name
            if not (name.startswith(".") and name.endswith(".tmp")):
                continue
            # Another process may finish its save (or sweep it) between the listing and
            # here: a temp file that is gone by now is nothing to remove.
            with contextlib.suppress(FileNotFoundError):
                if _writer_gone(name) or entry.stat().st_mtime < cutoff:
                    Path(entry.path).unlink()
                    removed += 1
        return removed


def _mtime(entry: os.DirEntry[str]) -> float:
    try:
        return entry.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _writer_gone(temp_name: str) -> bool:
    """For `.<id>.<pid>.<thread>.tmp`: is process <pid> gone?"""
    parts = temp_name.split(".")
    if len(parts) != 5 or not parts[2].isdigit():
        return False
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False
