"""What a 202 promises: kill -9 the server at random moments of a mixed load (uploads
streaming, jobs processing, status polls), restart it, and after each restart every job
that got a 202 reaches done with the right hash; no record is torn, nothing is left over.

HOPPER_KILL_ROUNDS sets the number of kills (3 here; `scripts/kill-test` runs 100), and
HOPPER_KILL_SEED replays a run's kill moments.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.helpers import BOUNDARY, Server, file_part, multipart, wait_until

# Start-up recovery of the local backend's JSON records and queue; the celery backend's
# lost workers and lost messages are in test_celery.py.
pytestmark = pytest.mark.local_only

ROUNDS = int(os.environ.get("HOPPER_KILL_ROUNDS", "3"))
SEED = int(os.environ.get("HOPPER_KILL_SEED", str(random.randrange(1 << 32))))
PHASES = ("mid-upload", "mid-processing", "mid-poll", "any moment")
ENV = {
    "HASH_ROUNDS": "24",  # jobs take long enough (~0.1-0.4 s) to be caught processing
    "HOPPER_MAX_RETRIES": "10",  # a job may be cut off by several kills in a row
    "HOPPER_SWEEP_INTERVAL": "0.5",  # uploads cut off a moment ago go at the next sweep
}
TRIGGER_WAIT_S = 15.0  # a phase not reached by then: killed anyway (logged)
ACKS_PER_ROUND = 10  # then the fast uploaders pause: a round's work stays bounded

log = logging.getLogger("tests.crash_recovery")


@dataclass
class Load:
    """Mixed traffic against one server, and the moments it reaches."""

    url: str
    port: int
    seed: int
    acked: dict[str, str]  # job id -> sha256 of what was sent, across rounds
    stop: threading.Event = field(default_factory=threading.Event)
    uploading: threading.Event = field(default_factory=threading.Event)  # a body half sent
    processing: threading.Event = field(default_factory=threading.Event)  # a job seen running
    polling: threading.Event = field(default_factory=threading.Event)  # a poll in flight
    new_acks: list[str] = field(default_factory=list)  # this round's, oldest first

    def _ack(self, job_id: str, sha: str) -> None:
        self.acked[job_id] = sha
        self.new_acks.append(job_id)

    def uploader(self, index: int) -> None:
        rng = random.Random(self.seed * 10 + index)
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                if len(self.new_acks) >= ACKS_PER_ROUND:
                    time.sleep(0.02)
                    continue
                data = rng.randbytes(rng.randint(0, 2 << 20))
                try:
                    response = client.post(
                        f"{self.url}/uploads?processors=inspect,checksums",
                        files={"file": (f"f{index}.bin", data)},
                    )
                except httpx.TransportError:
                    continue  # the server was killed under us: no 202, no promise
                if response.status_code == 202:
                    self._ack(response.json()["id"], hashlib.sha256(data).hexdigest())

    def slow_uploader(self) -> None:
        """Streams a 2 MiB body in pieces, so that a kill can land halfway through."""
        rng = random.Random(self.seed * 10 + 9)
        while not self.stop.is_set():
            data = rng.randbytes(2 << 20)
            body = multipart([file_part(data=data, ctype="application/octet-stream")])
            head = "POST /uploads?processors=inspect HTTP/1.1\r\nHost: x\r\n"
            head += f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            answer = _send_slowly(self.port, head.encode() + body, self.uploading)
            self.uploading.clear()
            if answer.startswith(b"HTTP/1.1 202"):
                job = json.loads(answer.split(b"\r\n\r\n", 1)[1])
                self._ack(job["id"], hashlib.sha256(data).hexdigest())

    def poller(self) -> None:
        """Polls the oldest of this round's jobs not seen finished yet."""
        seen_finished: set[str] = set()
        with httpx.Client(timeout=5) as client:
            while not self.stop.is_set():
                for job_id in [j for j in self.new_acks if j not in seen_finished][:5]:
                    self.polling.set()
                    try:
                        response = client.get(f"{self.url}/status/{job_id}")
                    except httpx.TransportError:
                        continue
                    finally:
                        self.polling.clear()
                    assert response.status_code == 200, response.text
                    status = response.json()["status"]
                    if status == "processing":
                        self.processing.set()
                    elif status in ("done", "failed", "cancelled"):
                        seen_finished.add(job_id)
                time.sleep(0.005)

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.uploader, args=(i,)) for i in range(2)]
        threads += [threading.Thread(target=self.slow_uploader)]
        threads += [threading.Thread(target=self.poller)]
        for thread in threads:
            thread.start()
        return threads


def _send_slowly(port: int, request: bytes, halfway: threading.Event) -> bytes:
    """Send in 128 KiB pieces 10 ms apart, setting `halfway` at half; return the answer."""
    answer = b""
    piece = 128 << 10
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            for offset in range(0, len(request), piece):
                s.sendall(request[offset : offset + piece])
                if offset >= len(request) // 2:
                    halfway.set()
                time.sleep(0.01)
            while received := s.recv(65536):
                answer += received
    except OSError:
        pass  # killed under us
    return answer


def _wait_for(phase: str, load: Load, rng: random.Random) -> bool:
    """Wait until the load is in `phase` (True), or TRIGGER_WAIT_S passed (False)."""
    wait_until(lambda: len(load.new_acks), lambda n: n >= 3, timeout_s=60)  # under way
    event = {
        "mid-upload": load.uploading,
        "mid-processing": load.processing,
        "mid-poll": load.polling,
    }.get(phase)
    if event is None:
        time.sleep(rng.uniform(0, 0.5))
        return True
    load.processing.clear()  # seen from now on
    reached = event.wait(TRIGGER_WAIT_S)
    time.sleep(rng.uniform(0, 0.005))
    return reached


def _start(data: Path) -> Server:
    """Start a server on the data dir; on a busy machine a start may fail (a port taken
    meanwhile, say): try again on another port, and show the log if that fails too."""
    for attempt in range(3):
        server = Server(data_dir=data, env=ENV)
        try:
            return server.start()
        except AssertionError:
            server.kill()
            if attempt == 2:
                raise AssertionError(f"did not start:\n{server.log()[-4000:]}") from None
            log.warning("start %d failed:\n%s", attempt, server.log()[-2000:])
    raise AssertionError("unreachable")


def _check(server: Server, acked: dict[str, str]) -> int:
    """Every acknowledged job done with the right hash, every record whole, no leftovers.
    Returns how many jobs ran more than once."""
    data = server.data_dir
    rerun = 0
    for job_id, sha in acked.items():
        job = server.wait_finished(job_id, timeout_s=120)
        assert job["status"] == "done", job
        assert job["sha256"] == sha
        assert hashlib.sha256((data / "files" / job_id).read_bytes()).hexdigest() == sha
        rerun += job["attempts"] > 1
    for record in (data / "jobs").glob("*.json"):
        json.loads(record.read_bytes())  # never torn
    wait_until(server.leftovers, lambda found: found == [], timeout_s=15)
    return rerun


def test_every_acknowledged_job_survives_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rng = random.Random(SEED)
    acked: dict[str, str] = {}
    phases_missed: list[str] = []
    started = time.monotonic()
    log.info("HOPPER_KILL_ROUNDS=%d HOPPER_KILL_SEED=%d", ROUNDS, SEED)
    for round_no in range(ROUNDS):
        server = _start(data)
        _check(server, acked)  # what earlier rounds acknowledged, after this restart
        load = Load(server.url, server.port, rng.randrange(1 << 32), acked)
        threads = load.start()
        phase = rng.choice(PHASES)
        try:
            if not _wait_for(phase, load, rng):
                phases_missed.append(phase)
        finally:
            server.kill()
            load.stop.set()
            for thread in threads:
                thread.join(30)
        log.info("round %d: killed %s, %d jobs acknowledged so far", round_no, phase, len(acked))

    server = _start(data)
    try:
        rerun = _check(server, acked)
    finally:
        server.stop()
    log.info(
        "%d rounds, %d jobs acknowledged, 0 lost, %d ran more than once, 0 torn records, "
        "0 leftovers, %.0f s; phases not reached before the kill: %s",
        *(ROUNDS, len(acked), rerun, time.monotonic() - started, phases_missed or "none"),
    )
