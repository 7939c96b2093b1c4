"""Admission: a full queue, a nearly full disk, too many uploads at once are refused
before the body is read, with Retry-After where waiting helps, and leave nothing behind."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

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


def _chunked_upload(url: str, size: int) -> httpx.Response:
    """A chunked upload (no Content-Length, so no early refusal) of `size` bytes."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()

    def body() -> Iterator[bytes]:
        yield head
        block = b"\x07" * (1 << 20)
        for _ in range(size // len(block)):
            yield block
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    ctype = f"multipart/form-data; boundary={BOUNDARY}"
    return httpx.post(url, content=body(), headers={"Content-Type": ctype}, timeout=60)


def test_the_disk_reserve_is_kept_during_an_upload(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # Room for about 160 MiB more: wide enough that other writers on a shared disk do not
    # use it up before the upload starts, and a 1 GiB upload still runs into it.
    reserve = shutil.disk_usage(data).free - (160 << 20)
    srv = Server(data_dir=data, env={"HOPPER_MIN_FREE_BYTES": str(reserve)}).start()
    try:
        response = _chunked_upload(f"{srv.url}/uploads", 1 << 30)
        assert response.status_code == 507
        assert "during the upload" in response.json()["detail"]
        assert srv.leftovers() == []
    finally:
        srv.stop()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, where the machine allows mounting one (root in a container may not)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_disk_that_fills_mid_upload_answers_507_and_keeps_nothing(tiny_disk: Path) -> None:
    srv = Server(data_dir=tiny_disk / "data", env={"HOPPER_MIN_FREE_BYTES": "0"}).start()
    try:
        response = _chunked_upload(f"{srv.url}/uploads", 32 << 20)
        assert response.status_code == 507
        assert "disk is full" in response.json()["detail"]
        assert srv.leftovers() == []
        small = httpx.post(f"{srv.url}/uploads", files={"file": ("a.txt", b"still works")})
        assert small.status_code == 202
    finally:
        srv.stop()
