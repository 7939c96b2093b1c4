"""Removing jobs and what crashes leave behind; cancel and delete requests for running jobs.

A running job is stopped cooperatively. Its worker holds the job's lock, so nobody else
may touch its files meanwhile: a request file, stops/<id>, says "cancel" or "delete", and
the worker reads it at its next progress report and acts on it itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from enum import StrEnum
from pathlib import Path

from app.dedupe import forget
from app.errors import UnknownJob
from app.layout import DataDir, is_job_id
from app.locks import lock_if_free
from app.store import JobStore

ORPHAN_MIN_AGE_S = 2.0  # a new upload's file is created, then locked: never take one that young


class StopKind(StrEnum):
    CANCEL = "cancel"
    DELETE = "delete"


def request_stop(layout: DataDir, job_id: str, kind: StopKind) -> None:
    """Ask the job's worker to stop; a delete request is never turned back into a cancel."""
    if kind is StopKind.CANCEL and read_stop(layout, job_id) is StopKind.DELETE:
        return
    path = layout.stop_request(job_id)
    tmp = path.with_name(f".{job_id}.{os.getpid()}.tmp")
    tmp.write_text(kind.value)
    tmp.replace(path)  # a reader sees the whole word or nothing


def read_stop(layout: DataDir, job_id: str) -> StopKind | None:
    try:
        text = layout.stop_request(job_id).read_text()
    except FileNotFoundError:
        return None
    return StopKind.DELETE if text == StopKind.DELETE else StopKind.CANCEL


def clear_stop(layout: DataDir, job_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        layout.stop_request(job_id).unlink()


def purge(layout: DataDir, store: JobStore, job_id: str) -> None:
    """Delete a job's record, artifacts and file. The record goes first: from then on the
    job is gone for every reader, and a crash midway leaves only files with no record,
    which the sweep removes. The caller holds the job's lock (or the job never ran)."""
    job = None
    with contextlib.suppress(UnknownJob, ValueError):  # none, or unreadable: no dedupe entry
        job = store.load(job_id)
    store.delete(job_id)
    shutil.rmtree(layout.artifacts(job_id), ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        layout.upload(job_id).unlink()
    clear_stop(layout, job_id)
    if job is not None:
        forget(layout, job)


def remove_orphans(layout: DataDir, store: JobStore, min_age_s: float = ORPHAN_MIN_AGE_S) -> int:
    """Files, artifact folders and stop requests of jobs with no record.

    A stored file with no record and no lock never got its 202 (an upload cut off by a
    crash, mid-body or before its record was saved); the rest are a purge cut off midway.
    """
    cutoff = time.time() - min_age_s
    removed = 0
    for folder in (layout.files, layout.artifacts_root, layout.stops):
        for entry in os.scandir(folder):
            if is_job_id(entry.name) and not store.exists(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        removed += _remove_orphan(layout, store, Path(entry.path))
    return removed


def _remove_orphan(layout: DataDir, store: JobStore, path: Path) -> bool:
    if path.parent == layout.artifacts_root:
        shutil.rmtree(path, ignore_errors=True)
        return True
    if path.parent == layout.stops:
        path.unlink(missing_ok=True)
        return True
    with lock_if_free(path) as held:
        # Checked again under the lock: the record may have landed in between. A resumable
        # upload's file has no job record until it is complete: its partial record keeps it.
        if not held or store.exists(path.name) or layout.partial(path.name).exists():
            return False  # an upload under way in another live process
        path.unlink(missing_ok=True)
        return True
