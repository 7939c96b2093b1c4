"""What a 202 promises: kill -9 the server mid-traffic, restart it, and every job that got
a 202 reaches done with the right hash; nothing half-written is left behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import threading
import time
from pathlib import Path

import httpx

from tests.helpers import Server, wait_until

ROUNDS = 3
RETRIES = {"HOPPER_MAX_RETRIES": "10"}  # a job may be cut off by every kill of the test


def _uploader(url: str, seed: int, acked: dict[str, str], stop: threading.Event) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            data = rng.randbytes(rng.randint(0, 3 << 20))
            try:
                response = client.post(
                    f"{url}/uploads?processors=inspect,checksums",
                    files={"file": (f"f{seed}.bin", data)},
                )
            except httpx.TransportError:
                continue  # the server was killed under us: no 202, no promise
            if response.status_code == 202:
                acked[response.json()["id"]] = hashlib.sha256(data).hexdigest()


def _poller(url: str, acked: dict[str, str], stop: threading.Event) -> None:
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            for job_id in list(acked)[-5:]:
                with contextlib.suppress(httpx.TransportError):
                    assert client.get(f"{url}/status/{job_id}").status_code in (200, 404)
            time.sleep(0.01)


def test_every_acknowledged_job_survives_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acked: dict[str, str] = {}
    for round_no in range(ROUNDS):
        server = Server(data_dir=data, env={"HASH_ROUNDS": "4", **RETRIES}).start()
        stop = threading.Event()
        threads = [
            threading.Thread(target=_uploader, args=(server.url, round_no * 10 + i, acked, stop))
            for i in range(3)
        ] + [threading.Thread(target=_poller, args=(server.url, acked, stop))]
        for thread in threads:
            thread.start()
        before = len(acked)
        wait_until(lambda: len(acked), lambda n: n >= before + 8, timeout_s=60)  # noqa: B023
        time.sleep(random.uniform(0, 0.3))  # kill at a random moment
        server.kill()
        stop.set()
        for thread in threads:
            thread.join(30)

    # Recovery leaves uploads cut off a moment ago to the sweeper (they might not be locked yet).
    server = Server(data_dir=data, env={"HOPPER_SWEEP_INTERVAL": "0.5", **RETRIES}).start()
    try:
        for job_id, sha in acked.items():
            job = server.wait_finished(job_id, timeout_s=120)
            assert job["status"] == "done", job
            assert job["sha256"] == sha
            stored = data / "files" / job_id
            assert hashlib.sha256(stored.read_bytes()).hexdigest() == sha
        for record in (data / "jobs").glob("*.json"):
            json.loads(record.read_bytes())  # never torn
        wait_until(server.leftovers, lambda found: found == [], timeout_s=10)
    finally:
        server.stop()
