"""HOPPER_DEDUPE on a real server: the same bytes again (curl -F, curl -T, tus) get the
first job's results at once, under a new id that names it; other processors, another
owner, a failed original, or dedupe off are processed anew; the duplicate outlives the
original; its webhook is sent; nothing is left behind."""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tusclient.client import TusClient

from tests import samples
from tests.helpers import Server, curl_put, curl_upload, wait_until
from tests.keys import HOPPER, bearer, make_key
from tests.webhook_receiver import Receiver

SECRET = "whsec-dedupe-7c1e"  # noqa: S105 - a test server's, made up


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver(SECRET.encode()).start()
    yield rec
    rec.stop()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Server]:
    env = {
        "HOPPER_DEDUPE": "true",
        "HOPPER_WEBHOOK_SECRET": SECRET,
        "HOPPER_WEBHOOK_ALLOWED_HOSTS": f"127.0.0.1:{receiver.port}",
    }
    server = Server(data_dir=tmp_path_factory.mktemp("dedupe") / "data", env=env).start()
    yield server
    server.stop()


def _image(tmp_path: Path, width: int, name: str = "photo.png") -> Path:
    """A PNG of its own (its width makes its bytes): `auto` runs image, with a thumbnail."""
    return samples.png(tmp_path / name, size=(width, 48))


def _done(server: Server, job_id: str, key: str | None = None) -> dict[str, Any]:
    def fetch() -> dict[str, Any]:
        headers = {} if key is None else bearer(key)
        response = httpx.get(f"{server.url}/status/{job_id}", headers=headers, timeout=10)
        body: dict[str, Any] = response.json()
        return body

    job = wait_until(fetch, lambda j: j.get("status") in ("done", "failed", "cancelled"))
    assert job["status"] == "done", job
    return job


def _upload(server: Server, path: Path, *extra: str) -> dict[str, Any]:
    code, headers, job = curl_upload(f"{server.url}/uploads", path, *extra)
    assert code == 202, job
    assert headers["location"] == f"/status/{job['id']}"
    return dict(job)


def _started(server: Server) -> set[str]:
    """Jobs whose processors ran, from the server's log (or its Celery workers')."""
    log = server.log() + server.worker_log()
    lines = [json.loads(x) for x in log.splitlines() if x.startswith("{")]
    return {x["job_id"] for x in lines if x.get("message") == "job started"}


def _without_urls(job: dict[str, Any]) -> str:
    return json.dumps(job["result"]).replace(job["id"], "<id>")


def _deduplicated(server: Server) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith("hopper_jobs_deduplicated_total "):
            return float(line.split()[1])
    raise AssertionError("no hopper_jobs_deduplicated_total in /metrics")


def _digest_entries(server: Server) -> list[Path]:
    return sorted(p for p in (server.data_dir / "digests").rglob("*") if p.is_file())


def test_the_same_bytes_again_get_the_first_jobs_results_without_running(
    srv: Server, tmp_path: Path
) -> None:
    image = _image(tmp_path, 61)
    first = _done(srv, _upload(srv, image)["id"])
    counted = _deduplicated(srv)
    assert first["duplicate_of"] is None and first["artifacts"], first
    again = tmp_path / "renamed.png"
    again.write_bytes(image.read_bytes())
    answered = _upload(srv, again)
    # Done in the 202 itself: nothing is left to run.
    assert answered["id"] != first["id"] and answered["status"] == "done", answered
    dup = srv.status(answered["id"])
    assert dup["duplicate_of"] == first["id"] and dup["filename"] == "renamed.png"
    assert (dup["sha256"], dup["processors"]) == (first["sha256"], first["processors"])
    assert (dup["progress"], dup["attempts"]) == (1.0, 0)
    assert _without_urls(dup) == _without_urls(first)
    assert dup["id"] not in _started(srv) and first["id"] in _started(srv)
    for theirs, mine in zip(first["artifacts"], dup["artifacts"], strict=True):
        assert mine["url"] == theirs["url"].replace(first["id"], dup["id"])
        served = httpx.get(f"{srv.url}{mine['url']}")
        assert served.status_code == 200
        assert served.content == httpx.get(f"{srv.url}{theirs['url']}").content
    page = httpx.get(f"{srv.url}/jobs/{dup['id']}", headers={"Accept": "text/html"})
    assert f'href="/jobs/{first["id"]}"' in page.text
    assert _deduplicated(srv) == counted + 1
    assert srv.leftovers() == []


def test_the_same_pipeline_spelled_out_is_a_duplicate_other_processors_are_not(
    srv: Server, tmp_path: Path
) -> None:
    image = _image(tmp_path, 62)
    first = _done(srv, _upload(srv, image)["id"])
    spelled = ",".join(first["processors"])  # what `auto` expanded to
    assert _upload(srv, image, "-F", f"processors={spelled}")["duplicate_of"] == first["id"]
    other = _upload(srv, image, "-F", "processors=inspect")
    assert other["status"] == "queued" and other["duplicate_of"] is None
    assert _done(srv, other["id"])["attempts"] == 1
    # That job is now the one for `inspect` alone: the next such upload is its duplicate.
    assert _upload(srv, image, "-F", "processors=inspect")["duplicate_of"] == other["id"]


def test_raw_put_and_tus_uploads_are_deduplicated_too(srv: Server, tmp_path: Path) -> None:
    image = _image(tmp_path, 63)
    first = _done(srv, _upload(srv, image)["id"])
    code, _, raw = curl_put(f"{srv.url}/uploads/raw?filename=raw.png", image)
    assert code == 202 and raw["duplicate_of"] == first["id"], raw
    client = TusClient(f"{srv.url}/files/")
    uploader = client.uploader(
        file_stream=io.BytesIO(image.read_bytes()),
        chunk_size=1024,  # several PATCHes: the job is made by the last one
        metadata={"filename": "tus.png"},
    )
    uploader.upload()
    assert isinstance(uploader.url, str)
    tus_id = uploader.url.rstrip("/").rsplit("/", 1)[1]
    tus_job = srv.status(tus_id)
    assert (tus_job["status"], tus_job["duplicate_of"]) == ("done", first["id"]), tus_job
    assert httpx.get(f"{srv.url}{tus_job['artifacts'][0]['url']}").status_code == 200
    assert {raw["id"], tus_id}.isdisjoint(_started(srv))
    assert srv.leftovers() == []


def test_deleting_the_original_leaves_the_duplicate_whole(srv: Server, tmp_path: Path) -> None:
    image = _image(tmp_path, 64)
    first = _done(srv, _upload(srv, image)["id"])
    entries = set(_digest_entries(srv))
    dup = _upload(srv, image)
    assert dup["duplicate_of"] == first["id"]
    assert set(_digest_entries(srv)) == entries  # a duplicate is never the one named
    thumb = dup["artifacts"][0]["url"]
    before = httpx.get(f"{srv.url}{thumb}").content
    assert httpx.delete(f"{srv.url}/jobs/{first['id']}").status_code == 204
    assert httpx.get(f"{srv.url}/status/{first['id']}").status_code == 404
    assert httpx.get(f"{srv.url}{thumb}").content == before
    assert srv.status(dup["id"])["duplicate_of"] == first["id"]  # a name, not a link
    assert len(_digest_entries(srv)) == len(entries) - 1  # the original's entry went with it
    assert srv.leftovers() == []
    # With nothing to reuse, the same bytes are processed anew.
    third = _upload(srv, image)
    assert third["duplicate_of"] is None and _done(srv, third["id"])["attempts"] == 1
    assert httpx.delete(f"{srv.url}/jobs/{dup['id']}").status_code == 204
    assert srv.status(third["id"])["artifacts"] and srv.leftovers() == []


def test_a_failed_job_or_a_stale_entry_is_never_reused(srv: Server, tmp_path: Path) -> None:
    broken = samples.truncated(_image(tmp_path, 65), tmp_path / "broken.png")
    failed = srv.wait_finished(_upload(srv, broken, "-F", "processors=image")["id"])
    assert failed["status"] == "failed", failed
    again = _upload(srv, broken, "-F", "processors=image")
    assert again["duplicate_of"] is None and srv.wait_finished(again["id"])["status"] == "failed"
    image = _image(tmp_path, 66)
    first = _done(srv, _upload(srv, image)["id"])
    entry = next(p for p in _digest_entries(srv) if p.parent.name == first["sha256"])
    entry.write_text("AAAAAAAAAAAAAAAAAAAAAA")  # names no job, as after a crash mid-delete
    anew = _upload(srv, image)
    assert anew["duplicate_of"] is None and _done(srv, anew["id"])["attempts"] == 1
    assert entry.read_text() == anew["id"]  # the entry is the new job's now
    assert srv.leftovers() == []


def test_the_duplicates_webhook_is_sent(srv: Server, receiver: Receiver, tmp_path: Path) -> None:
    image = _image(tmp_path, 67)
    first = _done(srv, _upload(srv, image)["id"])
    dup = _upload(srv, image, "-F", f"callback_url={receiver.url('/dup')}")
    assert dup["duplicate_of"] == first["id"]
    [delivery] = wait_until(lambda: receiver.deliveries("/dup"), lambda d: len(d) == 1)
    sent = json.loads(delivery.body)
    assert delivery.verified and (sent["id"], sent["status"]) == (dup["id"], "done")
    assert sent["duplicate_of"] == first["id"]
    hook = wait_until(lambda: srv.status(dup["id"])["webhook"], lambda w: w["state"] != "pending")
    assert hook["state"] == "delivered"


def test_another_owners_upload_is_processed_anew(tmp_path: Path) -> None:
    data = tmp_path / "data"
    alice, bob = make_key(data, "alice"), make_key(data, "bob")
    env = {"HOPPER_DEDUPE": "true", "HOPPER_AUTH": "keys"}
    server = Server(data_dir=data, env=env).start()
    try:
        image = _image(tmp_path, 68)
        as_alice = ("-H", f"Authorization: Bearer {alice}")
        first = _done(server, _upload(server, image, *as_alice)["id"], alice)
        theirs = _upload(server, image, "-H", f"Authorization: Bearer {bob}")
        assert theirs["duplicate_of"] is None and theirs["status"] == "queued"
        assert _done(server, theirs["id"], bob)["attempts"] == 1
        assert _upload(server, image, *as_alice)["duplicate_of"] == first["id"]
        assert server.leftovers() == []
    finally:
        server.stop()


def test_with_dedupe_off_the_same_bytes_are_processed_again(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "same.bin"
    path.write_bytes(os.urandom(4096))
    first = _done(server, _upload(server, path, "-F", "processors=inspect")["id"])
    second = _upload(server, path, "-F", "processors=inspect")
    assert second["status"] == "queued" and second["duplicate_of"] is None
    assert _done(server, second["id"])["attempts"] == 1 == first["attempts"]
    assert not any((server.data_dir / "digests").iterdir())


def test_hopper_upload_says_which_job_a_duplicate_is_of(srv: Server, tmp_path: Path) -> None:
    image = _image(tmp_path, 69)
    env = {**os.environ, "HOPPER_URL": srv.url}
    env.pop("HOPPER_KEY", None)

    def upload() -> subprocess.CompletedProcess[str]:
        cmd = [str(HOPPER), "upload", str(image), "--wait"]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)

    first, second = upload(), upload()
    assert first.returncode == second.returncode == 0, (first.stderr, second.stderr)
    (first_id,), (second_id,) = first.stdout.split(), second.stdout.split()
    assert "duplicate of" not in first.stderr
    assert f"{second_id} done (duplicate of {first_id})" in second.stderr
