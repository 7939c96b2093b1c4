"""Per-job locks: an flock on the job's stored file, held while the job runs.

The stored file is never replaced while the job exists, so its lock is stable (a record is
replaced on every save, so locking it would mean nothing). Another process, or the
dispatcher recording a killed worker's job, can tell a job that is running from one that
is not, and the lock is released by the kernel when its holder dies.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

POLL_S = 0.05


@contextmanager
def job_lock(path: Path, *, wait_s: float = 0.0) -> Iterator[bool]:
    """Yield True holding the lock, or False if another holder kept it for `wait_s`.

    Raises FileNotFoundError when the job's file is gone.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        deadline = time.monotonic() + wait_s
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                yield False
                return
            time.sleep(POLL_S)
        yield True
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def lock_if_free(path: Path) -> Iterator[bool]:
    """Like job_lock without waiting; a missing file counts as not free."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield False
        return
    try:
        yield _try_lock(fd)
    finally:
        os.close(fd)
