"""Shared by the many-process tests: a load of uploads over several servers, the tally
processor's log of runs, and the processes under a pid."""

from __future__ import annotations

import hashlib
import random
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass  # it just exited
    return found


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


class Load:
    """Client threads uploading to (and polling) a set of servers; what got a 202."""

    def __init__(self, urls: list[str], seed: int) -> None:
        self.urls = urls
        self.acked: dict[str, str] = {}  # job id -> sha256 of what was sent
        self.took: dict[str, str] = {}  # job id -> the server that answered the 202
        self.errors: list[str] = []
        self._seed = seed
        self._lock = threading.Lock()

    def upload(self, client: httpx.Client, rng: random.Random, url: str) -> str | None:
        data = rng.randbytes(rng.randint(0, 64 << 10))
        try:
            response = client.post(
                f"{url}/uploads", params={"processors": "tally"}, files={"file": ("f.bin", data)}
            )
        except httpx.TransportError:
            return None  # a process died under us: no 202, no promise
        if response.status_code != 202:
            with self._lock:
                self.errors.append(f"{response.status_code} {response.text[:200]}")
            return None
        job_id: str = response.json()["id"]
        with self._lock:
            self.acked[job_id] = hashlib.sha256(data).hexdigest()
            self.took[job_id] = url
        return job_id

    def run(
        self, threads: int, per_thread: int | None, stop: threading.Event
    ) -> list[threading.Thread]:
        def work(index: int) -> None:
            rng = random.Random(self._seed * 100 + index)
            with httpx.Client(timeout=20) as client:
                sent = 0
                while not stop.is_set() and (per_thread is None or sent < per_thread):
                    self.upload(client, rng, self.urls[(index + sent) % len(self.urls)])
                    sent += 1

        started = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for thread in started:
            thread.start()
        return started


def status_of(url: str, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/status/{job_id}", timeout=10)  # a new connection each time
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def runs_of(tally: Path) -> Counter[str]:
    lines = tally.read_text().splitlines() if tally.exists() else []
    return Counter(line.split()[0] for line in lines)


def run_pids(tally: Path) -> dict[str, list[int]]:
    pids: dict[str, list[int]] = {}
    for line in tally.read_text().splitlines():
        job_id, pid = line.split()
        pids.setdefault(job_id, []).append(int(pid))
    return pids
