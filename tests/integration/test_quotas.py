"""Per-key quotas on a real server: bytes a UTC day (refused before the body from its
Content-Length, cut off mid-stream when chunked) and unfinished jobs at once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import Server, curl_upload, raw_request, wait_until
from tests.keys import bearer, make_key

MB = 1_000_000


@pytest.fixture(scope="module")
def quota_server(
    tmp_path_factory: pytest.TempPathFactory, backend: str, plugins_path: Path
) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("quotas") / "data"
    env = {"HOPPER_AUTH": "keys", "PYTHONPATH": str(plugins_path), "HOPPER_WORKERS": "2"}
    srv = Server(data_dir=data, env=env).start()
    yield srv
    srv.stop()


def _file(tmp_path: Path, size: int) -> Path:
    path = tmp_path / f"f{size}.bin"
    path.write_bytes(b"\x01" * size)
    return path


def _auth(key: str) -> tuple[str, str]:
    return ("-H", f"Authorization: Bearer {key}")


def test_bytes_a_day_are_refused_before_the_body_and_mid_stream(
    quota_server: Server, tmp_path: Path
) -> None:
    srv = quota_server
    key = make_key(srv.data_dir, "daily", "upload,read", "--bytes-per-day", "1M")
    url = f"{srv.url}/uploads"
    assert curl_upload(url, _file(tmp_path, 800_000), *_auth(key))[0] == 202
    files_before = srv.stored_files()

    # Content-Length says it would not fit: 429 although not a byte of the body is sent.
    auth = f"Authorization: Bearer {key}\r\n".encode()
    status, body = raw_request(srv.port, None, content_length=400_000, extra=auth, timeout_s=5)
    assert status == 429, body
    assert b"the quota resets at 00:00 UTC" in body
    code, headers, answer = curl_upload(url, _file(tmp_path, 400_000), *_auth(key))
    assert code == 429
    assert 0 < int(headers["retry-after"]) <= 86_401  # until midnight UTC
    assert "past its 1 MB a day (0.8 MB used so far)" in answer["detail"]

    # Chunked (no Content-Length): cut off as the bytes pass the quota; nothing is kept.
    chunked = ("-H", "Transfer-Encoding: chunked")
    code, _, answer = curl_upload(url, _file(tmp_path, 400_000), *_auth(key), *chunked)
    assert code == 429, answer
    assert srv.stored_files() == files_before

    # What is left still fits (the cut-off upload counted nothing); then even a small
    # file is refused.
    assert curl_upload(url, _file(tmp_path, 230_000), *_auth(key), *chunked)[0] == 202
    code, _, answer = curl_upload(url, _file(tmp_path, 10), *_auth(key))
    assert code == 429
    assert answer["detail"].startswith("Key 'daily' has used 1.0 MB of its 1 MB a day;")


def test_concurrent_jobs_over_the_limit_get_429_until_one_finishes(quota_server: Server) -> None:
    key = make_key(quota_server.data_dir, "busy", "upload,read", "--max-jobs", "2")
    url = f"{quota_server.url}/uploads"

    def upload() -> httpx.Response:
        return httpx.post(
            url,
            params={"processors": "ticker"},
            files={"file": ("t.txt", b"60", "text/plain")},  # a minute of ticking
            headers=bearer(key),
            timeout=30,
        )

    running = [upload(), upload()]
    assert [r.status_code for r in running] == [202, 202]
    refused = upload()
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["detail"] == (
        "Key 'busy' already has 2 unfinished jobs, its limit; try again when one finishes."
    )
    first, second = (r.json()["id"] for r in running)
    cancelled = httpx.post(f"{quota_server.url}/jobs/{first}/cancel", headers=bearer(key))
    assert cancelled.status_code in (200, 202)
    # A running job stops at its next progress report (every 50 ms for ticker).
    third = wait_until(upload, lambda r: r.status_code == 202, timeout_s=10, every_s=0.2)
    for job_id in (second, third.json()["id"]):
        httpx.post(f"{quota_server.url}/jobs/{job_id}/cancel", headers=bearer(key))


def test_a_retry_with_the_same_idempotency_key_gets_its_job_not_429(
    quota_server: Server, tmp_path: Path
) -> None:
    srv = quota_server
    url = f"{srv.url}/uploads"
    key = make_key(srv.data_dir, "retry-bytes", "upload,read", "--bytes-per-day", "1M")
    big, retry = _file(tmp_path, 900_000), ("-H", "Idempotency-Key: abc")
    code, _, first = curl_upload(url, big, *_auth(key), *retry)
    assert code == 202, first
    code, headers, again = curl_upload(url, big, *_auth(key), *retry)
    assert code == 202, again  # a replay costs no quota: the same job, no new one
    assert again["id"] == first["id"] and headers["idempotent-replayed"] == "true"
    usage = srv.data_dir / "usage" / f"{key[4:14]}.json"
    assert json.loads(usage.read_bytes())["bytes"] == 900_000

    # A job still running with the key's one job at once: its retry gets it too.
    busy = make_key(srv.data_dir, "retry-jobs", "upload,read", "--max-jobs", "1")

    def ticking(idempotency_key: str) -> httpx.Response:
        return httpx.post(
            url,
            params={"processors": "ticker"},
            files={"file": ("t.txt", b"60", "text/plain")},
            headers={**bearer(busy), "Idempotency-Key": idempotency_key},
            timeout=30,
        )

    running = ticking("tick")
    assert running.status_code == 202, running.text
    replayed = ticking("tick")
    assert replayed.status_code == 202, replayed.text
    assert replayed.json()["id"] == running.json()["id"]
    assert ticking("another").status_code == 429  # a new upload is still refused
    httpx.post(f"{srv.url}/jobs/{running.json()['id']}/cancel", headers=bearer(busy))
