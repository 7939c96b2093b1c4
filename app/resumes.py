"""The `hopper` command's record of its unfinished tus uploads, so that the next run of
`hopper upload FILE` takes one up where the server stopped instead of starting over.

One small JSON file in the user's cache folder (HOPPER_CACHE_DIR, else
$XDG_CACHE_HOME/hopper or ~/.cache/hopper), an entry per (server, file as it is now,
processors) naming the upload's URL. Edited under a lock and replaced atomically, so two
runs at once neither tear it nor lose each other's entries. An entry only says where to
ask: the server's HEAD decides whether there is anything to resume.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from app.atomic import locked, write_atomically

CACHE_DIR_ENV = "HOPPER_CACHE_DIR"
FILE_NAME = "uploads.json"
KEEP_S = 7 * 86400  # longer than the server's default expiry (24 h); older entries are dropped
MAX_ENTRIES = 1000  # the newest kept: the file stays small however it is used


@dataclass(frozen=True)
class ResumeKey:
    """A file as it is now: another size or mtime is another upload."""

    server: str
    path: str
    size: int
    mtime_ns: int
    processors: str

    @classmethod
    def of(cls, server: str, path: Path, processors: str | None) -> ResumeKey:
        stat = path.stat()
        return cls(
            server.rstrip("/"),
            str(path.resolve()),
            stat.st_size,
            stat.st_mtime_ns,
            processors or "",
        )


def default_dir() -> Path:
    if found := os.environ.get(CACHE_DIR_ENV):
        return Path(found).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "hopper"


@dataclass(frozen=True)
class Resumes:
    """Unfinished uploads by ResumeKey. Failing to read or write the file (a read-only
    home, say) costs only the resuming across runs, never the upload itself."""

    folder: Path

    @property
    def path(self) -> Path:
        return self.folder / FILE_NAME

    def find(self, key: ResumeKey) -> str | None:
        found = [e.get("location") for e in self._read() if _matches(e, key)]
        return next((url for url in found if isinstance(url, str) and url), None)

    def remember(self, key: ResumeKey, location: str) -> None:
        self._edit(key, {**asdict(key), "location": location, "saved_at": time.time()})

    def forget(self, key: ResumeKey) -> None:
        self._edit(key, None)

    def _edit(self, key: ResumeKey, entry: dict[str, Any] | None) -> None:
        """The key's entry replaced by `entry` (or dropped), and stale entries with it."""
        with contextlib.suppress(OSError):
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            with locked(self.folder / f".{FILE_NAME}.lock"):
                now = time.time()
                kept = [
                    e for e in self._read() if not _matches(e, key) and now - _saved_at(e) < KEEP_S
                ]
                kept += [entry] if entry is not None else []
                write_atomically(self.path, json.dumps(kept[-MAX_ENTRIES:], indent=1).encode())

    def _read(self) -> list[dict[str, Any]]:
        try:
            entries = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return []  # none yet, unreadable or torn by hand: nothing to resume
        return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _matches(entry: dict[str, Any], key: ResumeKey) -> bool:
    return all(entry.get(name) == value for name, value in asdict(key).items())


def _saved_at(entry: dict[str, Any]) -> float:
    found = entry.get("saved_at")
    return float(found) if isinstance(found, int | float) else 0.0
