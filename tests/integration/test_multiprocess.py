"""Many processes, one data directory: `uvicorn --workers 4` and separate uvicorn processes.

Every job runs exactly once (the `tally` test processor logs each run), status is right
whichever process answers, restart recovery never takes a job a live process owns, the
sweeper runs in one process at a time, and a SIGKILL of one process loses no job.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import Server, wait_until
from tests.load import Load, children, cmdline, descendants, run_pids, runs_of, status_of

# Leases, --workers pools and one sweeper among server processes: the local backend's.
# The celery backend's many-process tests are in test_celery.py.
pytestmark = pytest.mark.local_only

FINISHED = ("done", "failed", "cancelled")
log = logging.getLogger("tests.multiprocess")


def _server_workers(server: Server) -> list[int]:
    """The uvicorn worker processes under a `--workers N` supervisor."""
    assert server.proc is not None
    return [p for p in children(server.proc.pid) if "spawn_main" in cmdline(p)]


def _flock_holders(path: Path) -> list[int]:
    """Pids holding an flock on `path`, from /proc/locks."""
    try:
        inode = path.stat().st_ino
    except FileNotFoundError:
        return []  # before the first sweep
    holders = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "FLOCK" in fields and "->" not in fields:  # a holder, not a waiter
            where = fields[fields.index("FLOCK") + 3 :]
            pid, device_inode = int(where[0]), where[1]
            if device_inode.rsplit(":", 1)[-1] == str(inode):
                holders.append(pid)
    return holders


# --- load ------------------------------------------------------------------------------


def _wait_all_finished(
    acked: dict[str, str], url_for: Callable[[str], str], timeout_s: float
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    finished: dict[str, dict[str, Any]] = {}
    for job_id in acked:
        left = max(deadline - time.monotonic(), 1.0)
        finished[job_id] = wait_until(
            lambda: status_of(url_for(job_id), job_id),  # noqa: B023
            lambda j: j["status"] in FINISHED,
            timeout_s=left,
            every_s=0.05,
        )
    return finished


def _follow(url: str, acked: dict[str, str], timeout_s: float) -> dict[str, dict[str, Any]]:
    """Poll every job in turn (each within a fraction of a second) until each was seen
    finished: with a short retention a finished job may be gone soon after."""
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while len(seen) < len(acked):
        assert time.monotonic() < deadline, f"not finished: {set(acked) - set(seen)}"
        for job_id in [j for j in acked if j not in seen]:
            job = status_of(url, job_id)  # 404 here: gone before it was seen finished
            if job["status"] in FINISHED:
                seen[job_id] = job
        time.sleep(0.05)
    return seen


def _assert_done_right(jobs: dict[str, dict[str, Any]], acked: dict[str, str]) -> None:
    for job_id, job in jobs.items():
        assert job["status"] == "done", job
        assert job["sha256"] == acked[job_id]
        assert job["result"]["tally"]["sha256"] == acked[job_id]  # what the processor read


def _assert_records_whole(data: Path) -> None:
    for record in (data / "jobs").glob("*.json"):
        json.loads(record.read_bytes())  # never torn
    assert not list((data / "jobs").glob(".*.tmp"))


def _clean_log(log: str) -> None:
    for bad in ("Traceback", "ERROR", "sweep failed", "still holds it"):
        assert bad not in log, log[-4000:]


@pytest.fixture
def env(plugins_path: Path, tmp_path: Path) -> dict[str, str]:
    return {
        "PYTHONPATH": str(plugins_path),
        "TALLY_LOG": str(tmp_path / "tally.log"),
        "TALLY_SLEEP": "0.05",
        "HOPPER_WORKERS": "1",  # per server process: four processes, four job workers
    }


# --- tests -----------------------------------------------------------------------------


def test_workers_4_run_every_job_exactly_once(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    data = tmp_path / "data"
    server = Server(data, env=env, args=["--workers", "4"]).start()
    servers.append(server)
    load = Load([server.url], seed=1)
    for thread in load.run(threads=6, per_thread=25, stop=threading.Event()):
        thread.join(120)
    assert not load.errors
    assert len(load.acked) == 150

    jobs = _wait_all_finished(load.acked, lambda _: server.url, timeout_s=90)
    _assert_done_right(jobs, load.acked)
    runs = runs_of(tmp_path / "tally.log")
    assert set(runs) == set(load.acked)
    assert [job_id for job_id, n in runs.items() if n != 1] == []
    # The jobs ran in the job workers of more than one server process.
    workers = {w: descendants(w) for w in _server_workers(server)}
    ran_in = {
        w
        for pids in run_pids(tmp_path / "tally.log").values()
        for w, d in workers.items()
        if pids[0] in d
    }
    assert len(ran_in) > 1, ran_in
    # Whichever process answers (a new connection each time), the document is the same.
    for job_id in random.Random(2).sample(sorted(load.acked), 30):
        answers = {json.dumps(status_of(server.url, job_id), sort_keys=True) for _ in range(8)}
        assert len(answers) == 1
    _assert_records_whole(data)
    assert server.leftovers() == []
    _clean_log(server.log())


def test_workers_4_sweep_in_one_process_and_hand_over_when_it_dies(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    """Expired jobs are deleted by one process at a time; its death hands the lock on."""
    data = tmp_path / "data"
    env = {**env, "HOPPER_RETENTION": "10", "HOPPER_SWEEP_INTERVAL": "0.2"}
    server = Server(data, env=env, args=["--workers", "4"]).start()
    servers.append(server)
    lock = data / "sweeper.lock"
    workers = wait_until(lambda: _server_workers(server), lambda w: len(w) == 4)
    holders = wait_until(lambda: _flock_holders(lock), lambda h: len(h) == 1, timeout_s=10)
    assert holders[0] in workers

    def wave(seed: int) -> dict[str, str]:
        load = Load([server.url], seed=seed)
        for thread in load.run(threads=3, per_thread=10, stop=threading.Event()):
            thread.join(60)
        assert not load.errors and len(load.acked) == 30
        _assert_done_right(_follow(server.url, load.acked, timeout_s=60), load.acked)
        for job_id in load.acked:  # expired, then deleted
            wait_until(
                lambda: httpx.get(f"{server.url}/status/{job_id}", timeout=10),  # noqa: B023
                lambda r: r.status_code == 404,
                timeout_s=30,
            )
        return load.acked

    first = wave(3)
    # Over many turns, only ever one process holds the lock.
    for _ in range(20):
        assert len(_flock_holders(lock)) == 1
        time.sleep(0.05)
    os.kill(holders[0], signal.SIGKILL)
    new_holders = wait_until(
        lambda: _flock_holders(lock), lambda h: len(h) == 1 and h != holders, timeout_s=20
    )
    assert new_holders[0] != holders[0]
    second = wave(4)
    runs = runs_of(tmp_path / "tally.log")
    assert set(runs) == set(first) | set(second)
    assert set(runs.values()) == {1}
    assert list((data / "files").iterdir()) == []
    assert list((data / "jobs").iterdir()) == []
    assert server.leftovers() == []
    _clean_log(server.log())


def test_separate_processes_share_one_data_dir(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    data = tmp_path / "data"
    for _ in range(3):
        servers.append(Server(data, env=env).start())
    urls = [s.url for s in servers]
    load = Load(urls, seed=5)
    for thread in load.run(threads=6, per_thread=15, stop=threading.Event()):
        thread.join(120)
    assert not load.errors and len(load.acked) == 90
    assert len(set(load.took.values())) == 3

    def elsewhere(job_id: str) -> str:  # poll a process that did not take the upload
        return urls[(urls.index(load.took[job_id]) + 1) % len(urls)]

    jobs = _wait_all_finished(load.acked, elsewhere, timeout_s=90)
    _assert_done_right(jobs, load.acked)
    runs = runs_of(tmp_path / "tally.log")
    assert set(runs) == set(load.acked) and set(runs.values()) == {1}
    for job_id in list(load.acked)[:20]:
        answers = {json.dumps(status_of(u, job_id), sort_keys=True) for u in urls}
        assert len(answers) == 1
    _assert_records_whole(data)
    assert servers[0].leftovers() == []
    for server in servers:
        _clean_log(server.log())


def test_start_up_recovery_leaves_a_live_process_its_queued_jobs(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    """A job waiting in a live process's queue is that process's, from its 202 on: a
    process starting on the same data dir must not take it."""
    data = tmp_path / "data"
    first = Server(data, env=env).start()
    servers.append(first)
    blocker = httpx.post(
        f"{first.url}/uploads",
        params={"processors": "ticker"},
        files={"file": ("t.txt", b"4", "text/plain")},
    ).json()["id"]
    wait_until(lambda: first.status(blocker), lambda j: j["status"] == "processing")
    waiting = Load([first.url], seed=6)
    with httpx.Client(timeout=10) as client:
        for _ in range(3):  # queued behind the blocker: first's only job worker is busy
            waiting.upload(client, random.Random(), first.url)
    assert len(waiting.acked) == 3
    second = Server(data, env={**env, "HOPPER_SWEEP_INTERVAL": "0.2"}).start()
    servers.append(second)
    assert first.proc is not None
    owned = descendants(first.proc.pid)  # first's job worker among them
    jobs = _wait_all_finished(waiting.acked, lambda _: second.url, timeout_s=40)
    _assert_done_right(jobs, waiting.acked)
    pids = run_pids(tmp_path / "tally.log")
    assert set(pids) == set(waiting.acked)
    assert all(len(p) == 1 and p[0] in owned for p in pids.values()), (pids, owned)
    _clean_log(first.log() + second.log())


def test_sigkill_of_a_worker_mid_traffic(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    """`--workers 4`: SIGKILL one worker while uploads stream in. uvicorn starts a new
    one; every acknowledged job still ends done with the right hash."""
    data = tmp_path / "data"
    env = {**env, "TALLY_SLEEP": "0.3", "HOPPER_SWEEP_INTERVAL": "0.5", "HOPPER_MAX_RETRIES": "5"}
    server = Server(data, env=env, args=["--workers", "4"]).start()
    servers.append(server)
    workers = wait_until(lambda: _server_workers(server), lambda w: len(w) == 4)
    load = Load([server.url], seed=7)
    stop = threading.Event()
    threads = load.run(threads=4, per_thread=None, stop=stop)
    try:
        wait_until(lambda: len(load.acked), lambda n: n >= 40, timeout_s=60)
        victim = random.choice(workers)
        os.kill(victim, signal.SIGKILL)
        acked_at_kill = len(load.acked)
        wait_until(lambda: len(load.acked), lambda n: n >= acked_at_kill + 30, timeout_s=60)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    replaced = wait_until(
        lambda: _server_workers(server), lambda w: len(w) == 4 and victim not in w, timeout_s=30
    )
    assert victim not in replaced

    jobs = _wait_all_finished(load.acked, lambda _: server.url, timeout_s=90)
    _assert_done_right(jobs, load.acked)
    runs = runs_of(tmp_path / "tally.log")
    assert set(load.acked) <= set(runs)
    rerun = sorted(job_id for job_id, n in runs.items() if n > 1)
    log.info("%d acknowledged, %d ran more than once", len(load.acked), len(rerun))
    _assert_records_whole(data)
    wait_until(server.leftovers, lambda found: found == [], timeout_s=10)
    assert f"Child process [{victim}] died" in server.log()


def test_sigkill_of_one_of_several_processes(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    """Two separate processes; one is killed mid-traffic and not restarted. The other
    takes over what the dead one had queued, at its next sweep."""
    data = tmp_path / "data"
    env = {**env, "TALLY_SLEEP": "0.2", "HOPPER_SWEEP_INTERVAL": "0.5", "HOPPER_MAX_RETRIES": "5"}
    doomed, survivor = Server(data, env=env).start(), Server(data, env=env).start()
    servers += [doomed, survivor]
    load = Load([doomed.url, survivor.url], seed=8)
    stop = threading.Event()
    threads = load.run(threads=4, per_thread=None, stop=stop)
    try:
        wait_until(lambda: len(load.acked), lambda n: n >= 40, timeout_s=60)
        doomed.kill()
        acked_at_kill = len(load.acked)
        wait_until(lambda: len(load.acked), lambda n: n >= acked_at_kill + 20, timeout_s=60)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    on_doomed = [j for j, url in load.took.items() if url == doomed.url]
    assert on_doomed

    jobs = _wait_all_finished(load.acked, lambda _: survivor.url, timeout_s=90)
    _assert_done_right(jobs, load.acked)
    runs = runs_of(tmp_path / "tally.log")
    assert set(load.acked) <= set(runs)
    rerun = sorted(job_id for job_id, n in runs.items() if n > 1)
    log.info(
        "%d acknowledged (%d by the killed process), %d ran more than once",
        *(len(load.acked), len(on_doomed), len(rerun)),
    )
    _assert_records_whole(data)
    wait_until(survivor.leftovers, lambda found: found == [], timeout_s=10)
    _clean_log(survivor.log())
