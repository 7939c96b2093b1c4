"""The core flow as a user runs it: curl -F, 202 + Location, poll /status to done."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import Server, curl_upload, sha256_of, wait_until


def _upload_and_finish(server: Server, path: Path, *extra: str) -> dict[str, Any]:
    status, headers, body = curl_upload(f"{server.url}/uploads", path, *extra)
    assert status == 202, body
    assert headers["location"] == f"/status/{body['id']}"
    assert body["status"] == "queued"
    assert body["size"] == path.stat().st_size
    assert body["sha256"] == sha256_of(path)  # filled in before the 202
    return server.wait_finished(body["id"])


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.txt", b""),
        ("one.bin", b"\x00"),
        ("all-bytes.bin", bytes(range(256)) * 4),
    ],
)
def test_upload_reaches_done_with_the_exact_bytes_stored(
    server: Server, tmp_path: Path, name: str, content: bytes
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    job = _upload_and_finish(server, path)
    assert job["status"] == "done", job
    assert job["progress"] == 1.0
    stored = server.data_dir / "files" / str(job["id"])
    assert stored.read_bytes() == content
    assert job["processors"][0] == "inspect"  # auto, expanded
    result = job["result"]
    assert isinstance(result, dict)
    assert result["inspect"]["sha256"] == sha256_of(path)


def test_50_mib_upload_is_stored_whole(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    with path.open("wb") as f:
        for i in range(50):
            f.write(bytes([i]) * (1 << 20))
    job = _upload_and_finish(server, path)
    assert job["status"] == "done"
    assert sha256_of(server.data_dir / "files" / str(job["id"])) == sha256_of(path)


def test_chunked_upload_without_content_length_works(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "chunked.bin"
    path.write_bytes(b"abc" * 100_000)
    job = _upload_and_finish(server, path, "-H", "Transfer-Encoding: chunked")
    assert job["status"] == "done"
    assert job["size"] == 300_000


def test_detected_type_comes_from_the_bytes_not_the_name(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "looks-like.pdf"
    path.write_text("just some plain text\n")
    job = _upload_and_finish(server, path, "-F", "processors=inspect")
    assert job["detected_type"] == "text/plain"
    assert job["content_type"] == "application/pdf"  # what curl declared, from the name
    result = job["result"]
    assert isinstance(result, dict)
    assert result["inspect"]["type_matches_declared"] is False


def test_processors_can_be_named_in_the_query_string(server: Server, sample: Path) -> None:
    url = f"{server.url}/uploads?processors=checksums"
    status, _, body = curl_upload(url, sample)
    assert status == 202
    job = server.wait_finished(body["id"])
    assert job["processors"] == ["checksums"]
    import hashlib

    assert job["result"]["checksums"]["md5"] == hashlib.md5(sample.read_bytes()).hexdigest()  # noqa: S324


def test_status_shows_processing_with_progress_and_retry_after(
    tmp_path: Path, sample: Path
) -> None:
    # A heavy job (32 rounds of checksums over 64 MiB) is slow enough to watch it move.
    path = tmp_path / "heavy.bin"
    path.write_bytes(b"\x07" * (64 << 20))
    srv = Server(data_dir=tmp_path / "data", env={"HASH_ROUNDS": "32"}).start()
    try:
        _, _, body = curl_upload(f"{srv.url}/uploads?processors=checksums", path)
        seen = wait_until(
            lambda: httpx.get(f"{srv.url}/status/{body['id']}", timeout=5),
            lambda r: r.json()["status"] == "processing" and r.json()["progress"] > 0,
            timeout_s=60,
            every_s=0.01,
        )
        assert seen.headers["retry-after"] == "1"
        assert 0 < seen.json()["progress"] < 1
        done = srv.wait_finished(body["id"], timeout_s=300)
        assert done["status"] == "done"
        final = httpx.get(f"{srv.url}/status/{body['id']}")
        assert "retry-after" not in final.headers
    finally:
        srv.stop()


def test_browser_form_post_is_redirected_to_the_job_page(server: Server, sample: Path) -> None:
    status, headers, _ = curl_upload(
        f"{server.url}/uploads", sample, "-H", "Accept: text/html,application/xhtml+xml,*/*;q=0.8"
    )
    assert status == 303
    assert headers["location"].startswith("/jobs/")
    page = httpx.get(f"{server.url}{headers['location']}")
    assert page.status_code == 200
    assert "sample.bin" in page.text


def test_unknown_job_is_404_with_detail(server: Server) -> None:
    for job_id in ["AAAAAAAAAAAAAAAAAAAAAA", "..%2F..%2Fetc%2Fpasswd", "x" * 200]:
        for path in (f"/status/{job_id}", f"/jobs/{job_id}", f"/jobs/{job_id}/file"):
            response = httpx.get(f"{server.url}{path}")
            assert response.status_code == 404, path
            assert isinstance(response.json()["detail"], str)


def test_openapi_describes_every_route_and_the_job_document(server: Server) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/uploads", "/status/{job_id}", "/", "/jobs/{job_id}"} <= set(spec["paths"])
    upload = spec["paths"]["/uploads"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert {"202", "400", "413", "415", "507"} <= set(upload["responses"])
    job_fields = spec["components"]["schemas"]["Job"]["properties"]
    assert {"id", "status", "progress", "sha256", "result", "error"} <= set(job_fields)
    assert httpx.get(f"{server.url}/docs").status_code == 200


def test_curl_gets_json_error_for_a_missing_file_part(server: Server) -> None:
    out = subprocess.run(
        ["curl", "-sS", "-F", "x=1", "-w", "\n%{http_code}", f"{server.url}/uploads"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    body, code = out.rsplit("\n", 1)
    assert code == "400"
    assert "file" in body
