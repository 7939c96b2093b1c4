"""The JobStore contract, run against every implementation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.errors import UnknownJob
from app.layout import DataDir, new_job_id
from app.models import Job, JobStatus
from app.store import JsonJobStore
from tests.helpers import make_job


@pytest.fixture(params=["json"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> JsonJobStore:
    layout = DataDir(tmp_path)
    layout.create()
    return JsonJobStore(layout, fsync=True)


def _job() -> Job:
    return make_job()


def test_saved_job_loads_back_equal(store: JsonJobStore) -> None:
    job = _job()
    store.save(job)
    assert store.load(job.id) == job
    assert list(store.job_ids()) == [job.id]


def test_save_replaces_the_record_and_leaves_no_temp_file(
    store: JsonJobStore, tmp_path: Path
) -> None:
    job = _job()
    store.save(job)
    job.status = JobStatus.DONE
    store.save(job)
    assert store.load(job.id).status is JobStatus.DONE
    assert [p.name for p in (tmp_path / "jobs").iterdir()] == [f"{job.id}.json"]


@pytest.mark.parametrize("job_id", ["nope", "../../etc/passwd", "a" * 22 + "/", new_job_id()])
def test_unknown_or_malformed_ids_are_unknown_jobs(store: JsonJobStore, job_id: str) -> None:
    with pytest.raises(UnknownJob):
        store.load(job_id)


def test_stale_temp_files_are_swept_but_fresh_ones_kept(
    store: JsonJobStore, tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs"
    stale = jobs / ".x.tmp"
    fresh = jobs / ".y.tmp"
    dead_writer = jobs / f".{new_job_id()}.999999999.1.tmp"
    live_writer = jobs / f".{new_job_id()}.{os.getpid()}.1.tmp"
    for path in (stale, fresh, dead_writer, live_writer):
        path.write_bytes(b"{")
    os.utime(stale, (0, 0))
    assert store.remove_temp_files() == 2
    assert sorted(p.name for p in jobs.iterdir()) == sorted([fresh.name, live_writer.name])
