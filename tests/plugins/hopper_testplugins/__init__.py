"""Processors that misbehave on purpose: the isolation tests run them on a real server."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from app.models import ErrorCode
from app.processors.base import Context, ProcessorError


class _Base:
    version = "0"
    in_auto = False

    def accepts(self, detected_type: str) -> bool:
        return True


class Sleepy(_Base):
    name = "sleepy"
    description = "Sleeps for an hour (past any job timeout)."

    def run(self, ctx: Context) -> dict[str, Any]:
        time.sleep(3600)
        return {}


class Stubborn(_Base):
    name = "stubborn"
    description = "Sleeps for ever, swallowing every exception (a timeout's too)."

    def run(self, ctx: Context) -> dict[str, Any]:
        while True:
            try:
                time.sleep(3600)
            except Exception:  # noqa: S112, BLE001 - on purpose: only a kill stops it
                continue


class Ticker(_Base):
    name = "ticker"
    description = "Reports progress every 50 ms for as many seconds as the file says (or 60)."

    def run(self, ctx: Context) -> dict[str, Any]:
        try:
            seconds = float(ctx.path.read_text())
        except ValueError:
            seconds = 60.0
        ticks = max(int(seconds / 0.05), 1)
        for tick in range(ticks):
            time.sleep(0.05)
            ctx.progress((tick + 1) / ticks)
        return {"ticks": ticks}


class Hungry(_Base):
    name = "hungry"
    description = "Allocates memory until it runs out."

    def run(self, ctx: Context) -> dict[str, Any]:
        hoard = []
        while True:
            hoard.append(bytearray(64 * 1024 * 1024))


class Crasher(_Base):
    name = "crasher"
    description = "Kills its own worker process."

    def run(self, ctx: Context) -> dict[str, Any]:
        os._exit(3)


class Flaky(_Base):
    name = "flaky"
    description = "Fails with a transient error until its third attempt."

    def run(self, ctx: Context) -> dict[str, Any]:
        marker = Path(os.environ["FLAKY_DIR"]) / ctx.job_id
        attempts = int(marker.read_text()) + 1 if marker.exists() else 1
        marker.write_text(str(attempts))
        if attempts < 3:
            raise ProcessorError(ErrorCode.INTERNAL, "upstream busy", transient=True)
        return {"attempts": attempts}


class Tally(_Base):
    name = "tally"
    description = "Logs each run (job id and pid) to $TALLY_LOG, after $TALLY_SLEEP seconds."

    def run(self, ctx: Context) -> dict[str, Any]:
        pause = float(os.environ.get("TALLY_SLEEP", "0"))
        ticks = max(int(pause / 0.05), 1)
        for tick in range(ticks):  # reports progress, so it can be cancelled
            time.sleep(pause / ticks)
            ctx.progress((tick + 1) / ticks)
        digest = hashlib.sha256(ctx.path.read_bytes()).hexdigest()
        # One short line in one O_APPEND write: lines of concurrent runs never interleave.
        fd = os.open(os.environ["TALLY_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{ctx.job_id} {os.getpid()}\n".encode())
        finally:
            os.close(fd)
        return {"sha256": digest, "pid": os.getpid()}
