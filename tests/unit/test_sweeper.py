"""The sweeper: one process at a time, and what it removes (only what is safe to)."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from app.cleanup import StopKind, request_stop
from app.idempotency import claim, key_digest
from app.jobs import JobEnv
from app.layout import DataDir
from app.locks import job_lock
from app.models import JobStatus, utc_now
from app.processors.registry import Registry
from app.store import JsonJobStore
from app.sweeper import Sweeper, sweep
from tests.helpers import make_job


def _env(tmp_path: Path, retention_s: float = 0.0) -> JobEnv:
    layout = DataDir(tmp_path)
    layout.create()
    return JobEnv(JsonJobStore(layout), layout, Registry([]), retention_s=retention_s)


def _finished_job(env: JobEnv, ended_ago_s: float) -> str:
    job = make_job(JobStatus.DONE, attempts=1)
    job.finished_at = utc_now() - timedelta(seconds=ended_ago_s)
    env.layout.upload(job.id).write_bytes(b"x")
    env.store.save(job)
    long_ago = time.time() - ended_ago_s
    os.utime(env.layout.record(job.id), (long_ago, long_ago))
    return job.id


def test_only_one_sweeper_holds_the_data_dir_at_a_time(tmp_path: Path) -> None:
    env = _env(tmp_path)
    first, second = (Sweeper(env, JsonJobStore(env.layout), 60) for _ in range(2))
    assert first._holds_lock()
    assert not second._holds_lock()
    first.stop()  # it was never started: stop only lets go of the lock
    assert second._holds_lock()
    second.stop()


def test_expired_jobs_go_unless_running(tmp_path: Path) -> None:
    env = _env(tmp_path, retention_s=3600)
    old, recent = _finished_job(env, 7200), _finished_job(env, 60)
    held = _finished_job(env, 7200)
    with job_lock(env.layout.upload(held)) as locked:
        assert locked
        report = sweep(env, JsonJobStore(env.layout))
    assert report.expired == 1
    assert not env.layout.record(old).exists() and not env.layout.upload(old).exists()
    assert env.layout.record(recent).exists()
    assert env.layout.record(held).exists()


def test_settled_stop_requests_and_dangling_keys_are_swept(tmp_path: Path) -> None:
    env = _env(tmp_path)
    finished, to_delete = _finished_job(env, 10), _finished_job(env, 10)
    request_stop(env.layout, finished, StopKind.CANCEL)
    request_stop(env.layout, to_delete, StopKind.DELETE)
    digest = key_digest("gone")
    claim(env.layout, env.store, digest, make_job().id)  # a key whose job no longer exists
    an_hour_ago = time.time() - 3600
    os.utime(env.layout.key(digest), (an_hour_ago, an_hour_ago))
    sweep(env, JsonJobStore(env.layout))
    assert env.layout.record(finished).exists()
    assert not env.layout.stop_request(finished).exists()
    assert not env.layout.record(to_delete).exists()
    assert not env.layout.upload(to_delete).exists()
    assert not env.layout.key(digest).exists()


def test_a_sweep_offers_the_unfinished_jobs_to_its_process(tmp_path: Path) -> None:
    """The dispatcher queues those no live process owns: a dead process's jobs run."""
    offered: list[str] = []

    def adopt(job_id: str) -> bool:
        offered.append(job_id)
        return True

    env = replace(_env(tmp_path), adopt=adopt)
    unfinished = []
    for status in (JobStatus.QUEUED, JobStatus.PROCESSING):
        job = make_job(status)
        env.layout.upload(job.id).write_bytes(b"x")
        env.store.save(job)
        unfinished.append(job.id)
    _finished_job(env, 10)
    report = sweep(env, JsonJobStore(env.layout))
    assert sorted(offered) == sorted(unfinished)
    assert report.adopted == 2
    assert sweep(_env(tmp_path), JsonJobStore(env.layout)).adopted == 0  # no dispatcher
