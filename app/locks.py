"""Per-job locks: an flock on the job's stored file, held while the job runs.

The stored file is never replaced while the job exists, so its lock is stable (a record is
replaced on every save, so locking it would mean nothing). Another process, or the
dispatcher recording a killed worker's job, can tell a job that is running from one that
is not, and the lock is released by the kernel when its holder dies.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
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


class ProcessLock:
    """An flock on a file in the data directory that one of the server processes sharing
    it holds at a time (the sweeper's, the watch folder's). The kernel frees it when its
    holder dies, so another process can take over."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def hold(self) -> bool:
        """True if this process holds the lock, taking it now if it is free."""
        if self._fd is None:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                os.close(fd)
                return False
            self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # and with it the lock
            self._fd = None


# --- leases ----------------------------------------------------------------------------
#
# A job's lease says which server process owns it: the one that took its upload (from
# before its 202) or that adopted it after its owner died, until the job is finished. It
# is an open-file-description lock (F_OFD_SETLK) on the first byte of the job's file:
# independent of the run lock above (Linux never lets flock and fcntl locks conflict),
# released by the kernel when its owner dies, and exclusive between processes. A queued
# job thus has an owner even before a worker runs it, and no other process (a restart's
# recovery, a sweep) takes it while that owner lives.
#
# The same kind of lock on another byte is another, independent lease: a webhook round's
# claim (app.webhooks.claims) is byte 1.

LEASE_BYTE = 0  # the job's owner; CLAIM_BYTE (app.webhooks.claims) is 1
_FLOCK = struct.Struct("hhqqi")  # struct flock: type, whence, start, len, pid


def _set_lease(fd: int, byte: int) -> bool:
    request = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, byte, 1, 0)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, request)
    except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: another holder
        return False
    return True


class Leases:
    """The leases this process holds on one byte of jobs' files (`byte`: LEASE_BYTE, the
    job's owner, unless told): an open fd with the lock, per job id."""

    def __init__(self, byte: int = LEASE_BYTE) -> None:
        self._byte = byte
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, job_id: str, path: Path, *, wait_s: float = 0.0) -> bool:
        """Hold the lease (True at once if this process does already); False if another
        live process holds it for `wait_s`. A job whose file is gone has nothing to hold:
        True, and what runs next (the job, its webhook's record) finds that out."""
        deadline = time.monotonic() + wait_s
        while True:
            with self._lock:
                if job_id in self._fds:
                    return True
                try:
                    fd = os.open(path, os.O_RDWR)  # a write lease needs a writable fd
                except FileNotFoundError:
                    return True
                if _set_lease(fd, self._byte):
                    self._fds[job_id] = fd
                    return True
                os.close(fd)
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)

    def holds(self, job_id: str) -> bool:
        return job_id in self._fds

    def release(self, job_id: str) -> None:
        with self._lock:
            fd = self._fds.pop(job_id, None)
        if fd is not None:
            os.close(fd)  # the lease goes with its open file description

    def release_all(self) -> None:
        for job_id in list(self._fds):
            self.release(job_id)


@contextmanager
def lease_if_free(path: Path, *, byte: int = LEASE_BYTE) -> Iterator[bool]:
    """Yield True holding the job's lease on `byte` if no live process (this one
    included) holds it; a missing file counts as not free."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        yield False
        return
    try:
        yield _set_lease(fd, byte)
    finally:
        os.close(fd)  # releases the lease just taken, and only that one
