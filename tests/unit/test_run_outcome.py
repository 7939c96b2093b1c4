"""run_job says whether this run ended the job: what the Celery worker counts in
/metrics, so that a second delivery of an ended job does not count it twice."""

from __future__ import annotations

from pathlib import Path

from app.cleanup import StopKind, request_stop
from app.jobs import JobEnv, run_job
from app.layout import DataDir
from app.models import JobStatus
from app.processors.registry import load_registry
from app.store import JsonJobStore
from tests.helpers import make_job


def _env(tmp_path: Path) -> JobEnv:
    layout = DataDir(tmp_path)
    layout.create()
    return JobEnv(JsonJobStore(layout), layout, load_registry())


def _queued(env: JobEnv) -> str:
    job = make_job()
    env.layout.upload(job.id).write_bytes(b"hello, hopper\n")
    env.store.save(job)
    return job.id


def test_the_run_that_finishes_a_job_ended_it_and_a_second_one_did_not(tmp_path: Path) -> None:
    env = _env(tmp_path)
    job_id = _queued(env)
    first = run_job(job_id, env)
    assert env.store.load(job_id).status is JobStatus.DONE
    assert first.ended and first.timings  # counted, with its processors' times
    second = run_job(job_id, env)  # the same message delivered again
    assert not second.ended
    assert second.timings == {}
    assert env.store.load(job_id).attempts == 1  # and it did not run again


def test_a_job_cancelled_while_queued_is_ended_by_the_run_that_finds_it(tmp_path: Path) -> None:
    env = _env(tmp_path)
    job_id = _queued(env)
    request_stop(env.layout, job_id, StopKind.CANCEL)
    outcome = run_job(job_id, env)
    assert outcome.ended
    assert env.store.load(job_id).status is JobStatus.CANCELLED
    assert not run_job(job_id, env).ended


def test_a_job_whose_file_is_missing_is_ended_once(tmp_path: Path) -> None:
    env = _env(tmp_path)
    job_id = _queued(env)
    env.layout.upload(job_id).unlink()
    assert run_job(job_id, env).ended
    assert env.store.load(job_id).status is JobStatus.FAILED
    assert not run_job(job_id, env).ended
