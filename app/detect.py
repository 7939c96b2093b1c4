"""What a file really is, from its bytes (libmagic), whatever name or type the client gave."""

from __future__ import annotations

import threading
from pathlib import Path

import magic

# One libmagic handle for the process: each loads the 8 MB rules database into memory.
# A handle is not thread-safe, so calls take turns; they read only the file's first MiB.
_lock = threading.Lock()
_TEXT_HINTS = {".csv": "text/csv", ".tsv": "text/csv", ".json": "application/json"}
_handle: magic.Magic | None = None


def _cookie() -> object:
    global _handle
    if _handle is None:
        _handle = magic.Magic(mime=True)
    return _handle.cookie


def detect_type(path: Path) -> str:
    """The MIME type, e.g. application/pdf."""
    return _ask(path, magic.MAGIC_MIME_TYPE)


def refine_text_type(detected: str, filename: str, declared: str) -> str:
    """libmagic calls many CSV and JSON files (and all broken JSON) text/plain. For plain
    text only, the client's file extension or declared type may narrow it down."""
    if detected != "text/plain":
        return detected
    hinted = _TEXT_HINTS.get(Path(filename).suffix.lower())
    declared_base = declared.split(";")[0].strip().lower()
    if hinted is None and declared_base in _TEXT_HINTS.values():
        hinted = declared_base
    return hinted or detected


def describe(path: Path) -> str:
    """libmagic's one-line description, e.g. 'PNG image data, 640 x 480, 8-bit/color RGB'."""
    return _ask(path, magic.MAGIC_NONE)


def _ask(path: Path, flags: int) -> str:
    with _lock:
        cookie = _cookie()
        magic.magic_setflags(cookie, flags)
        answer: bytes | str = magic.magic_file(cookie, str(path))
    return answer.decode(errors="replace") if isinstance(answer, bytes) else answer
