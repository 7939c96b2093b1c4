"""The `hopper` client commands, run as a user runs them (a subprocess of the installed
console script) against a real server: exit codes, standard output, files written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.resumes import ResumeKey, Resumes
from tests import samples
from tests.helpers import ROOT, Server, free_port, sha256_of, wait_until
from tests.keys import HOPPER, make_key

DONE, FAILED, ERROR, CANCELLED, TIMED_OUT = 0, 1, 2, 3, 4


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, backend: str, plugins_path: Path
) -> Iterator[Server]:
    """With the test plugins, for `ticker` jobs that run as long as the file says."""
    data = tmp_path_factory.mktemp("cli") / "data"
    server = Server(data_dir=data, env={"PYTHONPATH": str(plugins_path), "HOPPER_WORKERS": "2"})
    server.start()
    yield server
    server.stop()


def hopper(server: Server, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if k != "HOPPER_KEY"}
    full_env = {**inherited, "HOPPER_URL": server.url, **env}
    return subprocess.run(
        [str(HOPPER), *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120
    )


def _lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return done.stdout.splitlines()


def _text(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_upload_wait_exits_0_and_prints_the_id(srv: Server, tmp_path: Path) -> None:
    path = _text(tmp_path, "notes.txt", b"one two three\n")
    done = hopper(srv, "upload", str(path), "--wait")
    assert done.returncode == DONE, done.stderr
    (job_id,) = _lines(done)
    job = srv.status(job_id)
    assert job["status"] == "done" and job["sha256"] == sha256_of(path)
    assert (job["filename"], job["content_type"]) == ("notes.txt", "text/plain")
    assert f"{job_id} done" in done.stderr


def test_upload_json_prints_one_document_per_file(srv: Server, tmp_path: Path) -> None:
    paths = [_text(tmp_path, f"{n}.txt", n.encode()) for n in ("a", "b")]
    done = hopper(srv, "upload", *map(str, paths), "--follow", "--json", "--processors", "inspect")
    assert done.returncode == DONE, done.stderr
    jobs = [json.loads(line) for line in _lines(done)]
    assert [j["filename"] for j in jobs] == ["a.txt", "b.txt"]
    assert all(j["status"] == "done" and j["processors"] == ["inspect"] for j in jobs)
    assert all(f"{j['id']} done" in done.stderr for j in jobs)


def test_upload_without_wait_exits_0_at_once(srv: Server, tmp_path: Path) -> None:
    done = hopper(srv, "upload", str(_text(tmp_path, "q.txt", b"q")), "--json")
    assert done.returncode == DONE, done.stderr
    assert json.loads(done.stdout)["status"] in ("queued", "processing", "done")


def test_a_failed_job_exits_1_with_the_reason(srv: Server, tmp_path: Path) -> None:
    path = _text(tmp_path, "not-an-image.png", b"plain text, not a PNG")
    done = hopper(srv, "upload", str(path), "--wait", "--processors", "image")
    assert done.returncode == FAILED, done.stderr
    assert "failed: invalid_input" in done.stderr
    # Several files: the first that did not end done decides.
    good = _text(tmp_path, "ok.txt", b"fine")
    mixed = hopper(srv, "upload", str(good), str(path), "--wait", "--processors", "image")
    assert mixed.returncode == FAILED


def test_a_cancelled_job_exits_3(srv: Server, tmp_path: Path) -> None:
    path = _text(tmp_path, "sixty", b"60")  # ticker runs for 60 s
    env = {**os.environ, "HOPPER_URL": srv.url}
    cmd = [str(HOPPER), "upload", str(path), "--wait", "--processors", "ticker"]
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        job_id = proc.stdout.readline().decode().strip()  # printed as soon as it is uploaded
        srv_job = wait_until(lambda: srv.status(job_id), lambda j: j["status"] == "processing")
        assert srv_job["id"] == job_id
        cancel = httpx.post(f"{srv.url}/jobs/{job_id}/cancel", timeout=10)
        assert cancel.status_code in (200, 202), cancel.text
        assert proc.wait(60) == CANCELLED
    assert srv.status(job_id)["status"] == "cancelled"


def test_timeout_exits_4_and_rm_stops_and_deletes_the_job(srv: Server, tmp_path: Path) -> None:
    path = _text(tmp_path, "slow", b"60")
    done = hopper(srv, "upload", str(path), "--wait", "--processors", "ticker", "--timeout", "1")
    assert done.returncode == TIMED_OUT, done.stderr
    assert "gave up waiting after 1 s" in done.stderr
    (job_id,) = _lines(done)
    assert srv.status(job_id)["status"] in ("queued", "processing")
    removed = hopper(srv, "rm", job_id)
    assert removed.returncode == DONE, removed.stderr
    gone = wait_until(
        lambda: httpx.get(f"{srv.url}/status/{job_id}"), lambda r: r.status_code == 404
    )
    assert gone.status_code == 404


def test_download_saves_the_job_document_and_its_artifacts(srv: Server, tmp_path: Path) -> None:
    image = samples.png(tmp_path / "photo.png", size=(64, 48))
    out = tmp_path / "out"
    done = hopper(srv, "upload", str(image), "--download", str(out))
    assert done.returncode == DONE, done.stderr
    (job_id,) = _lines(done)
    folder = out / job_id
    job = json.loads((folder / "job.json").read_text())
    assert job["status"] == "done" and job["result"]["image"]["width"] == 64
    thumb = httpx.get(f"{srv.url}/jobs/{job_id}/artifacts/thumbnail.webp")
    assert (folder / "thumbnail.webp").read_bytes() == thumb.content
    assert sorted(p.name for p in folder.iterdir()) == ["job.json", "thumbnail.webp"]


def test_status_watch_ls_and_rm(srv: Server, tmp_path: Path) -> None:
    path = _text(tmp_path, "listed.txt", b"list me")
    (job_id,) = _lines(hopper(srv, "upload", str(path)))
    watched = hopper(srv, "watch", job_id, "--json")
    assert watched.returncode == DONE, watched.stderr
    assert json.loads(watched.stdout)["status"] == "done"
    status = hopper(srv, "status", job_id)
    assert status.returncode == DONE and json.loads(status.stdout)["id"] == job_id
    listing = hopper(srv, "ls")
    assert listing.returncode == DONE and listing.stdout.startswith("ID")
    row = next(line for line in _lines(listing) if line.startswith(job_id))
    assert row.split()[1:3] == ["done", "7"] and row.endswith("listed.txt")
    as_json = json.loads(_lines(hopper(srv, "ls", "--json"))[0])
    assert {"id", "status", "sha256"} <= set(as_json)
    removed = hopper(srv, "rm", job_id)
    assert removed.returncode == DONE and removed.stdout.strip() == f"Deleted {job_id}."
    for command in ("status", "watch", "rm"):
        missing = hopper(srv, command, job_id)
        assert missing.returncode == ERROR, (command, missing.stdout)
        assert "404" in missing.stderr


def test_watch_of_a_finished_failed_job_exits_1(srv: Server, tmp_path: Path) -> None:
    path = _text(tmp_path, "bad.png", b"nope")
    (job_id,) = _lines(hopper(srv, "upload", str(path), "--processors", "image", "--wait"))
    assert hopper(srv, "watch", job_id).returncode == FAILED


def test_usage_and_connection_errors_exit_2(srv: Server, tmp_path: Path) -> None:
    assert hopper(srv, "upload", str(tmp_path / "missing.bin")).returncode == ERROR
    dead = f"http://127.0.0.1:{free_port()}"
    done = hopper(srv, "upload", str(_text(tmp_path, "x", b"x")), HOPPER_URL=dead)
    assert done.returncode == ERROR and "Cannot reach Hopper" in done.stderr
    refused = hopper(srv, "upload", str(_text(tmp_path, "y", b"y")), "--processors", "nope")
    assert refused.returncode == ERROR and "400" in refused.stderr


def test_help_documents_the_exit_codes() -> None:
    done = subprocess.run([str(HOPPER), "upload", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "Exit codes: 0" in text and "4 --timeout" in text and "3 a job was cancelled" in text


def test_hopper_key_is_sent_to_a_server_with_keys(tmp_path: Path) -> None:
    data = tmp_path / "data"
    key = make_key(data, "cli")
    server = Server(data_dir=data, env={"HOPPER_AUTH": "keys"}).start()
    try:
        path = _text(tmp_path, "k.txt", b"keyed")
        done = hopper(server, "upload", str(path), "--wait", "--json", HOPPER_KEY=key)
        assert done.returncode == DONE, done.stderr
        job = json.loads(done.stdout)
        assert job["owner"] == key[4:14] and job["status"] == "done"
        assert hopper(server, "ls", HOPPER_KEY=key).stdout.count(job["id"]) == 1
        refused = hopper(server, "status", job["id"])
        assert refused.returncode == ERROR and "401" in refused.stderr
        assert "API key" in refused.stderr
    finally:
        server.stop()


def _peak_rss_kib(server: Server, path: Path) -> int:
    """The CLI's peak RSS while it uploads `path` (the only child of a small wrapper)."""
    wrapper = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:])\n"
        "assert done.returncode == 0\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    cmd = [sys.executable, "-c", wrapper, str(HOPPER), "upload", str(path), "--json"]
    env = {**os.environ, "HOPPER_URL": server.url}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=True)
    *docs, peak = done.stdout.splitlines()
    job: dict[str, Any] = json.loads(docs[0])
    assert job["size"] == path.stat().st_size
    return int(peak)


def test_a_200_mib_upload_keeps_the_clients_memory_flat(srv: Server, tmp_path: Path) -> None:
    small = _text(tmp_path, "small.bin", b"s" * 1024)
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        for i in range(200):
            f.write(bytes([i]) * (1 << 20))
    baseline, peak = _peak_rss_kib(srv, small), _peak_rss_kib(srv, big)
    assert peak - baseline < 32 * 1024, (baseline, peak)  # KiB: far below the file's 200 MiB


def test_hopper_serve_runs_the_server_with_extra_uvicorn_options(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "HOPPER_DATA_DIR": str(tmp_path / "data"), "PORT": str(port)}
    env["HOPPER_MIN_FREE_BYTES"] = str(16 << 20)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(HOPPER), "serve", "--log-level", "warning"], env=env, stdout=out, stderr=out
        )
    try:
        ready = wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2),
            lambda r: r.status_code == 200,
            timeout_s=60,
        )
        assert ready.json() == {"status": "ok"}
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"app.protocols:HttpToolsProtocol" in cmdline and b"--no-access-log" in cmdline
        assert cmdline[-3:-1] == [b"--log-level", b"warning"]
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_large_upload_resumes_after_the_server_is_killed_mid_way(tmp_path: Path) -> None:
    """From 64 MiB on the CLI uses tus (/files/): killed mid-upload and restarted on the
    same port and data dir, the server gets the rest, and the job has the whole file."""
    big = tmp_path / "resume.bin"
    with big.open("wb") as f:
        for i in range(160):
            f.write(bytes([i % 251]) * (1 << 20))
    data = tmp_path / "data"
    first = Server(data_dir=data).start()
    env = {**os.environ, "HOPPER_URL": first.url}
    cmd = [str(HOPPER), "upload", str(big), "--json", "--processors", "inspect"]
    try:
        with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            wait_until(
                lambda: [p.stat().st_size for p in (data / "files").iterdir()],
                lambda sizes: any(size > 16 << 20 for size in sizes),
                timeout_s=60,
                every_s=0.005,
            )
            first.kill()
            second = Server(data_dir=data, port=first.port).start()
            try:
                out, err = proc.communicate(timeout=180)
                assert proc.returncode == DONE, err.decode()
                job = json.loads(out)
                assert job["size"] == big.stat().st_size and job["sha256"] == sha256_of(big)
                assert (data / "files" / job["id"]).stat().st_size == big.stat().st_size
                assert second.wait_finished(job["id"], timeout_s=60)["status"] == "done"
                lines = [json.loads(x) for x in second.log().splitlines() if x.startswith("{")]
                asked = [x for x in lines if x.get("method") == "HEAD" and x.get("status") == 200]
                assert any(x.get("path", "").startswith("/files/") for x in asked), lines[-5:]
            finally:
                second.stop()
    finally:
        first.stop()


def _mib_file(path: Path, mib: int) -> Path:
    with path.open("wb") as f:
        for i in range(mib):
            f.write(bytes([i % 251]) * (1 << 20))
    return path


def _remembered(cache: Path) -> list[dict[str, Any]]:
    """The entries of the CLI's record of unfinished uploads (none before it exists)."""
    try:
        entries: list[dict[str, Any]] = json.loads((cache / "uploads.json").read_bytes())
    except FileNotFoundError:
        return []
    return entries


def _requests(server: Server, method: str, path: str) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in server.log().splitlines() if x.startswith("{")]
    return [x for x in lines if x.get("method") == method and x.get("path") == path]


def _tus_offset(server: Server, location: str) -> int:
    head = httpx.head(f"{server.url}{location}", headers={"Tus-Resumable": "1.0.0"}, timeout=10)
    assert head.status_code == 200, head.status_code
    return int(head.headers["upload-offset"])


def _under_way(srv: Server, cache: Path) -> tuple[dict[str, Any], str]:
    """Once a running `hopper upload` has remembered its tus upload and the server holds
    more than 8 MiB of it: what it remembered, and the upload's id."""
    (entry,) = wait_until(lambda: _remembered(cache), bool, timeout_s=60, every_s=0.005)
    upload_id: str = entry["location"].rsplit("/", 1)[1]
    wait_until(
        lambda: (srv.data_dir / "files" / upload_id).stat().st_size,
        lambda stored: stored > 8 << 20,
        timeout_s=60,
        every_s=0.005,
    )
    return entry, upload_id


def test_an_upload_killed_mid_way_is_taken_up_by_the_next_run(srv: Server, tmp_path: Path) -> None:
    """`hopper upload` SIGKILLed mid-way (a closed terminal, a lost machine): the next run
    for the same file asks the server where the upload stands and sends only the rest."""
    big = _mib_file(tmp_path / "big.bin", 96)
    size, cache = big.stat().st_size, tmp_path / "cache"
    env = {**os.environ, "HOPPER_URL": srv.url, "HOPPER_CACHE_DIR": str(cache)}
    cmd = [str(HOPPER), "upload", str(big), "--json", "--processors", "inspect"]
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as first:
        entry, upload_id = _under_way(srv, cache)
        first.kill()
        assert first.wait(30) == -9
    assert entry["location"] == f"/files/{upload_id}" and entry["size"] == size
    # Once the server has seen the client go, it has kept what arrived.
    offset = wait_until(lambda: _tus_offset(srv, entry["location"]), lambda n: n > 0)
    assert offset < size, "the first run finished before it was killed"
    second = hopper(
        srv, "upload", str(big), "--json", "--processors", "inspect", HOPPER_CACHE_DIR=str(cache)
    )
    assert second.returncode == DONE, second.stderr
    assert f"big.bin: resuming at {offset} of {size} bytes" in second.stderr
    job = json.loads(second.stdout)
    assert job["id"] == upload_id  # the same upload, not a new one from byte 0
    assert job["size"] == size and job["sha256"] == sha256_of(big)
    assert srv.wait_finished(upload_id)["status"] == "done"
    assert _remembered(cache) == []  # done: nothing left to resume
    patches = _requests(srv, "PATCH", entry["location"])
    assert [p["status"] for p in patches][-1] == 204 and len(patches) == 2, patches


def test_an_upload_the_server_no_longer_has_starts_over(srv: Server, tmp_path: Path) -> None:
    """A remembered upload the server does not know (expired, deleted) is not resumed; a
    remembered one that is already a job is that job. HOPPER_RESUMABLE_MIN_BYTES sends
    this small file by tus."""
    path = _mib_file(tmp_path / "gone.bin", 2)
    cache, gone = tmp_path / "cache", "/files/AAAAAAAAAAAAAAAAAAAAAA"
    key = ResumeKey.of(srv.url, path, None)
    Resumes(cache).remember(key, gone)
    env = {"HOPPER_CACHE_DIR": str(cache), "HOPPER_RESUMABLE_MIN_BYTES": str(1 << 20)}
    done = hopper(srv, "upload", str(path), "--json", **env)
    assert done.returncode == DONE, done.stderr
    assert "resuming" not in done.stderr
    job = json.loads(done.stdout)
    assert job["sha256"] == sha256_of(path) and f"/files/{job['id']}" != gone
    assert [r["status"] for r in _requests(srv, "HEAD", gone)] == [404]
    assert _remembered(cache) == []
    # Killed after its last byte but before it forgot the upload: the next run finds a job.
    Resumes(cache).remember(key, f"/files/{job['id']}")
    again = hopper(srv, "upload", str(path), "--json", **env)
    assert again.returncode == DONE, again.stderr
    assert f"gone.bin: resuming at {2 << 20} of {2 << 20} bytes" in again.stderr
    assert json.loads(again.stdout)["id"] == job["id"]
    assert _remembered(cache) == []


def test_a_file_changed_while_it_is_sent_loses_its_job(srv: Server, tmp_path: Path) -> None:
    """Appended to mid-upload (a growing log, say): the upload still ends, but its job is
    deleted and the command says why."""
    big = _mib_file(tmp_path / "growing.bin", 96)
    cache = tmp_path / "cache"
    env = {**os.environ, "HOPPER_URL": srv.url, "HOPPER_CACHE_DIR": str(cache)}
    cmd = [str(HOPPER), "upload", str(big), "--processors", "inspect"]
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        _, upload_id = _under_way(srv, cache)
        with big.open("ab") as f:
            f.write(b"one more line\n")
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == ERROR, err.decode()
    assert "growing.bin changed while it was uploaded; its job was deleted" in err.decode()
    assert out == b""  # no job id: there is no job
    gone = wait_until(
        lambda: httpx.get(f"{srv.url}/status/{upload_id}", timeout=10),
        lambda r: r.status_code == 404,
    )
    assert gone.status_code == 404
