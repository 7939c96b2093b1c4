"""Start-up repair: leftovers go, unfinished jobs come back, crash loops stop."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from app.jobs import JobEnv
from app.layout import DataDir, new_job_id
from app.locks import Leases
from app.models import ErrorCode, JobStatus
from app.processors.registry import Registry
from app.recovery import recover
from app.store import JsonJobStore
from tests.helpers import make_job


def _setup(tmp_path: Path) -> tuple[DataDir, JsonJobStore]:
    layout = DataDir(tmp_path)
    layout.create()
    return layout, JsonJobStore(layout)


def _env(layout: DataDir, store: JsonJobStore) -> JobEnv:
    return JobEnv(store, layout, Registry([]), max_retries=2)


def _job(store: JsonJobStore, layout: DataDir, status: JobStatus, attempts: int) -> str:
    job = make_job(status=status, attempts=attempts)
    layout.upload(job.id).write_bytes(b"x")
    store.save(job)
    return job.id


def test_unfinished_jobs_are_queued_again_and_orphans_removed(tmp_path: Path) -> None:
    layout, store = _setup(tmp_path)
    queued = _job(store, layout, JobStatus.QUEUED, 0)
    running = _job(store, layout, JobStatus.PROCESSING, 1)
    done = _job(store, layout, JobStatus.DONE, 1)
    orphan = layout.upload(new_job_id())
    orphan.write_bytes(b"cut off before its record")
    young = layout.upload(new_job_id())
    young.write_bytes(b"maybe created a moment ago, not locked yet")
    an_hour_ago = time.time() - 3600
    os.utime(orphan, (an_hour_ago, an_hour_ago))
    assert sorted(recover(_env(layout, store), store)) == sorted([queued, running])
    assert young.exists()  # left for a later sweep
    assert not orphan.exists()
    assert store.load(done).status is JobStatus.DONE


def test_a_job_cut_off_too_often_ends_interrupted_unless_a_live_process_holds_it(
    tmp_path: Path,
) -> None:
    layout, store = _setup(tmp_path)
    looping = _job(store, layout, JobStatus.PROCESSING, 3)
    held = _job(store, layout, JobStatus.PROCESSING, 3)
    fd = os.open(layout.upload(held), os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process is running it right now
    try:
        assert recover(_env(layout, store), store) == []
    finally:
        os.close(fd)
    job = store.load(looping)
    assert job.status is JobStatus.FAILED
    assert job.error is not None and job.error.code is ErrorCode.INTERRUPTED
    assert store.load(held).status is JobStatus.PROCESSING


def test_a_job_a_live_process_owns_is_never_ended_interrupted(tmp_path: Path) -> None:
    """Owned (queued in another live process, its worker not started yet): left alone."""
    layout, store = _setup(tmp_path)
    owned = _job(store, layout, JobStatus.PROCESSING, 3)
    owner = Leases()
    assert owner.take(owned, layout.upload(owned))
    try:
        recover(_env(layout, store), store)
    finally:
        owner.release_all()
    assert store.load(owned).status is JobStatus.PROCESSING
