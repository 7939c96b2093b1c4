"""When a file in the watch folder is complete: which names are candidates, and which of
them have stayed unchanged for the settle time.

A file counts as written once its signature (device, inode, size, mtime) has stayed the
same for `settle_s` by the watcher's own clock. The file's mtime is compared only with its
earlier self, never with the time: a copy may preserve an old one, another machine's
clock may set it. A file moved in and one written in place wait the same settle time, so
there is one rule and no guess about how a file arrived.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# What downloaders and copy tools name a file while they still write it; they rename it
# when done. Dot-files (rsync's, editors') are skipped as well.
PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", ".filepart")


@dataclass(frozen=True)
class Signature:
    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Signature:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def is_candidate(name: str) -> bool:
    """A name the watcher takes: not hidden, not a download or copy still in progress."""
    return not name.startswith(".") and not name.lower().endswith(PARTIAL_SUFFIXES)


def candidates(folder: Path) -> dict[str, Signature]:
    """The folder's candidate entries (sub-folders left out) and their signatures. Not
    following symlinks: a link is seen as a link, and refused when taken."""
    found: dict[str, Signature] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            if not is_candidate(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since the listing
            if not stat.S_ISDIR(st.st_mode):
                found[entry.name] = Signature.of(st)
    return found


class Settler:
    """The candidates seen so far, each with the time it is ready at."""

    def __init__(self, settle_s: float) -> None:
        self._settle_s = settle_s
        self._seen: dict[str, tuple[Signature, float]] = {}

    def observe(self, files: Mapping[str, Signature], now: float) -> list[str]:
        """Record a look at the folder; return the names ready now, longest waiting first.

        A new name, or one whose signature changed, starts its settle time again; names no
        longer there are forgotten."""
        for gone in self._seen.keys() - files.keys():
            del self._seen[gone]
        ready: list[tuple[float, str]] = []
        for name, signature in files.items():
            known = self._seen.get(name)
            if known is None or known[0] != signature:
                self._seen[name] = (signature, now + self._settle_s)
            elif known[1] <= now:
                ready.append((known[1], name))
        return [name for _, name in sorted(ready)]

    def postpone(self, name: str, until: float = math.inf) -> None:
        """Not ready before `until` (never, by default), unless the file changes."""
        if name in self._seen:
            self._seen[name] = (self._seen[name][0], until)

    def next_ready_in(self, now: float) -> float | None:
        """Seconds until the next name is ready (0 if one is); None if none is waiting."""
        times = [ready_at for _, ready_at in self._seen.values() if ready_at != math.inf]
        return max(0.0, min(times) - now) if times else None
