"""tus 1.0 resumable uploads under /files/: the real tuspy client (upload, interrupt,
resume, on the same server and on a restarted one), raw HTTP for the protocol's edge cases,
ownership, expiry, and nothing left on disk by a failed, terminated or expired upload."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tusclient.client import TusClient
from tusclient.uploader.uploader import Uploader

from tests.helpers import Server, sha256_of, wait_until
from tests.keys import bearer, make_key

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}
CHUNK = 256 * 1024
LIMIT = 8 * 1024 * 1024  # HOPPER_MAX_UPLOAD_BYTES of the module's server


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("tus") / "data"
    server = Server(data_dir=data, env={"HOPPER_MAX_UPLOAD_BYTES": str(LIMIT)}).start()
    yield server
    server.stop()


def _file(tmp_path: Path, size: int = 3 * 1024 * 1024 + 12345, name: str = "big.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def _uploader(server: Server, path: Path, **kwargs: Any) -> Uploader:
    headers = kwargs.pop("headers", {})
    client = TusClient(f"{server.url}/files/", headers=headers)
    metadata = kwargs.pop("metadata", {"filename": path.name, "processors": "inspect"})
    # From memory: given a path, tuspy opens the file per request and never closes it.
    stream = io.BytesIO(path.read_bytes())
    uploader: Uploader = client.uploader(
        file_stream=stream, chunk_size=CHUNK, metadata=metadata, **kwargs
    )
    return uploader


def _upload_id(uploader: Uploader) -> str:
    """The upload's id, from the URL the client was given (Location)."""
    url = uploader.url
    assert isinstance(url, str)
    return _job_id(url)


def _job_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[1]


def _create(server: Server, length: int, **headers: str) -> str:
    response = httpx.post(
        f"{server.url}/files/", headers={**TUS, "Upload-Length": str(length), **headers}
    )
    assert response.status_code == 201, response.text
    location: str = response.headers["location"]
    assert location.startswith("/files/")
    return _job_id(location)


def _head(server: Server, upload_id: str, **headers: str) -> httpx.Response:
    return httpx.head(f"{server.url}/files/{upload_id}", headers={**TUS, **headers})


def _patch(
    server: Server, upload_id: str, offset: int, data: bytes, **headers: str
) -> httpx.Response:
    return httpx.patch(
        f"{server.url}/files/{upload_id}",
        content=data,
        headers={**OCTETS, "Upload-Offset": str(offset), **headers},
        timeout=30,
    )


def _finished_job(server: Server, upload_id: str, path: Path) -> dict[str, Any]:
    job = server.wait_finished(upload_id)
    assert job["status"] == "done", job
    assert job["size"] == path.stat().st_size
    assert job["sha256"] == sha256_of(path)
    assert job["result"]["inspect"]["sha256"] == sha256_of(path)
    assert sha256_of(server.data_dir / "files" / upload_id) == sha256_of(path)
    return job


def test_tuspy_uploads_in_chunks_and_the_job_is_like_a_multipart_one(
    srv: Server, tmp_path: Path
) -> None:
    path = _file(tmp_path)
    uploader = _uploader(
        srv,
        path,
        upload_checksum=True,  # sha1 of every PATCH (the checksum extension)
        metadata={"filename": "../report.bin", "filetype": "text/plain", "processors": "inspect"},
    )
    uploader.upload()
    upload_id = _upload_id(uploader)
    job = _finished_job(srv, upload_id, path)
    assert job["filename"] == "report.bin"  # sanitised like a multipart name
    assert job["content_type"] == "text/plain"
    assert job["processors"] == ["inspect"]
    head = _head(srv, upload_id)  # a finished upload reports itself whole
    assert head.status_code == 200
    assert head.headers["upload-offset"] == head.headers["upload-length"] == str(job["size"])
    assert srv.leftovers() == []
    assert list((srv.data_dir / "partials").iterdir()) == []


def test_an_interrupted_upload_resumes_from_a_new_client(srv: Server, tmp_path: Path) -> None:
    path = _file(tmp_path)
    first = _uploader(srv, path)
    first.upload(stop_at=5 * CHUNK)  # the client goes away after five chunks
    assert first.offset == 5 * CHUNK
    head = _head(srv, _upload_id(first))
    assert head.headers["upload-offset"] == str(5 * CHUNK)
    assert head.headers["cache-control"] == "no-store"
    assert "upload-expires" in head.headers
    again = _uploader(srv, path, url=first.url)  # asks the server for the offset (HEAD)
    assert again.offset == 5 * CHUNK
    again.upload()
    _finished_job(srv, _upload_id(first), path)


def test_a_connection_dropped_mid_patch_keeps_the_bytes_that_arrived(
    srv: Server, tmp_path: Path
) -> None:
    path = _file(tmp_path)
    data = path.read_bytes()
    uploader = _uploader(srv, path)
    uploader.upload(stop_at=CHUNK)
    upload_id = _upload_id(uploader)
    sent = 3 * CHUNK + 777  # of a PATCH that announced the whole rest
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        head = (
            f"PATCH /files/{upload_id} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
            f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {CHUNK}\r\n"
            f"Content-Length: {len(data) - CHUNK}\r\n\r\n"
        ).encode()
        s.sendall(head + data[CHUNK : CHUNK + sent])
    offset = wait_until(
        lambda: int(_head(srv, upload_id).headers["upload-offset"]),
        lambda value: value == CHUNK + sent,
    )
    resumed = _uploader(srv, path, url=uploader.url)
    assert resumed.offset == offset
    resumed.upload()
    _finished_job(srv, upload_id, path)


def test_a_resume_on_a_restarted_server_rehashes_the_stored_part(tmp_path: Path) -> None:
    path = _file(tmp_path)
    server = Server(data_dir=tmp_path / "data").start()
    try:
        first = _uploader(server, path)
        first.upload(stop_at=7 * CHUNK)
        server.stop()  # the running SHA-256 was in that process's memory
        server = Server(data_dir=tmp_path / "data").start()  # a new port, the same data
        url = f"{server.url}/files/{_upload_id(first)}"
        resumed = _uploader(server, path, url=url)
        assert resumed.offset == 7 * CHUNK  # the partial upload survived the restart
        resumed.upload()
        _finished_job(server, _job_id(url), path)
        assert server.leftovers() == []
    finally:
        server.stop()


def test_options_announces_version_extensions_size_and_checksums(srv: Server) -> None:
    response = httpx.options(f"{srv.url}/files/")
    assert response.status_code == 204
    assert response.headers["tus-resumable"] == "1.0.0"
    assert response.headers["tus-version"] == "1.0.0"
    extensions = set(response.headers["tus-extension"].split(","))
    assert {"creation", "creation-with-upload", "termination", "expiration", "checksum"} == (
        extensions
    )  # no creation-defer-length: a length is needed
    assert response.headers["tus-max-size"] == str(LIMIT)
    assert "sha256" in response.headers["tus-checksum-algorithm"].split(",")


def test_protocol_errors_409_415_412_413(srv: Server) -> None:
    upload_id = _create(srv, 100)
    assert _patch(srv, upload_id, 5, b"x").status_code == 409
    wrong_type = _patch(srv, upload_id, 0, b"x", **{"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415
    for version in ({}, {"Tus-Resumable": "0.2.2"}):
        headers = {"Content-Type": OCTETS["Content-Type"], "Upload-Offset": "0", **version}
        old = httpx.patch(f"{srv.url}/files/{upload_id}", content=b"x", headers=headers)
        assert old.status_code == 412 and old.headers["tus-version"] == "1.0.0"
        assert (
            httpx.post(f"{srv.url}/files/", headers={"Upload-Length": "1", **version}).status_code
            == 412
        )
    too_big = httpx.post(f"{srv.url}/files/", headers={**TUS, "Upload-Length": str(LIMIT + 1)})
    assert too_big.status_code == 413 and "HOPPER_MAX_UPLOAD_BYTES" in too_big.json()["detail"]
    past_length = _patch(srv, upload_id, 0, b"y" * 101)
    assert past_length.status_code == 413
    no_length = httpx.post(f"{srv.url}/files/", headers=TUS)
    assert no_length.status_code == 400  # Upload-Defer-Length is not offered
    unknown = httpx.post(
        f"{srv.url}/files/",
        headers={**TUS, "Upload-Length": "5", "Upload-Metadata": "processors bm9wZQ=="},
    )
    assert unknown.status_code == 400 and "nope" in unknown.json()["detail"]
    assert _head(srv, upload_id).headers["upload-offset"] == "0"
    assert httpx.delete(f"{srv.url}/files/{upload_id}", headers=TUS).status_code == 204
    assert srv.leftovers() == []


def test_a_checksum_mismatch_is_460_and_discards_that_patchs_bytes(srv: Server) -> None:
    data = os.urandom(4000)
    upload_id = _create(srv, len(data), **{"Upload-Metadata": "filename Y2hlY2suYmlu"})

    def sha1(chunk: bytes) -> str:
        return "sha1 " + base64.b64encode(hashlib.sha1(chunk).digest()).decode()  # noqa: S324

    assert (
        _patch(srv, upload_id, 0, data[:1000], **{"Upload-Checksum": sha1(data[:1000])}).status_code
        == 204
    )
    bad = _patch(srv, upload_id, 1000, data[1000:2000], **{"Upload-Checksum": sha1(b"other")})
    assert bad.status_code == 460, bad.text
    assert _head(srv, upload_id).headers["upload-offset"] == "1000"
    assert (srv.data_dir / "files" / upload_id).stat().st_size == 1000
    unsupported = _patch(srv, upload_id, 1000, data[1000:], **{"Upload-Checksum": "crc32 AAAA"})
    assert unsupported.status_code == 400
    sha256 = "sha256 " + base64.b64encode(hashlib.sha256(data[1000:]).digest()).decode()
    done = _patch(srv, upload_id, 1000, data[1000:], **{"Upload-Checksum": sha256})
    assert done.status_code == 204 and done.headers["upload-offset"] == str(len(data))
    job = srv.wait_finished(upload_id)
    assert job["sha256"] == hashlib.sha256(data).hexdigest()  # the discarded bytes left no trace
    assert job["filename"] == "check.bin"


def test_creation_with_upload_and_an_empty_upload(srv: Server) -> None:
    data = b"all at once\n" * 100
    response = httpx.post(
        f"{srv.url}/files/",
        content=data,
        headers={
            **OCTETS,
            "Upload-Length": str(len(data)),
            "Upload-Metadata": "filetype dGV4dC9wbGFpbg==",
        },
    )
    assert response.status_code == 201, response.text
    assert response.headers["upload-offset"] == str(len(data))
    job = srv.wait_finished(_job_id(response.headers["location"]))
    assert job["sha256"] == hashlib.sha256(data).hexdigest()
    assert job["content_type"] == "text/plain" and job["filename"] == "upload.bin"
    empty = _create(srv, 0)  # complete at creation: a job at once
    assert srv.wait_finished(empty)["size"] == 0


def test_termination_leaves_nothing_and_the_upload_is_gone(srv: Server) -> None:
    upload_id = _create(srv, 10_000)
    assert _patch(srv, upload_id, 0, b"z" * 4000).status_code == 204
    assert (srv.data_dir / "partials" / f"{upload_id}.json").exists()
    assert httpx.delete(f"{srv.url}/files/{upload_id}", headers=TUS).status_code == 204
    assert _head(srv, upload_id).status_code == 404
    assert _patch(srv, upload_id, 4000, b"z").status_code == 404
    assert httpx.delete(f"{srv.url}/files/{upload_id}", headers=TUS).status_code == 404
    assert not (srv.data_dir / "files" / upload_id).exists()
    assert srv.leftovers() == []


def test_a_second_patch_at_once_is_refused_with_423(srv: Server) -> None:
    upload_id = _create(srv, 10_000)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(
            (
                f"PATCH /files/{upload_id} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
                "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
                "Content-Length: 10000\r\n\r\n"
            ).encode()
            + b"a" * 100
        )
        refused = wait_until(
            lambda: _patch(srv, upload_id, 0, b"b" * 10),
            lambda r: r.status_code == 423,
        )
        assert "Another request" in refused.json()["detail"]
    wait_until(lambda: _head(srv, upload_id).headers["upload-offset"], lambda v: v == "100")
    assert httpx.delete(f"{srv.url}/files/{upload_id}", headers=TUS).status_code == 204


def test_an_abandoned_upload_expires_and_leaves_nothing(tmp_path: Path) -> None:
    env = {"HOPPER_TUS_EXPIRY": "2", "HOPPER_SWEEP_INTERVAL": "0.2"}
    server = Server(data_dir=tmp_path / "data", env=env).start()
    try:
        upload_id = _create(server, 1000)
        response = _patch(server, upload_id, 0, b"q" * 10)
        assert response.status_code == 204 and "upload-expires" in response.headers
        gone = wait_until(
            lambda: _head(server, upload_id), lambda r: r.status_code in (404, 410), timeout_s=30
        )
        assert gone.status_code in (404, 410)
        wait_until(lambda: list((server.data_dir / "partials").iterdir()), lambda x: x == [])
        assert not (server.data_dir / "files" / upload_id).exists()
        assert server.leftovers() == []
    finally:
        server.stop()


def test_another_owners_upload_is_404_and_tuspy_sends_keys(tmp_path: Path) -> None:
    data = tmp_path / "data"
    owner, other = make_key(data, "owner"), make_key(data, "other")
    server = Server(data_dir=data, env={"HOPPER_AUTH": "keys"}).start()
    try:
        path = _file(tmp_path, size=600_000)
        uploader = _uploader(server, path, headers=bearer(owner))
        uploader.upload(stop_at=CHUNK)
        upload_id = _upload_id(uploader)
        theirs = {**bearer(other)}
        assert _head(server, upload_id, **theirs).status_code == 404
        assert _patch(server, upload_id, CHUNK, b"x", **theirs).status_code == 404
        delete = httpx.delete(f"{server.url}/files/{upload_id}", headers={**TUS, **theirs})
        assert delete.status_code == 404
        assert _head(server, upload_id).status_code == 401  # no key at all
        _uploader(server, path, url=uploader.url, headers=bearer(owner)).upload()
        job = wait_until(
            lambda: httpx.get(f"{server.url}/status/{upload_id}", headers=bearer(owner)).json(),
            lambda j: j.get("status") == "done",
        )
        assert job["sha256"] == sha256_of(path) and job["owner"] == owner[4:14]
    finally:
        server.stop()


@pytest.mark.browser
def test_the_page_sends_big_files_by_tus_and_resumes_after_a_dropped_patch(
    srv: Server, tmp_path: Path
) -> None:
    from playwright.sync_api import FilePayload, Route, expect, sync_playwright

    data = os.urandom(6 * 1024 * 1024 + 5)  # two PATCHes: 4 MiB, then the rest
    dropped: list[str] = []

    def drop_the_second_patch(route: Route) -> None:
        if (
            route.request.method == "PATCH"
            and len(dropped) < 1
            and "4194304" in (route.request.headers.get("upload-offset", ""))
        ):
            dropped.append(route.request.url)
            route.abort("connectionreset")
        else:
            route.continue_()

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page()
            page.route("**/files/*", drop_the_second_patch)
            page.goto(f"{srv.url}/")
            expect(page.get_by_text("Files over 64 MiB are sent resumably")).to_be_visible()
            page.evaluate("document.getElementById('upload-form').dataset.tusThreshold = '1048576'")
            page.set_input_files(
                "#file",
                files=[
                    FilePayload(name="big.bin", mimeType="application/octet-stream", buffer=data)
                ],
            )
            page.get_by_role("button", name="Upload").click()
            link = page.locator(".upload-row a")
            expect(link).to_be_visible(timeout=60_000)
            job_id = (link.get_attribute("href") or "").rsplit("/", 1)[1]
        finally:
            browser.close()
    assert dropped, "the interruption never happened"
    job = srv.wait_finished(job_id)
    assert job["size"] == len(data) and job["filename"] == "big.bin"
    assert job["sha256"] == hashlib.sha256(data).hexdigest()
