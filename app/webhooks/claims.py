"""Which process delivers a job's webhook: an OFD lock on byte 1 of the job's stored file.

Like the dispatcher's lease on byte 0 (app.locks), it is held through a whole delivery
round, backoff included, and freed by the kernel when its process dies: a sweep can tell
a round nobody delivers any more (its process was killed) from one under way in another
live process, and take only the first over. No new files: the job's file is there for as
long as the job.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
from pathlib import Path

_FLOCK = struct.Struct("hhqqi")  # struct flock: type, whence, start, len, pid
_BYTE = 1  # byte 0 is the job's lease (app.locks); the ranges never overlap


def _lock(fd: int) -> bool:
    request = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, _BYTE, 1, 0)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, request)
    except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: another holder
        return False
    return True


class Claims:
    """The deliveries this process holds: an open fd with the lock, per job id."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, job_id: str, path: Path) -> bool:
        """True if this process holds the claim (now or already). A job whose file is
        gone has nothing to claim: True, and its record decides the rest."""
        with self._lock:
            if job_id in self._fds:
                return True
            try:
                fd = os.open(path, os.O_RDWR)  # a write lock needs a writable fd
            except FileNotFoundError:
                return True
            if _lock(fd):
                self._fds[job_id] = fd
                return True
            os.close(fd)
            return False

    def release(self, job_id: str) -> None:
        with self._lock:
            fd = self._fds.pop(job_id, None)
        if fd is not None:
            os.close(fd)  # the lock goes with its open file description

    def release_all(self) -> None:
        for job_id in list(self._fds):
            self.release(job_id)


def is_free(path: Path) -> bool:
    """No process (this one included) holds the job's delivery claim."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        return _lock(fd)
    finally:
        os.close(fd)  # releases the lock just taken, and only that one
