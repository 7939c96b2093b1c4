"""The watch folder (HOPPER_WATCH_DIR) against a real server: a file that settles there
becomes a job through the upload's commit step and leaves the folder; one that cannot be
taken goes to rejected/ with a reason file; with several processes exactly one watches."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SMALL_LIMIT
from tests.helpers import Server, sha256_of, wait_until
from tests.integration.test_multiprocess import _flock_holders, _server_workers

SETTLE_S = 1.0


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """One server watching `inbox`, with a 1 MiB limit."""
    root = tmp_path_factory.mktemp("watch")
    inbox = root / "inbox"
    server = Server(root / "data", env=_watch_env(inbox, HOPPER_MAX_UPLOAD_BYTES=SMALL_LIMIT))
    server.start()
    yield server, inbox
    server.stop()


def _watch_env(inbox: Path, **more: object) -> dict[str, str]:
    env = {"HOPPER_WATCH_DIR": str(inbox), "HOPPER_WATCH_SETTLE": str(SETTLE_S)}
    return env | {name: str(value) for name, value in more.items()}


def jobs_named(server: Server, filename: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.url}/jobs", headers={"Accept": "application/json"}, timeout=10)
    assert response.status_code == 200, response.text
    return [job for job in response.json()["jobs"] if job["filename"] == filename]


def the_job(server: Server, filename: str, timeout_s: float = 20.0) -> dict[str, Any]:
    """The one job made of `filename`, once it is finished."""
    found = wait_until(lambda: jobs_named(server, filename), lambda jobs: len(jobs) > 0, timeout_s)
    assert len(found) == 1, found
    return server.wait_finished(found[0]["id"])


def move_in(tmp_path: Path, inbox: Path, name: str, data: bytes) -> None:
    """Written elsewhere, then renamed into the folder: how a careful writer delivers."""
    staged = tmp_path / name
    staged.write_bytes(data)
    staged.rename(inbox / name)


def test_a_file_moved_in_becomes_a_job_that_finishes(
    watched: tuple[Server, Path], tmp_path: Path
) -> None:
    server, inbox = watched
    data = b"name,count\napples,3\npears,5\n"
    move_in(tmp_path, inbox, "fruit.csv", data)
    job = the_job(server, "fruit.csv")
    assert job["status"] == "done" and job["result"]["csv"]["rows"] == 2, job
    assert (job["size"], job["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert (job["content_type"], job["owner"]) == ("text/csv", None)
    assert sha256_of(server.data_dir / "files" / job["id"]) == job["sha256"]
    assert not (inbox / "fruit.csv").exists()
    assert not (inbox / "rejected" / "fruit.csv").exists()
    assert server.leftovers() == []
    assert '"message": "watch file taken"' in server.log()


def test_a_file_written_slowly_in_place_is_taken_only_when_complete(
    watched: tuple[Server, Path],
) -> None:
    server, inbox = watched
    pieces = [os.urandom(40_000) for _ in range(6)]
    with (inbox / "slow.bin").open("wb") as f:
        for piece in pieces:
            f.write(piece)
            f.flush()
            assert jobs_named(server, "slow.bin") == []  # still being written: not taken
            time.sleep(SETTLE_S / 10)  # the writer's pause, well under the settle time
    job = the_job(server, "slow.bin")
    whole = b"".join(pieces)
    assert (job["size"], job["sha256"]) == (len(whole), hashlib.sha256(whole).hexdigest())
    assert (server.data_dir / "files" / job["id"]).read_bytes() == whole
    assert not (inbox / "slow.bin").exists()
    assert server.leftovers() == []


def test_a_file_over_the_limit_goes_to_rejected_with_its_reason(
    watched: tuple[Server, Path], tmp_path: Path
) -> None:
    server, inbox = watched
    rejected = inbox / "rejected"
    for stored_as in ("huge.bin", "huge-1.bin"):  # a second one never overwrites the first
        move_in(tmp_path, inbox, "huge.bin", b"x" * (SMALL_LIMIT + 1))
        reason_path = rejected / f"{stored_as}.reason.json"
        wait_until(reason_path.exists, bool)
        reason = json.loads(reason_path.read_text())
        assert (reason["file"], reason["status"]) == ("huge.bin", 413), reason
        assert reason["detail"] == (
            f"The upload is {SMALL_LIMIT + 1:,} bytes; the limit is {SMALL_LIMIT:,} bytes "
            "(HOPPER_MAX_UPLOAD_BYTES)."
        )
        assert (rejected / stored_as).stat().st_size == SMALL_LIMIT + 1
        assert not (inbox / "huge.bin").exists()
    move_in(tmp_path, inbox, "exact.bin", b"y" * SMALL_LIMIT)  # the limit itself fits
    assert the_job(server, "exact.bin")["size"] == SMALL_LIMIT
    assert jobs_named(server, "huge.bin") == []
    assert sorted(p.name for p in rejected.iterdir()) == [
        "huge-1.bin",
        "huge-1.bin.reason.json",
        "huge.bin",
        "huge.bin.reason.json",
    ]
    assert server.leftovers() == []
    assert '"message": "watch file rejected"' in server.log()


def test_hidden_partial_and_sub_folder_files_stay_and_a_link_is_rejected(
    watched: tuple[Server, Path], tmp_path: Path
) -> None:
    server, inbox = watched
    ignored = [inbox / ".hidden.txt", inbox / "movie.mp4.part", inbox / "page.crdownload"]
    (inbox / "sub").mkdir()
    ignored.append(inbox / "sub" / "inner.txt")
    for path in ignored:
        path.write_bytes(b"not yet")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"the server can read this; the folder's writers may not")
    (inbox / "link.txt").symlink_to(secret)
    move_in(tmp_path, inbox, "after.txt", b"written after the others")
    assert the_job(server, "after.txt")["status"] == "done"  # the others were seen too
    reason_path = inbox / "rejected" / "link.txt.reason.json"
    wait_until(reason_path.exists, bool)
    reason = json.loads(reason_path.read_text())
    assert reason["status"] == 400 and "symbolic link" in reason["detail"], reason
    assert (inbox / "rejected" / "link.txt").is_symlink() and secret.exists()
    for path in ignored:
        assert path.read_bytes() == b"not yet"
        assert jobs_named(server, path.name) == []
    assert jobs_named(server, "link.txt") == []
    for path in ignored:
        path.unlink()
    assert server.leftovers() == []


def test_a_name_that_is_not_utf8_is_sanitised_for_the_job(
    watched: tuple[Server, Path], tmp_path: Path
) -> None:
    server, inbox = watched
    name = os.fsdecode(b"caf\xe9\x1b[31m report.txt")  # Latin-1 and a terminal escape
    move_in(tmp_path, inbox, name, b"bonjour")
    job = the_job(server, "caf\ufffd[31m report.txt")
    assert job["status"] == "done" and job["sha256"] == hashlib.sha256(b"bonjour").hexdigest()
    assert list(inbox.glob("caf*")) == []


def test_files_present_before_start_are_taken(tmp_path: Path, servers: list[Server]) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    files = {f"early-{n}.txt": os.urandom(1000 + n) for n in range(3)}
    for name, data in files.items():
        (inbox / name).write_bytes(data)
    server = Server(tmp_path / "data", env=_watch_env(inbox)).start()
    servers.append(server)
    for name, data in files.items():
        assert the_job(server, name)["sha256"] == hashlib.sha256(data).hexdigest()
    assert list(inbox.iterdir()) == []
    assert server.leftovers() == []


def test_a_full_queue_leaves_the_file_until_there_is_room(
    tmp_path: Path, servers: list[Server], plugins_path: Path
) -> None:
    """Over HOPPER_MAX_QUEUE the file waits in the folder (it is not rejected), and is
    taken once the queue has room."""
    inbox = tmp_path / "inbox"
    env = _watch_env(
        inbox,
        PYTHONPATH=plugins_path,
        HOPPER_MAX_QUEUE=1,
        HOPPER_WORKERS=1,
        HOPPER_WATCH_PROCESSORS="ticker",  # runs as many seconds as the file says
    )
    server = Server(tmp_path / "data", env=env).start()
    servers.append(server)
    move_in(tmp_path, inbox, "long.txt", b"60")
    long_id = wait_until(lambda: jobs_named(server, "long.txt"), bool)[0]["id"]
    wait_until(lambda: server.status(long_id), lambda j: j["status"] == "processing")
    move_in(tmp_path, inbox, "short.txt", b"0.1")
    wait_until(server.log, lambda log: "HOPPER_MAX_QUEUE" in log)
    assert (inbox / "short.txt").read_bytes() == b"0.1"  # waiting, not taken or rejected
    assert not (inbox / "rejected").exists()
    assert jobs_named(server, "short.txt") == []
    cancel = httpx.post(f"{server.url}/jobs/{long_id}/cancel", timeout=10)
    assert cancel.status_code == 202, cancel.text
    job = the_job(server, "short.txt", timeout_s=30)
    assert job["status"] == "done" and job["processors"] == ["ticker"], job
    assert not (inbox / "short.txt").exists()
    assert server.wait_finished(long_id)["status"] == "cancelled"
    assert server.leftovers() == []


def test_with_two_workers_one_watches_each_file_is_one_job_and_another_takes_over(
    tmp_path: Path, servers: list[Server]
) -> None:
    inbox = tmp_path / "inbox"
    data_dir = tmp_path / "data"
    server = Server(data_dir, env=_watch_env(inbox), args=["--workers", "2"]).start()
    servers.append(server)
    workers = wait_until(lambda: _server_workers(server), lambda w: len(w) == 2)
    lock = data_dir / "watch.lock"
    holders = wait_until(lambda: _flock_holders(lock), lambda h: len(h) == 1)
    assert holders[0] in workers

    def wave(prefix: str, count: int) -> None:
        files = {f"{prefix}-{n}.bin": os.urandom(2000 + n) for n in range(count)}
        for name, data in files.items():
            move_in(tmp_path, inbox, name, data)
        for name, data in files.items():
            assert the_job(server, name)["sha256"] == hashlib.sha256(data).hexdigest()
        assert list(inbox.iterdir()) == []

    wave("first", 12)
    assert _flock_holders(lock) == holders
    os.kill(holders[0], signal.SIGKILL)
    new_holders = wait_until(
        lambda: _flock_holders(lock), lambda h: len(h) == 1 and h != holders, timeout_s=20
    )
    assert new_holders[0] != holders[0]
    wave("second", 12)
    for name in [f"{p}-{n}.bin" for p in ("first", "second") for n in range(12)]:
        assert len(jobs_named(server, name)) == 1, name  # none taken twice
    assert server.leftovers() == []
