"""What a file really is, from its bytes (libmagic), whatever name or type the client gave."""

from __future__ import annotations

import threading
from pathlib import Path

import magic

# One libmagic handle for the process: each loads the 8 MB rules database into memory.
# A handle is not thread-safe, so calls take turns; they read only the file's first MiB.
_lock = threading.Lock()
_handle: magic.Magic | None = None


def _cookie() -> object:
    global _handle
    if _handle is None:
        _handle = magic.Magic(mime=True)
    return _handle.cookie


def detect_type(path: Path) -> str:
    """The MIME type, e.g. application/pdf."""
    return _ask(path, magic.MAGIC_MIME_TYPE)


def describe(path: Path) -> str:
    """libmagic's one-line description, e.g. 'PNG image data, 640 x 480, 8-bit/color RGB'."""
    return _ask(path, magic.MAGIC_NONE)


def _ask(path: Path, flags: int) -> str:
    with _lock:
        cookie = _cookie()
        magic.magic_setflags(cookie, flags)
        answer: bytes | str = magic.magic_file(cookie, str(path))
    return answer.decode(errors="replace") if isinstance(answer, bytes) else answer
