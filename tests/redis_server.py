"""A real redis-server for the tests, on a free loopback port, with its own folder."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.helpers import free_port


@dataclass
class RedisServer:
    folder: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        # The append-only file, synced at every write: a restart loses nothing, as a
        # deployment's Redis must not (docs/scaling.md).
        self.folder.mkdir(parents=True, exist_ok=True)
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--dir", str(self.folder), "--save", "", "--appendonly", "yes"]
        cmd += ["--appendfsync", "always", "--protected-mode", "no"]
        with (self.folder / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        client = redis.Redis(port=self.port)
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)
