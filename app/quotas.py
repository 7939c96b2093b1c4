"""Per-key quotas: bytes stored per UTC day and unfinished jobs at once.

Usage is shared by every server process on the data directory: usage/<key-id>.json is read,
changed and replaced under an flock on usage/<key-id>.lock. Unfinished jobs are counted by
reading the few records the usage names (finished or deleted ones are dropped then), plus
a slot for each upload still streaming, named by the process taking it. A key without
--max-jobs keeps neither: only its bytes are counted.

A process is named by its pid and its start time (and the boot's id), so a slot left by a
server killed mid-upload is dead even when the next server gets the same pid, as PID 1 in
a container does after every restart.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator

from app.apikeys import ApiKey
from app.atomic import locked, write_atomically
from app.errors import QuotaExceeded, UnknownJob
from app.ingest import FRAMING_ALLOWANCE_BYTES
from app.layout import DataDir
from app.store import JobStore

JOBS_RETRY_AFTER_S = 5
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_LABEL_UNITS = (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3))
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*", re.IGNORECASE)


class Process(BaseModel):
    """A server process, told apart from a later one that got the same pid."""

    pid: int
    # "<boot id>/<start time in clock ticks>" from /proc; None where there is no /proc
    # (the pid alone is judged then).
    started: str | None = None


class Usage(BaseModel):
    day: date | None = None
    bytes: int = 0
    jobs: list[str] = Field(default_factory=list)  # only for a key with max_jobs
    uploads: dict[str, Process] = Field(default_factory=dict)  # upload slot -> its server

    @field_validator("uploads", mode="before")
    @classmethod
    def _drop_pid_only_slots(cls, value: Any) -> Any:
        """Slots written before processes had a start time name a bare pid, which may be
        this very process again (PID 1): such a server is gone, so are its slots."""
        if isinstance(value, dict):
            return {t: p for t, p in value.items() if not isinstance(p, int)}
        return value


@dataclass(frozen=True)
class Slot:
    """One admitted upload: what it may still store, and its place in the job count."""

    key: ApiKey
    token: str
    bytes_left: int | None  # None: no daily limit


class Quotas:
    def __init__(self, layout: DataDir, store: JobStore) -> None:
        self._layout = layout
        self._store = store

    def admit(self, key: ApiKey, announced_bytes: int | None) -> Slot | None:
        """Before the body is read: 429 if the key is over a limit. None: it has none."""
        if key.bytes_per_day is None and key.max_jobs is None:
            return None
        token = secrets.token_hex(8)
        with self._usage(key.id) as usage:
            left = _bytes_left(key, usage, announced_bytes)
            if key.max_jobs is not None:
                self._prune(usage)
                if len(usage.jobs) + len(usage.uploads) >= key.max_jobs:
                    raise QuotaExceeded(_jobs_detail(key), JOBS_RETRY_AFTER_S)
                usage.uploads[token] = this_process()
        return Slot(key, token, left)

    def stored(self, slot: Slot, job_id: str, size: int) -> None:
        """The upload got its 202: its bytes count for today, its job until it finishes."""
        with self._usage(slot.key.id) as usage:
            usage.uploads.pop(slot.token, None)
            usage.bytes += size
            if slot.key.max_jobs is not None:  # nobody counts them otherwise: none kept
                usage.jobs.append(job_id)
            else:
                usage.jobs.clear()

    def release(self, slot: Slot) -> None:
        with self._usage(slot.key.id) as usage:
            usage.uploads.pop(slot.token, None)

    def _prune(self, usage: Usage) -> None:
        usage.jobs = [j for j in usage.jobs if self._unfinished(j)]
        usage.uploads = {t: p for t, p in usage.uploads.items() if alive(p)}

    def _unfinished(self, job_id: str) -> bool:
        try:
            return not self._store.load(job_id).status.finished
        except (UnknownJob, ValueError):
            return False

    @contextlib.contextmanager
    def _usage(self, key_id: str) -> Iterator[Usage]:
        path = self._layout.usage(key_id)
        with locked(path.with_suffix(".lock")):
            usage = _read(path)
            today = datetime.now(UTC).date()
            if usage.day != today:
                usage.day, usage.bytes = today, 0
            yield usage
            write_atomically(path, usage.model_dump_json().encode())


def metered(chunks: AsyncIterator[bytes], slot: Slot | None) -> AsyncIterator[bytes]:
    """The body, cut off with 429 once it passes what the key may still store today (for
    a chunked body, whose size is not known before it arrives); as is without a limit."""
    if slot is None or slot.bytes_left is None:
        return chunks
    return _cut_off(chunks, slot.key, slot.bytes_left)


async def _cut_off(chunks: AsyncIterator[bytes], key: ApiKey, left: int) -> AsyncIterator[bytes]:
    allowed = left + FRAMING_ALLOWANCE_BYTES  # room for the multipart framing
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > allowed:
            used = (key.bytes_per_day or 0) - left
            raise QuotaExceeded(_bytes_detail(key, used), seconds_to_midnight())
        yield chunk


def _bytes_left(key: ApiKey, usage: Usage, announced: int | None) -> int | None:
    limit = key.bytes_per_day
    if limit is None:
        return None
    over = usage.bytes >= limit
    if announced is not None and usage.bytes + announced > limit + FRAMING_ALLOWANCE_BYTES:
        over = True
    if over:
        raise QuotaExceeded(_bytes_detail(key, usage.bytes), seconds_to_midnight())
    return limit - usage.bytes


def _bytes_detail(key: ApiKey, used: int) -> str:
    limit = key.bytes_per_day or 0
    used_label, limit_label = _labels(used, limit)
    if used >= limit:
        head = f"Key {key.name!r} has used {used_label} of its {limit_label} a day"
    else:
        head = (
            f"This upload would take key {key.name!r} past its {limit_label} a day "
            f"({used_label} used so far)"
        )
    return f"{head}; the quota resets at 00:00 UTC (in {_human(seconds_to_midnight())})."


def _jobs_detail(key: ApiKey) -> str:
    return (
        f"Key {key.name!r} already has {key.max_jobs} unfinished jobs, its limit; "
        "try again when one finishes."
    )


def seconds_to_midnight(now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), time(), tzinfo=UTC)
    return max(int((midnight - now).total_seconds()) + 1, 1)


def parse_size(text: str) -> int:
    """'10G', '500MB', '2GiB' or plain bytes; k/M/G/T are powers of 1000, with i of 1024."""
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (try 10G, 500M or a number of bytes)")
    number, unit, binary = match.groups()
    scale = _UNITS[unit.lower()]
    if binary and unit:
        scale = 1024 ** list(_UNITS).index(unit.lower())
    return int(float(number) * scale)


def _labels(used: int, limit: int) -> tuple[str, str]:
    """Both in the limit's unit: '0.8 GB' of '10 GB'."""
    unit, scale = next(((u, n) for u, n in _LABEL_UNITS if limit >= n), ("bytes", 1))
    return f"{used / scale:.1f} {unit}", f"{limit / scale:g} {unit}"


def _human(seconds: int) -> str:
    hours, minutes = divmod(max(seconds, 60) // 60, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def _read(path: Path) -> Usage:
    try:
        return Usage.model_validate_json(path.read_bytes())
    except (FileNotFoundError, ValidationError):
        return Usage()


def this_process() -> Process:
    pid = os.getpid()
    return Process(pid=pid, started=_start_of(pid))


def alive(process: Process) -> bool:
    """Is this process still running: the same pid, started at the same moment of the same
    boot? (A pid reused since, even by this process, is not it.)"""
    if process.started is None:
        return _pid_alive(process.pid)
    return _start_of(process.pid) == process.started


def _start_of(pid: int) -> str | None:
    """The process's boot id and start time (field 22 of /proc/<pid>/stat, in clock ticks
    since boot), or None if there is no such process (or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # Field 2, the command name, is in parentheses and may hold spaces or ")": fields
    # from 3 on follow the last ")".
    fields = stat[stat.rfind(b")") + 2 :].split()
    return f"{_boot_id()}/{int(fields[22 - 3])}"


@functools.cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
