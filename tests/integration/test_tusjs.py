"""The browser tus clients, unchanged, against a real Hopper: tus-js-client (its browser
bundle) and Uppy (bundled by esbuild) on a page of another origin, in Chromium, as a site
embedding an uploader runs them. Upload, abort mid-way, reload the page, resume from
localStorage (on the same server and on a restarted one), and the job's SHA-256 is the
file's. The clients come from the npm registry (tests/js, `scripts/setup --dev`)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
from array import array
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Error, Page, Route

from tests.helpers import ROOT, Server, free_port, wait_until
from tests.keys import bearer, make_key

pytestmark = pytest.mark.browser

JS = ROOT / "tests" / "js"
MODULES = JS / "node_modules"
CHUNK = 256 * 1024  # harness.js's CHUNK_BYTES
SIZE = 3 * 1024 * 1024 + 12345  # twelve whole chunks and a short one
TUS = {"Tus-Resumable": "1.0.0"}
BLOCKED = r"failed to create upload.*response code: n/a"  # tus-js-client: no answer it may read


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # pytest shows the test's own failure; a line per asset is noise


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Another origin: a static server on another loopback port with the test page, the
    tus-js-client bundle from node_modules and an esbuild bundle of @uppy/core + @uppy/tus."""
    if not (MODULES / "tus-js-client").is_dir():
        pytest.fail(f"{MODULES} is missing: `scripts/setup --dev` installs it with npm ci")
    root = tmp_path_factory.mktemp("site")
    for name in ("index.html", "harness.js"):
        shutil.copy(JS / name, root / name)
    shutil.copy(MODULES / "tus-js-client" / "dist" / "tus.min.js", root / "tus.min.js")
    esbuild = [str(MODULES / ".bin" / "esbuild"), str(JS / "uppy-entry.js"), "--bundle"]
    esbuild += ["--format=iife", f"--outfile={root / 'uppy.js'}", "--log-level=warning"]
    subprocess.run(esbuild, check=True, timeout=60)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def hopper(tmp_path_factory: pytest.TempPathFactory, backend: str, site: str) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("tusjs") / "data"
    server = Server(data_dir=data, env={"HOPPER_CORS_ORIGINS": site}).start()
    yield server
    server.stop()


@pytest.fixture
def page(browser: Browser, site: str) -> Iterator[Page]:
    context = browser.new_context()  # its own localStorage: no earlier test's uploads
    page = context.new_page()
    page.goto(f"{site}/index.html")
    yield page
    context.close()


def file_bytes(seed: int, size: int = SIZE) -> bytes:
    """harness.js's makeFile: xorshift32 words, little-endian."""
    words = array("I")
    assert words.itemsize == 4
    x, mask = seed, 0xFFFFFFFF
    for _ in range((size + 3) // 4):
        x ^= (x << 13) & mask
        x ^= x >> 17
        x ^= (x << 5) & mask
        words.append(x)
    if sys.byteorder == "big":
        words.byteswap()
    return words.tobytes()[:size]


def spec(server: Server, seed: int, name: str, **more: Any) -> dict[str, Any]:
    return {"endpoint": f"{server.url}/files/", "seed": seed, "size": SIZE, "name": name, **more}


def upload_id(url: str) -> str:
    assert "/files/" in url, url
    return url.rstrip("/").rsplit("/", 1)[1]


def offset_of(server: Server, job_id: str) -> int:
    response = httpx.head(f"{server.url}/files/{job_id}", headers=TUS)
    assert response.status_code == 200, response.status_code
    return int(response.headers["upload-offset"])


def assert_done(server: Server, job_id: str, seed: int, name: str) -> dict[str, Any]:
    job = server.wait_finished(job_id)
    data = file_bytes(seed)
    assert job["status"] == "done", job
    assert job["size"] == len(data)
    assert job["sha256"] == hashlib.sha256(data).hexdigest()
    assert job["filename"] == name  # from Upload-Metadata
    return job


def requests_seen(server: Server) -> list[tuple[str, str, int]]:
    """Method, path and status of each request the server logged, in order."""
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    return [(r["method"], r["path"], r["status"]) for r in lines if r["message"] == "request"]


def interrupt(page: Page, upload: dict[str, Any], server: Server) -> str:
    """Upload about a third, abort, and check the server kept exactly what it counted."""
    aborted = page.evaluate("spec => uploadThenAbort(spec)", upload)
    job_id = upload_id(aborted["url"])
    assert CHUNK <= aborted["accepted"] < SIZE
    assert offset_of(server, job_id) == aborted["accepted"]
    not_yet = httpx.get(f"{server.url}/status/{job_id}")
    assert not_yet.status_code == 404  # not a job until its last byte is in
    return job_id


def resume(page: Page, upload: dict[str, Any], offset: int) -> dict[str, Any]:
    """As a reopened page does: a new Upload finds the old one in localStorage."""
    page.reload()
    resumed: dict[str, Any] = page.evaluate("spec => resumeUpload(spec)", upload)
    assert resumed["requests"][:2] == ["HEAD", f"PATCH {offset}"]  # no new POST, no restart
    assert not any(r.startswith("POST") for r in resumed["requests"])
    return resumed


def test_tus_js_client_resumes_an_aborted_upload_after_a_page_reload(
    hopper: Server, page: Page
) -> None:
    upload = spec(hopper, seed=1, name="tusjs-reload.bin", stopAfter=SIZE // 3)
    job_id = interrupt(page, upload, hopper)
    resumed = resume(page, upload, offset_of(hopper, job_id))
    assert upload_id(resumed["url"]) == job_id
    job = assert_done(hopper, job_id, seed=1, name="tusjs-reload.bin")
    assert job["result"]["inspect"]["sha256"] == job["sha256"]  # the processors named ran
    assert hopper.leftovers() == []


def test_tus_js_client_resumes_on_a_restarted_server(tmp_path: Path, site: str, page: Page) -> None:
    env = {"HOPPER_CORS_ORIGINS": site}
    port = free_port()  # kept across the restart: the page holds the upload's URL
    server = Server(data_dir=tmp_path / "data", env=env, port=port).start()
    try:
        upload = spec(server, seed=2, name="tusjs-restart.bin", stopAfter=SIZE // 2)
        job_id = interrupt(page, upload, server)
        offset = offset_of(server, job_id)
        server.stop()  # the running SHA-256 was in that process's memory
        server = Server(data_dir=tmp_path / "data", env=env, port=port).start()
        resume(page, upload, offset)
        assert_done(server, job_id, seed=2, name="tusjs-restart.bin")
        assert server.leftovers() == []
    finally:
        server.stop()


def test_uppy_with_its_tus_plugin_uploads_to_a_job_through_a_dropped_connection(
    hopper: Server, page: Page
) -> None:
    seen: list[str] = []

    def drop_one_patch(route: Route) -> None:
        request = route.request
        seen.append(f"{request.method} {request.headers.get('upload-offset', '')}".strip())
        if seen[-1] == f"PATCH {4 * CHUNK}" and seen.count(seen[-1]) == 1:
            route.abort("connectionreset")  # the network drops it; Uppy retries by itself
        else:
            route.continue_()

    page.route(f"{hopper.url}/files/**", drop_one_patch)
    result = page.evaluate("spec => uppyUpload(spec)", spec(hopper, seed=3, name="uppy.txt"))
    assert result["failed"] == [] and len(result["urls"]) == 1
    dropped = seen.index(f"PATCH {4 * CHUNK}")
    assert seen[dropped + 1 : dropped + 3] == ["HEAD", f"PATCH {4 * CHUNK}"]  # asks, resends
    job = assert_done(hopper, upload_id(result["urls"][0]), seed=3, name="uppy.txt")
    assert job["content_type"] == "text/plain"  # Uppy's filetype metadata


def test_a_page_elsewhere_needs_a_header_key_and_never_gets_the_login_cookie(
    tmp_path: Path, site: str, page: Page
) -> None:
    data = tmp_path / "data"
    key = make_key(data, "site")
    env = {"HOPPER_CORS_ORIGINS": site, "HOPPER_AUTH": "keys"}
    server = Server(data_dir=data, env=env).start()
    try:
        url = page.evaluate(
            "spec => uploadWhole(spec)", spec(server, seed=4, name="keyed.bin", headers=bearer(key))
        )
        job = wait_until(
            lambda: httpx.get(f"{server.url}/status/{upload_id(url)}", headers=bearer(key)).json(),
            lambda j: j.get("status") == "done",
        )
        assert job["sha256"] == hashlib.sha256(file_bytes(4)).hexdigest()
        assert job["owner"] == key[4:14]  # the key's job, as with any other client
        # Without a key the 401 reaches the script: CORS headers are on errors too.
        with pytest.raises(Error, match="response code: 401"):
            page.evaluate("spec => uploadWhole(spec)", spec(server, seed=5, name="nokey.bin"))
        # The login cookie (same site, so the browser has it) with credentials: the
        # preflight does not allow credentials, so the browser never sends the request.
        page.context.add_cookies([{"name": "hopper_key", "value": key, "url": server.url}])
        before = requests_seen(server)
        with pytest.raises(Error, match=BLOCKED):
            page.evaluate(
                "spec => uploadWhole(spec)",
                spec(server, seed=6, name="cookie.bin", withCredentials=True),
            )
        assert requests_seen(server)[len(before) :] == [("OPTIONS", "/files/", 200)]
        assert list((data / "partials").iterdir()) == []  # neither refusal created an upload
    finally:
        server.stop()


def test_without_cors_origins_a_page_elsewhere_cannot_upload(server: Server, page: Page) -> None:
    before, partials = requests_seen(server), sorted((server.data_dir / "partials").iterdir())
    with pytest.raises(Error, match=BLOCKED):
        page.evaluate("spec => uploadWhole(spec)", spec(server, seed=7, name="blocked.bin"))
    # The preflight reached tus's own OPTIONS, whose answer allows no other origin.
    assert requests_seen(server)[len(before) :] == [("OPTIONS", "/files/", 204)]
    assert sorted((server.data_dir / "partials").iterdir()) == partials
