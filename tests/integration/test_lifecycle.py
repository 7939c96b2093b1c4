"""Cancel, delete, retention and idempotency keys, on a real server with slow test plugins."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import Server, running, wait_until


@pytest.fixture(scope="module")
def slow_server(
    tmp_path_factory: pytest.TempPathFactory, backend: str, plugins_path: Path
) -> Iterator[Server]:
    """One job worker, so a second job waits in the queue behind a running one."""
    env = {"PYTHONPATH": str(plugins_path), "HOPPER_WORKERS": "1"}
    srv = Server(data_dir=tmp_path_factory.mktemp("life") / "data", env=env).start()
    yield srv
    srv.stop()


def _upload(
    server: Server, data: bytes, processors: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/uploads",
        params={"processors": processors},
        files={"file": ("n.txt", data, "text/plain")},
        headers=headers,
        timeout=30,
    )


def _job(server: Server, data: bytes = b"60", processors: str = "ticker") -> dict[str, Any]:
    response = _upload(server, data, processors)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def _processing(server: Server, job_id: str) -> None:
    wait_until(lambda: server.status(job_id), lambda j: j["status"] == "processing")


def _gone(server: Server, job_id: str) -> bool:
    return httpx.get(f"{server.url}/status/{job_id}").status_code == 404


def _traces(server: Server, job_id: str) -> list[Path]:
    return [p for p in server.data_dir.rglob("*") if job_id in p.name]


def test_a_running_job_stops_at_its_next_progress_report(slow_server: Server) -> None:
    job = _job(slow_server)
    _processing(slow_server, job["id"])
    response = httpx.post(f"{slow_server.url}/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "processing"
    final = slow_server.wait_finished(job["id"], timeout_s=10)
    assert final["status"] == "cancelled"
    assert final["error"]["code"] == "cancelled"
    assert final["progress"] < 0.5
    assert final["result"] is None and final["artifacts"] == []


def test_a_queued_job_is_cancelled_at_once_and_never_starts(slow_server: Server) -> None:
    first = _job(slow_server)
    queued = _job(slow_server)  # the only worker is busy with the first
    _processing(slow_server, first["id"])
    response = httpx.post(f"{slow_server.url}/jobs/{queued['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    httpx.post(f"{slow_server.url}/jobs/{first['id']}/cancel")
    assert slow_server.wait_finished(first["id"])["status"] == "cancelled"
    job = slow_server.status(queued["id"])
    assert job["attempts"] == 0 and job["started_at"] is None  # it never ran


def test_cancel_answers_409_when_finished_and_404_when_unknown(slow_server: Server) -> None:
    job = _job(slow_server, b"0.1")
    assert slow_server.wait_finished(job["id"])["status"] == "done"
    finished = httpx.post(f"{slow_server.url}/jobs/{job['id']}/cancel")
    assert finished.status_code == 409
    assert "already done" in finished.json()["detail"]
    unknown = httpx.post(f"{slow_server.url}/jobs/{'A' * 22}/cancel")
    assert unknown.status_code == 404
    assert unknown.json()["detail"]


def test_delete_removes_file_artifacts_and_record(slow_server: Server, tmp_path: Path) -> None:
    job = _job(slow_server, b"just text\n" * 100, "inspect,text")
    assert slow_server.wait_finished(job["id"])["status"] == "done"
    assert _traces(slow_server, job["id"])
    response = httpx.delete(f"{slow_server.url}/jobs/{job['id']}")
    assert response.status_code == 204
    assert _gone(slow_server, job["id"])
    assert _traces(slow_server, job["id"]) == []
    assert httpx.delete(f"{slow_server.url}/jobs/{job['id']}").status_code == 404


def test_deleting_a_running_job_cancels_it_first(slow_server: Server) -> None:
    job = _job(slow_server)
    _processing(slow_server, job["id"])
    response = httpx.delete(f"{slow_server.url}/jobs/{job['id']}", timeout=30)
    assert response.status_code == 204
    assert _gone(slow_server, job["id"])
    assert _traces(slow_server, job["id"]) == []
    after = _job(slow_server, b"0.1")  # the worker is free again
    assert slow_server.wait_finished(after["id"])["status"] == "done"
    assert slow_server.leftovers() == []


def test_a_job_deleted_while_it_cannot_stop_goes_after_a_restart(
    tmp_path: Path, plugins_path: Path
) -> None:
    """`sleepy` never reports progress: the delete is pending until the job stops, here
    cut off by a shutdown, and happens at the next start."""
    env = {"PYTHONPATH": str(plugins_path), "HOPPER_SHUTDOWN_GRACE": "1"}
    with running(tmp_path / "data", **env) as server:
        job = _job(server, b"x", "sleepy")
        _processing(server, job["id"])
        response = httpx.delete(f"{server.url}/jobs/{job['id']}", timeout=30)
        assert response.status_code == 202
        assert "deleted when it stops" in response.json()["detail"]
    with running(tmp_path / "data", **env) as server:
        wait_until(lambda: _gone(server, job["id"]), bool)
        assert _traces(server, job["id"]) == []
        assert server.leftovers() == []


def test_finished_jobs_expire_after_the_retention(tmp_path: Path) -> None:
    env = {"HOPPER_RETENTION": "2s", "HOPPER_SWEEP_INTERVAL": "0.5"}
    with running(tmp_path / "data", **env) as server:
        response = _upload(server, b"short lived\n", "inspect")
        job = server.wait_finished(response.json()["id"])
        assert job["status"] == "done"
        assert job["expires_at"] is not None and job["expires_at"] > job["finished_at"]
        wait_until(lambda: _gone(server, job["id"]), bool, timeout_s=15)
        assert _traces(server, job["id"]) == []
        assert server.leftovers() == []


def test_a_repeated_idempotency_key_returns_the_first_job(server: Server) -> None:
    key = {"Idempotency-Key": "order-1234-receipt"}
    first = _upload(server, b"receipt", "inspect", key)
    again = _upload(server, b"receipt", "inspect", key)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    other = _upload(server, b"receipt", "inspect", {"Idempotency-Key": "order-1235-receipt"})
    assert other.json()["id"] != first.json()["id"]


def test_concurrent_uploads_with_one_key_make_one_job(server: Server) -> None:
    key = {"Idempotency-Key": "burst-7"}
    before = set(server.job_ids())
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(lambda _: _upload(server, b"same" * 10_000, "inspect", key), range(8))
        )
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    created = set(server.job_ids()) - before
    assert list(created) == [responses[0].json()["id"]]
    wait_until(server.leftovers, lambda found: found == [])


def test_a_malformed_idempotency_key_is_refused(server: Server) -> None:
    response = _upload(server, b"x", "inspect", {"Idempotency-Key": "k" * 300})
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["detail"] or "idempotency" in response.text
