"""Admission: a full queue, a nearly full disk, too many uploads at once are refused
before the body is read, with Retry-After where waiting helps, and leave nothing behind."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from tests.helpers import BOUNDARY, Server, curl_upload, file_part, multipart, wait_until


def test_full_queue_answers_503_with_retry_after(tmp_path: Path, sample: Path) -> None:
    heavy = tmp_path / "heavy.bin"
    heavy.write_bytes(b"\x03" * (16 << 20))
    env = {"HOPPER_MAX_QUEUE": "2", "HOPPER_WORKERS": "1", "HASH_ROUNDS": "40"}
    srv = Server(data_dir=tmp_path / "data", env=env).start()
    try:
        for _ in range(2):
            status, _, _ = curl_upload(f"{srv.url}/uploads?processors=checksums", heavy)
            assert status == 202
        status, headers, body = curl_upload(f"{srv.url}/uploads", sample)
        assert status == 503
        assert int(headers["retry-after"]) > 0
        assert "HOPPER_MAX_QUEUE" in body["detail"]
        assert srv.leftovers() == []
    finally:
        srv.stop()


def test_low_disk_answers_507_before_the_body(tmp_path: Path, sample: Path) -> None:
    srv = Server(data_dir=tmp_path / "data", env={"HOPPER_MIN_FREE_BYTES": str(10**18)}).start()
    try:
        status, _, body = curl_upload(f"{srv.url}/uploads", sample)
        assert status == 507
        assert "HOPPER_MIN_FREE_BYTES" in body["detail"]
        assert srv.leftovers() == []
    finally:
        srv.stop()


def test_too_many_uploads_at_once_answer_503(tmp_path: Path, sample: Path) -> None:
    srv = Server(data_dir=tmp_path / "data", env={"HOPPER_MAX_CONCURRENT_UPLOADS": "1"}).start()
    body = multipart([file_part(data=b"\x01" * 100_000)])
    held = socket.create_connection(("127.0.0.1", srv.port))
    try:
        head = (
            f"POST /uploads HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
        )
        held.sendall(head.encode() + body[:50_000])  # an upload that is still streaming
        response = wait_until(
            lambda: httpx.post(f"{srv.url}/uploads", files={"file": ("a", b"x")}),
            lambda r: r.status_code == 503,
            timeout_s=10,
        )
        assert response.headers["retry-after"]
        assert "HOPPER_MAX_CONCURRENT_UPLOADS" in response.json()["detail"]
        held.sendall(body[50_000:])  # the first one finishes and frees its slot
        assert held.recv(12) == b"HTTP/1.1 202"
        status, _, _ = curl_upload(f"{srv.url}/uploads", sample)
        assert status == 202
    finally:
        held.close()
        srv.stop()
