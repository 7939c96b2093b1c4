"""Dedupe (HOPPER_DEDUPE): an upload whose bytes match a job that is done, for the same
pipeline and owner, is recorded done at once with that job's results.

digests/<sha256>/<variant> holds the id of the job with the results for those bytes; the
variant is a digest of the pipeline as run (`auto` expanded) and the owner. An upload whose
bytes have no folder there costs one stat; only one with a folder has its `auto` expanded
(libmagic, a few ms) to find its variant. The worker writes an entry as a job finishes
done, a purge removes it with its job, and every use checks it against the job's record
(through the store), so a stale entry is only ever ignored. The duplicate's artifacts are
hard links to the original's: deleting or expiring either job leaves the other whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from app.detect import detect_type, refine_text_type
from app.errors import UnknownJob
from app.layout import DataDir, fsync_dir, is_job_id
from app.models import Job, JobStatus, utc_now
from app.processors.registry import AUTO, Registry
from app.store import JobStore

log = logging.getLogger("hopper.dedupe")

VARIANT_HEX = 16  # 64 bits: a pipeline-and-owner name, checked against the record anyway
DANGLING_MIN_AGE_S = 2.0  # an entry's temp file lives for microseconds


def variant(processors: list[str], owner: str | None) -> str:
    text = json.dumps([owner, processors])
    return hashlib.sha256(text.encode()).hexdigest()[:VARIANT_HEX]


def entry_of(layout: DataDir, job: Job) -> Path:
    return layout.digest(job.sha256, variant(job.processors, job.owner))


@dataclass(frozen=True)
class Dedupe:
    layout: DataDir
    store: JobStore
    registry: Registry
    retention_s: float = 0.0
    fsync: bool = False

    def reuse(self, job: Job, path: Path) -> Job:
        """`job` (queued, its whole file at `path`) as it is to be recorded: a done copy of
        the original's results if there is one, else itself. Blocks: run it in a thread."""
        if not self.layout.digest_folder(job.sha256).is_dir():
            return job  # bytes no job was done for: most uploads
        pipeline = self._pipeline(job, path)
        original = self._original(job, pipeline)
        if original is None:
            return job
        try:
            self._link_artifacts(original, job.id)
        except OSError as exc:  # the original deleted meanwhile, say: process anew
            shutil.rmtree(self.layout.artifacts(job.id), ignore_errors=True)
            log.info("job %s: the results of %s are gone (%s)", job.id, original.id, exc)
            return job
        log.info("job %s: a duplicate of %s", job.id, original.id, extra={"job_id": job.id})
        return _duplicate(job, original, self.retention_s)

    def _pipeline(self, job: Job, path: Path) -> list[str]:
        """The processors as the job would run them: `auto` expanded as app.jobs does."""
        if AUTO not in job.processors:
            return job.processors
        detected = refine_text_type(detect_type(path), job.filename, job.content_type)
        return self.registry.expand(job.processors, detected)

    def _original(self, job: Job, pipeline: list[str]) -> Job | None:
        entry = self.layout.digest(job.sha256, variant(pipeline, job.owner))
        try:
            original_id = entry.read_text()
            original = self.store.load(original_id)  # UnknownJob for a non-id too
        except (FileNotFoundError, UnknownJob):
            return None
        same = (original.sha256, original.owner, original.processors) == (
            job.sha256,
            job.owner,
            pipeline,
        )
        ok = same and original.status is JobStatus.DONE and original.duplicate_of is None
        return original if ok and self._current(original) else None

    def _current(self, original: Job) -> bool:
        """Every processor is still the version that made the results."""
        try:
            now = {name: self.registry.get(name).version for name in original.processors}
        except KeyError:  # a plugin that is no longer installed
            return False
        return all(original.versions.get(name) == version for name, version in now.items())

    def _link_artifacts(self, original: Job, job_id: str) -> None:
        if not original.artifacts:
            return
        source, target = self.layout.artifacts(original.id), self.layout.artifacts(job_id)
        target.mkdir()
        for artifact in original.artifacts:
            os.link(source / artifact.name, target / artifact.name)
        if self.fsync:
            fsync_dir(target)
            fsync_dir(self.layout.artifacts_root)


def _duplicate(job: Job, original: Job, retention_s: float) -> Job:
    now = utc_now()
    old, new = f"/jobs/{original.id}/artifacts/", f"/jobs/{job.id}/artifacts/"
    return job.model_copy(
        update={
            "status": JobStatus.DONE,
            "progress": 1.0,
            "processors": list(original.processors),
            "detected_type": original.detected_type,
            "started_at": now,
            "finished_at": now,
            "expires_at": now + timedelta(seconds=retention_s) if retention_s else None,
            "result": _moved(original.result, old, new),
            "artifacts": [
                a.model_copy(update={"url": a.url.replace(old, new, 1)}) for a in original.artifacts
            ],
            # Warnings about the results, not about the original's attempts.
            "warnings": [w for w in original.warnings if w.processor != "hopper"],
            "versions": dict(original.versions),
            "duplicate_of": original.id,
        }
    )


def _moved(value: Any, old: str, new: str) -> Any:
    """`value` with every artifact URL of the original's made the duplicate's."""
    if isinstance(value, str):
        return new + value[len(old) :] if value.startswith(old) else value
    if isinstance(value, dict):
        return {k: _moved(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, old, new) for v in value]
    return value


def remember(layout: DataDir, job: Job) -> None:
    """A job its processors just finished: its entry names it (the newest job done for the
    bytes wins). Written before the job's record says `done`, so a client that sees `done`
    and uploads the same bytes again always finds it."""
    if job.duplicate_of is not None:
        return
    try:
        _write(entry_of(layout, job), job.id)
    except OSError as exc:  # a full disk, say: the job is done all the same, just not reused
        log.warning("job %s: no dedupe entry (%s)", job.id, exc, extra={"job_id": job.id})


def _write(path: Path, job_id: str) -> None:
    """Replace the entry at once: a reader sees the old id or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    for _ in range(3):  # a purge or sweep may remove the folder between mkdir and write
        path.parent.mkdir(exist_ok=True)
        try:
            tmp.write_text(job_id)
            tmp.replace(path)
            return
        except FileNotFoundError:
            continue
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    log.warning("job %s: its dedupe entry could not be written", job_id)


def forget(layout: DataDir, job: Job) -> None:
    """On a job's deletion: its entry goes, unless it names a later job by now, and the
    folder of its bytes with it once empty."""
    if job.status is not JobStatus.DONE or job.duplicate_of is not None:
        return  # never named by an entry
    path = entry_of(layout, job)
    with contextlib.suppress(FileNotFoundError):
        if path.read_text() == job.id:
            path.unlink()
    _remove_if_empty(path.parent)


def remove_dangling(layout: DataDir, store: JobStore) -> int:
    """For the sweeper: entries whose job is gone (a purge cut off midway), temp files a
    crash left, and empty folders."""
    cutoff = time.time() - DANGLING_MIN_AGE_S
    removed = 0
    for folder in os.scandir(layout.digests):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for entry in os.scandir(folder.path):
                if entry.stat().st_mtime < cutoff and _dangling(Path(entry.path), store):
                    Path(entry.path).unlink()
                    removed += 1
            _remove_if_empty(Path(folder.path))  # a writer that loses its folder retries
    return removed


def _dangling(path: Path, store: JobStore) -> bool:
    if path.name.startswith("."):
        return True  # a temp file, old: its writer is gone
    job_id = path.read_text()
    if not is_job_id(job_id):
        return True
    try:
        store.load_raw(job_id)
    except UnknownJob:
        return True
    return False


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (another job's entry), or gone
        folder.rmdir()
