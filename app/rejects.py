"""Files the watch folder cannot take: moved to its rejected/ folder, each beside a reason
file (`<name>.reason.json`) that says why in the words the HTTP API would answer with."""

from __future__ import annotations

import errno
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from app.atomic import write_atomically
from app.filenames import from_filesystem, sanitize_filename

REJECTED = "rejected"
REASON_SUFFIX = ".reason.json"
# A name with "-<n>", the reason suffix and write_atomically's temp-file wrapping
# (".<name>.<pid>.tmp") still fits in a 255-byte file name.
NAME_BYTES = 200
MAX_NUMBERED = 100_000


def reject(folder: Path, name: str, status: int, detail: str) -> str | None:
    """Move `folder/name` into `folder/rejected/` under a name no file there has, then
    write its reason file: once the reason file is there, so is the file. Return the name
    it got, or None if it was gone. Only the watching process writes here."""
    target = folder / REJECTED
    target.mkdir(exist_ok=True)
    if target.is_symlink():  # a writer of the folder must not steer files elsewhere
        raise NotADirectoryError(errno.ENOTDIR, "rejected/ is a symbolic link", str(target))
    original = from_filesystem(name)
    new_name = _free_name(target, sanitize_filename(original, NAME_BYTES))
    try:
        (folder / name).rename(target / new_name)
    except FileNotFoundError:
        return None
    reason = {
        "file": original,
        "status": status,
        "detail": detail,
        "rejected_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    body = json.dumps(reason, indent=2, ensure_ascii=False).encode() + b"\n"
    write_atomically(target / f"{new_name}{REASON_SUFFIX}", body, mode=0o644)
    return new_name


def _free_name(folder: Path, name: str) -> str:
    """`name`, else `stem-1.ext`, `stem-2.ext` ...: never over an earlier rejected file."""
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, dot, ext = name, "", ""
    for number in range(MAX_NUMBERED):
        candidate = name if number == 0 else f"{stem}-{number}{dot}{ext}"
        if not any(os.path.lexists(folder / f"{candidate}{s}") for s in ("", REASON_SUFFIX)):
            return candidate
    raise FileExistsError(f"{MAX_NUMBERED} rejected files named {name!r}: clear {folder}")
