"""Small files edited in place by several processes: one editor at a time (an flock on a
lock file beside them), and a reader sees the old file or the new one, never a torn one
(a temp file in the same folder, then os.replace)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def locked(lock_path: Path, mode: int = 0o600) -> Iterator[None]:
    """Hold an exclusive flock on `lock_path` (made if missing, with its folder)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and with it the lock


def write_atomically(path: Path, data: bytes, *, mode: int = 0o600, fsync: bool = False) -> None:
    """Replace `path` with `data` at once. The temp file is named by the process only, so
    callers hold the file's lock (see `locked`)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
