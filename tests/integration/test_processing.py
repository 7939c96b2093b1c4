"""Processors through a real server: results, artifacts, the original file, plugins, and
jobs that misbehave (hang, eat memory, crash, fail transiently) without hurting the server."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests import samples
from tests.helpers import Server, curl_upload


def _done(server: Server, path: Path, processors: str | None = None) -> dict[str, Any]:
    extra = ["-F", f"processors={processors}"] if processors else []
    status, _, body = curl_upload(f"{server.url}/uploads", path, *extra)
    assert status == 202, body
    return server.wait_finished(body["id"], timeout_s=60)


def test_image_upload_gets_facts_and_a_thumbnail_artifact(server: Server, tmp_path: Path) -> None:
    job = _done(server, samples.png(tmp_path / "photo.png"))
    assert job["status"] == "done", job
    assert job["processors"] == ["inspect", "image"]
    assert job["result"]["image"]["width"] == 640
    (artifact,) = job["artifacts"]
    assert artifact["name"] == "thumbnail.webp"
    response = httpx.get(f"{server.url}{artifact['url']}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/webp"
    assert response.headers["x-content-type-options"] == "nosniff"
    with Image.open(io.BytesIO(response.content)) as thumb:
        assert max(thumb.size) == 256
    assert artifact["size"] == len(response.content)


def test_original_file_downloads_under_its_sanitised_name(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "résumé final.txt"
    path.write_text("hello")
    job = _done(server, path)
    response = httpx.get(f"{server.url}/jobs/{job['id']}/file")
    assert response.content == b"hello"
    assert response.headers["content-type"] == "application/octet-stream"
    assert (
        "filename*=UTF-8''r%C3%A9sum%C3%A9%20final.txt" in response.headers["content-disposition"]
    )


def test_missing_artifact_and_hostile_names_are_404(server: Server, tmp_path: Path) -> None:
    job = _done(server, samples.png(tmp_path / "p.png"))
    for name in ["nope.webp", "..%2F..%2Fjobs", "%2e%2e"]:
        response = httpx.get(f"{server.url}/jobs/{job['id']}/artifacts/{name}")
        assert response.status_code == 404, name
        assert response.json()["detail"]


@pytest.mark.parametrize(
    ("make", "processor", "check"),
    [
        (lambda d: samples.pdf(d / "doc.pdf"), "pdf", lambda r: r["pages"] == 1),
        (
            lambda d: samples.csv_file(d / "t.csv", "name,count\nx,1\ny,2\n"),
            "csv",
            lambda r: r["rows"] == 2,
        ),
        (
            lambda d: samples.json_file(d / "j.json", {"k": [1]}),
            "json",
            lambda r: r["keys"] == ["k"],
        ),
        (
            lambda d: samples.zip_archive(d / "z.zip", {"f": b"1"}),
            "archive",
            lambda r: r["entries"] == 1,
        ),
    ],
)
def test_auto_runs_the_processor_that_fits(
    server: Server, tmp_path: Path, make: Any, processor: str, check: Any
) -> None:
    job = _done(server, make(tmp_path))
    assert job["status"] == "done", job
    assert processor in job["processors"]
    assert check(job["result"][processor]), job["result"]
    assert job["versions"][processor] == "1"


def test_corrupt_file_fails_with_a_clear_reason(server: Server, tmp_path: Path) -> None:
    source = samples.png(tmp_path / "big.png", size=(1500, 1500))
    broken = samples.truncated(source, tmp_path / "broken.png")
    job = _done(server, broken, "image")
    assert job["status"] == "failed"
    assert job["error"]["code"] == "invalid_input"
    assert "corrupt" in job["error"]["message"]
    # Under `auto` the same file gets a partial result and a warning instead.
    job = _done(server, broken)
    assert job["status"] == "done"
    assert job["result"]["inspect"]["detected_type"] == "image/png"
    assert "image" not in job["result"]
    assert job["warnings"][0]["processor"] == "image"


def test_processors_route_lists_each_with_a_description(server: Server) -> None:
    listed = {p["name"]: p for p in httpx.get(f"{server.url}/processors").json()}
    assert {"inspect", "image", "pdf", "text", "csv", "json", "archive", "checksums"} <= set(listed)
    assert all(p["description"] for p in listed.values())


@pytest.fixture(scope="module")
def plugin_server(
    tmp_path_factory: pytest.TempPathFactory, backend: str, plugins_path: Path
) -> Iterator[Server]:
    """A server with the example plugin and the misbehaving test plugins installed."""
    flaky = tmp_path_factory.mktemp("flaky")
    env = {
        "PYTHONPATH": str(plugins_path),
        "FLAKY_DIR": str(flaky),
        "HOPPER_JOB_TIMEOUT": "3",
        "HOPPER_JOB_MEMORY_BYTES": str(768 * 1024 * 1024),
        "HOPPER_MAX_RETRIES": "3",
        "HOPPER_SWEEP_INTERVAL": "1",  # celery: a job killed at the hard limit is failed by a sweep
    }
    srv = Server(data_dir=tmp_path_factory.mktemp("plug") / "data", env=env).start()
    yield srv
    srv.stop()


def test_example_plugin_is_found_and_runs(plugin_server: Server, tmp_path: Path) -> None:
    names = {p["name"] for p in httpx.get(f"{plugin_server.url}/processors").json()}
    assert "wordfreq" in names
    path = tmp_path / "words.txt"
    path.write_text("apple banana apple cherry apple banana\n")
    job = _done(plugin_server, path)  # auto picks the plugin for text files
    assert "wordfreq" in job["processors"]
    assert job["result"]["wordfreq"]["top"][0] == {"word": "apple", "count": 3}
    assert job["versions"]["wordfreq"] == "1.0.0"
    assert any(a["name"] == "wordfreq.csv" for a in job["artifacts"])


@pytest.mark.parametrize(
    ("plugin", "code"),
    [("sleepy", "timeout"), ("stubborn", "timeout"), ("hungry", "memory"), ("crasher", "crashed")],
)
def test_misbehaving_jobs_fail_alone_and_the_service_lives_on(
    plugin_server: Server, sample: Path, plugin: str, code: str
) -> None:
    job = _done(plugin_server, sample, plugin)
    assert job["status"] == "failed"
    assert job["error"]["code"] == code, job["error"]
    assert job["error"]["message"]
    after = _done(plugin_server, sample, "inspect,checksums")  # a fresh worker takes over
    assert after["status"] == "done"


def test_transient_errors_are_retried_with_backoff(plugin_server: Server, sample: Path) -> None:
    job = _done(plugin_server, sample, "flaky")
    assert job["status"] == "done", job
    assert job["attempts"] == 3
    assert job["result"]["flaky"]["attempts"] == 3
    assert len(job["warnings"]) == 2
