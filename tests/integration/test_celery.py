"""HOPPER_BACKEND=celery with real parts: redis-server, Celery worker processes, uvicorn.

Two API processes and two workers on one Redis run every job exactly once (the `tally`
processor logs each run); a worker killed mid-job has its job run again to one final
record; Redis stopped for a few seconds makes uploads 503 with Retry-After, and once it is
back everything works again by itself with nothing lost; a job whose upload was recorded
but never published is published by the sweep.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.layout import DataDir, new_job_id
from app.models import Job
from app.redisstore import RedisJobStore, connect
from tests.helpers import BACKEND, Server, wait_until
from tests.load import Load, descendants, run_pids, runs_of, status_of
from tests.redis_server import RedisServer

pytestmark = pytest.mark.celery_only

FINISHED = ("done", "failed", "cancelled")


@pytest.fixture
def env(plugins_path: Path, tmp_path: Path) -> dict[str, str]:
    return {
        "PYTHONPATH": str(plugins_path),
        "TALLY_LOG": str(tmp_path / "tally.log"),
        "TALLY_SLEEP": "0.05",
        "HOPPER_WORKERS": "1",  # one job at a time per worker: two workers, two at once
    }


def _wait_finished(urls: list[str], job_ids: list[str], timeout_s: float) -> dict[str, Any]:
    """Each job polled through the API processes in turn: any of them answers for any."""
    deadline = time.monotonic() + timeout_s
    jobs = {}
    for n, job_id in enumerate(job_ids):
        url = urls[n % len(urls)]
        jobs[job_id] = wait_until(
            lambda: status_of(url, job_id),  # noqa: B023
            lambda j: j["status"] in FINISHED,
            timeout_s=max(deadline - time.monotonic(), 1.0),
            every_s=0.05,
        )
    return jobs


def test_two_api_processes_and_two_workers_run_200_jobs_exactly_once(
    tmp_path: Path, env: dict[str, str]
) -> None:
    data = tmp_path / "data"
    first = Server(data, env=env).start()
    second = Server(data, env=env).start()  # the same queue and Redis: one deployment
    try:
        load = Load([first.url, second.url], seed=3)
        for thread in load.run(threads=8, per_thread=25, stop=threading.Event()):
            thread.join(120)
        assert not load.errors
        assert len(load.acked) == 200
        jobs = _wait_finished([second.url, first.url], list(load.acked), timeout_s=180)
        # Counted by the workers in Redis: every API process reports the deployment's jobs.
        counted = wait_until(lambda: _job_metrics(first.url), lambda m: m[0] >= 200)
        counted_too = _job_metrics(second.url)
    finally:
        first.stop()
        second.stop()
    for job_id, job in jobs.items():
        assert job["status"] == "done", job
        assert job["attempts"] == 1
        assert job["result"]["tally"]["sha256"] == load.acked[job_id]
    runs = runs_of(tmp_path / "tally.log")
    assert set(runs) == set(load.acked)
    assert [job_id for job_id, n in runs.items() if n != 1] == []
    pids = {pid for ran in run_pids(tmp_path / "tally.log").values() for pid in ran}
    assert len(pids) == 2  # both workers took jobs
    assert counted == counted_too == (200, 200)


def _job_metrics(url: str) -> tuple[float, float]:
    """hopper_jobs_finished_total{status="done"}, and the jobs `tally` was timed in."""
    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    done = samples.get(("hopper_jobs_finished_total", (("status", "done"),)), 0.0)
    tally = samples.get(("hopper_job_duration_seconds_count", (("processor", "tally"),)), 0.0)
    return done, tally


def _upload(server: Server, seconds: float) -> str:
    """A `ticker` job that reports progress for `seconds` (the file says how long)."""
    response = httpx.post(
        f"{server.url}/uploads",
        params={"processors": "ticker,tally"},
        files={"file": ("t.txt", str(seconds).encode())},
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def _processing(server: Server, job_id: str) -> None:
    wait_until(lambda: server.status(job_id), lambda j: j["status"] == "processing")


def test_a_worker_process_killed_mid_job_has_its_job_run_again(
    tmp_path: Path, env: dict[str, str]
) -> None:
    server = Server(tmp_path / "data", env=env).start()
    try:
        job_id = _upload(server, 3.0)
        _processing(server, job_id)
        assert server.worker is not None
        (child,) = descendants(server.worker.pid)  # the prefork pool's one process
        os.kill(child, signal.SIGKILL)
        job = server.wait_finished(job_id, timeout_s=60)
    finally:
        server.stop()
    assert job["status"] == "done", job
    assert job["attempts"] == 2  # the killed run, and the one that finished
    assert runs_of(tmp_path / "tally.log")[job_id] == 1  # tally is the last step: once


def test_a_whole_worker_killed_mid_job_has_its_job_taken_by_another(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """The message the dead worker held comes back after the visibility timeout (the job
    time limit plus margins: 5 + 10 + 60 s here), to the worker that is left."""
    env = {**env, "HOPPER_JOB_TIMEOUT": "5"}
    server = Server(tmp_path / "data", env=env).start()
    spare = Server(tmp_path / "data", env=env).start()  # a second worker, idle
    try:
        job_id = _upload(server, 2.0)
        _processing(server, job_id)
        server.stop_worker(signal.SIGKILL)  # master and its pool, with no goodbye
        job = server.wait_finished(job_id, timeout_s=150)
    finally:
        server.stop()
        spare.stop()
    assert job["status"] == "done", job
    assert runs_of(tmp_path / "tally.log")[job_id] == 1


def test_redis_stopped_means_503_then_recovery_with_nothing_lost(
    tmp_path: Path, env: dict[str, str], redis_server: RedisServer
) -> None:
    server = Server(tmp_path / "data", env=env).start()
    try:
        before = _upload(server, 0.1)
        server.wait_finished(before)
        redis_server.stop()
        try:
            down = httpx.post(f"{server.url}/uploads", files={"file": ("a.txt", b"hello")})
            polled = httpx.get(f"{server.url}/status/{before}")
            ready = httpx.get(f"{server.url}/readyz")
        finally:
            redis_server.start()  # the same port, and its append-only file
        after = wait_until(
            lambda: httpx.post(f"{server.url}/uploads", files={"file": ("b.txt", b"again")}),
            lambda r: r.status_code == 202,
        )
        job = server.wait_finished(after.json()["id"], timeout_s=60)
        kept = server.status(before)
        leftovers = server.leftovers()
    finally:
        server.stop()
    assert down.status_code == 503 and down.headers["Retry-After"]
    assert "Redis" in down.json()["detail"]
    assert polled.status_code == 503 and "Redis" in polled.json()["detail"]
    assert ready.status_code == 503
    assert job["status"] == "done"
    assert kept["status"] == "done"  # the record from before the outage is there
    assert leftovers == []  # the refused upload left no file behind


def test_a_recorded_job_nobody_published_is_published_by_the_sweep(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """What an API process that died between the record and the publish leaves: a file
    and a queued record in Redis, and no message."""
    server = Server(tmp_path / "data", env={**env, "HOPPER_SWEEP_INTERVAL": "0.5"})
    layout = DataDir(server.data_dir)
    layout.create()
    job_id = new_job_id()
    layout.upload(job_id).write_bytes(b"recorded, never published")
    job = Job(
        id=job_id,
        filename="lost.txt",
        size=25,
        sha256="0" * 64,
        content_type="text/plain",
        processors=["tally"],
    )
    job.created_at = job.created_at.replace(year=job.created_at.year - 1)  # long ago
    settings = Settings(redis_url=BACKEND.redis_url, queue=server.queue)
    RedisJobStore(connect(settings.redis_url), settings.queue).save(job)
    server.start()
    try:
        finished = server.wait_finished(job_id, timeout_s=60)
    finally:
        server.stop()
    assert finished["status"] == "done"
    assert runs_of(tmp_path / "tally.log")[job_id] == 1
