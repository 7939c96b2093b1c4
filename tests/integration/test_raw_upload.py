"""The body as the file (`curl -T`, PUT or POST /uploads/raw) and the client's SHA-256:
RFC 9530 digest headers on raw uploads, the `sha256` field on multipart ones."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import SMALL_LIMIT
from tests.helpers import (
    Server,
    curl_put,
    curl_upload,
    file_part,
    multipart,
    raw_request,
    sha256_of,
    text_part,
)


def _digest_header(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


def _stored(server: Server) -> int:
    return len(server.stored_files())


def test_curl_T_stores_the_body_as_the_file_and_the_job_finishes(
    server: Server, tmp_path: Path
) -> None:
    path = tmp_path / "report.csv"
    path.write_bytes(b"a,b\n1,2\n3,4\n")
    url = f"{server.url}/uploads/raw?filename=..%2Fsecret%2Freport.csv&processors=inspect,csv"
    status, headers, job = curl_put(url, path, "-H", "Content-Type: text/csv")
    assert status == 202, job
    assert headers["location"] == f"/status/{job['id']}"
    assert (job["status"], job["size"], job["sha256"]) == ("queued", 12, sha256_of(path))
    assert (job["filename"], job["content_type"]) == ("report.csv", "text/csv")
    done = server.wait_finished(job["id"])
    assert done["status"] == "done" and done["result"]["csv"]["rows"] == 2, done
    assert (server.data_dir / "files" / job["id"]).read_bytes() == path.read_bytes()


def test_post_with_a_chunked_body_and_no_name_or_type(server: Server) -> None:
    def body() -> Iterator[bytes]:
        yield from (b"x" * 70_000, b"", b"y" * 5)

    response = httpx.post(f"{server.url}/uploads/raw", content=body(), timeout=30)
    assert response.status_code == 202, response.text
    job = response.json()
    assert (job["filename"], job["content_type"]) == ("upload.bin", "application/octet-stream")
    assert job["sha256"] == hashlib.sha256(b"x" * 70_000 + b"y" * 5).hexdigest()
    assert server.wait_finished(job["id"])["status"] == "done"


def test_a_20_mib_file_streams_whole(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    with path.open("wb") as f:
        for i in range(20):
            f.write(bytes([i]) * (1 << 20))
    status, _, job = curl_put(f"{server.url}/uploads/raw?filename=big.bin", path)
    assert status == 202 and job["size"] == 20 << 20 and job["sha256"] == sha256_of(path)


@pytest.mark.parametrize("chunked", [False, True])
def test_over_the_limit_is_413_and_leaves_nothing(
    small_server: Server, tmp_path: Path, chunked: bool
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"z" * (SMALL_LIMIT + 1))
    before = _stored(small_server)
    extra = ["-H", "Transfer-Encoding: chunked"] if chunked else []
    status, _, body = curl_put(f"{small_server.url}/uploads/raw?filename=big.bin", path, *extra)
    assert status == 413, body
    assert "HOPPER_MAX_UPLOAD_BYTES" in body["detail"]
    assert _stored(small_server) == before and small_server.leftovers() == []


def test_a_file_of_exactly_the_limit_fits(small_server: Server, tmp_path: Path) -> None:
    path = tmp_path / "exact.bin"
    path.write_bytes(b"e" * SMALL_LIMIT)
    status, _, body = curl_put(f"{small_server.url}/uploads/raw", path)
    assert status == 202 and body["size"] == SMALL_LIMIT


@pytest.mark.parametrize(
    "header",
    ["Content-Digest", "Repr-Digest"],
)
def test_a_matching_digest_header_is_accepted_and_other_algorithms_ignored(
    server: Server, tmp_path: Path, header: str
) -> None:
    path = tmp_path / "ok.txt"
    path.write_bytes(b"digest me")
    value = f"sha-512=:AAAA:, {_digest_header(b'digest me')};note=1, md5=:AAAA:"
    status, _, job = curl_put(
        f"{server.url}/uploads/raw?filename=ok.txt", path, "-H", f"{header}: {value}"
    )
    assert status == 202, job
    assert job["sha256"] == hashlib.sha256(b"digest me").hexdigest()
    only_unknown = curl_put(f"{server.url}/uploads/raw", path, "-H", f"{header}: sha-512=:AAAA:")
    assert only_unknown[0] == 202  # nothing Hopper can check: accepted unchecked


def test_a_digest_mismatch_is_400_and_nothing_is_kept(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "changed.txt"
    path.write_bytes(b"what was sent")
    before = _stored(server)
    wrong = _digest_header(b"what was meant")
    for header in (f"Content-Digest: {wrong}", f"Repr-Digest: {wrong}"):
        status, _, body = curl_put(f"{server.url}/uploads/raw", path, "-H", header)
        assert status == 400, body
        assert "SHA-256" in body["detail"] and "Nothing was kept" in body["detail"]
    both = ["-H", f"Content-Digest: {_digest_header(b'what was sent')}"]
    status, _, body = curl_put(
        f"{server.url}/uploads/raw", path, *both, "-H", f"Repr-Digest: {wrong}"
    )
    assert status == 400 and "different" in body["detail"], body
    assert _stored(server) == before and server.leftovers() == []


@pytest.mark.parametrize(
    "value",
    ["sha-256=abc", "sha-256=:bm90IDMyIGJ5dGVz:", "sha-256=:!!!:", "=:AAAA:", "", "sha-256"],
)
def test_a_malformed_digest_header_is_400(server: Server, tmp_path: Path, value: str) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(b"data")
    header = f"Content-Digest: {value}" if value else "Content-Digest;"  # curl: an empty one
    status, _, body = curl_put(f"{server.url}/uploads/raw", path, "-H", header)
    assert status == 400, body
    assert "Content-Digest" in body["detail"]


@pytest.mark.parametrize("field_first", [True, False])
def test_multipart_sha256_field_before_or_after_the_file(
    server: Server, tmp_path: Path, field_first: bool
) -> None:
    data = b"multipart bytes"
    good = hashlib.sha256(data).hexdigest().upper()  # hex in either case
    parts = [text_part("sha256", good.encode()), file_part(data=data)]
    status, body = raw_request(server.port, multipart(parts if field_first else parts[::-1]))
    assert status == 202, body
    before = _stored(server)
    wrong = [text_part("sha256", b"0" * 64), file_part(data=data)]
    status, body = raw_request(server.port, multipart(wrong if field_first else wrong[::-1]))
    assert status == 400 and b"Nothing was kept" in body, body
    assert _stored(server) == before and server.leftovers() == []


def test_curl_F_with_a_sha256_field(server: Server, sample: Path) -> None:
    digest = sha256_of(sample)
    status, _, job = curl_upload(f"{server.url}/uploads", sample, "-F", f"sha256={digest}")
    assert status == 202 and job["sha256"] == digest
    status, _, body = curl_upload(f"{server.url}/uploads", sample, "-F", "sha256=nothex")
    assert status == 400 and "64 hex digits" in body["detail"]


def test_idempotency_key_replays_a_raw_upload(server: Server) -> None:
    headers = {"Idempotency-Key": "raw-once"}
    first = httpx.put(f"{server.url}/uploads/raw", content=b"one", headers=headers)
    again = httpx.put(f"{server.url}/uploads/raw", content=b"other", headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"


def test_unknown_processor_is_400_before_the_body(server: Server) -> None:
    status, body = raw_request(
        server.port, b"x", path="/uploads/raw?processors=nope", method="PUT", ctype=None
    )
    assert status == 400 and b"nope" in body


def test_openapi_describes_both_methods(server: Server) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    item = spec["paths"]["/uploads/raw"]
    assert set(item) == {"put", "post"}
    for operation in item.values():
        assert "application/octet-stream" in operation["requestBody"]["content"]
        assert {"202", "400", "413", "503", "507"} <= set(operation["responses"])
        names = {p["name"] for p in operation["parameters"]}
        assert {"filename", "processors", "content-digest", "repr-digest"} <= names
