"""SIGTERM: stop accepting, let uploads and running jobs finish within HOPPER_SHUTDOWN_GRACE,
put a job cut off back in the queue (its attempt not counted), and run it at the next start."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import BOUNDARY, Server, file_part, multipart, wait_until

# A server's own jobs cut off by SIGTERM and put back: the local backend's pool. With
# celery the workers run the jobs and stop (warm) by themselves.
pytestmark = pytest.mark.local_only

# uvicorn re-raises the signal it handled once it has shut down cleanly.
CLEAN_EXIT = (0, -signal.SIGTERM)


def _ticker(server: Server, seconds: float) -> str:
    response = httpx.post(
        f"{server.url}/uploads",
        params={"processors": "ticker"},
        files={"file": ("t.txt", str(seconds).encode(), "text/plain")},
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def _record(server: Server, job_id: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((server.data_dir / "jobs" / f"{job_id}.json").read_text())
    return record


def _refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_sigterm_lets_uploads_and_jobs_finish_and_keeps_the_queue(
    tmp_path: Path, plugins_path: Path
) -> None:
    env = {"PYTHONPATH": str(plugins_path), "HOPPER_WORKERS": "1", "HOPPER_SHUTDOWN_GRACE": "15"}
    server = Server(tmp_path / "data", env=env).start()
    running = _ticker(server, 2)
    waiting = _ticker(server, 60)  # behind the running one: must not start during shutdown
    wait_until(lambda: server.status(running), lambda j: j["status"] == "processing")
    body = multipart([file_part(data=b"late bytes " * 10_000)])
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=20) as upload,
        httpx.stream("GET", f"{server.url}/status/{waiting}/events", timeout=20) as events,
    ):
        chunks = events.iter_bytes()
        assert b"queued" in next(chunks)  # the stream is live (its first event) before the signal
        head = f"POST /uploads HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        head += f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
        upload.sendall(head.encode() + body[: len(body) // 2])
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: _refuses_connections(server.port), bool, timeout_s=5)
        upload.sendall(body[len(body) // 2 :])
        answer = b""
        while piece := upload.recv(65536):  # shutting down: the server closes after it
            answer += piece
        stream_ended = time.monotonic()
        b"".join(chunks)  # returns when the server ends the stream, not in an hour
    assert answer.startswith(b"HTTP/1.1 202"), answer[:200]
    assert server.proc.wait(30) in CLEAN_EXIT
    assert time.monotonic() - stream_ended < 10
    assert _record(server, running)["status"] == "done"
    late = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert _record(server, late["id"])["sha256"] == late["sha256"]
    assert _record(server, waiting)["status"] == "queued"
    assert _record(server, waiting)["attempts"] == 0


def test_a_job_cut_off_by_the_grace_period_runs_again_at_the_next_start(
    tmp_path: Path, plugins_path: Path
) -> None:
    env = {"PYTHONPATH": str(plugins_path), "HOPPER_SHUTDOWN_GRACE": "1"}
    server = Server(tmp_path / "data", env=env).start()
    job_id = _ticker(server, 4)
    wait_until(lambda: server.status(job_id), lambda j: j["status"] == "processing")
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) in CLEAN_EXIT
    record = _record(server, job_id)
    assert record["status"] == "queued"
    assert record["attempts"] == 0  # a shutdown is not the job's fault
    server.start()
    try:
        done = server.wait_finished(job_id, timeout_s=30)
        assert done["status"] == "done"
        assert done["attempts"] == 1
    finally:
        server.stop()
