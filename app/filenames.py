"""Client file names, made safe for display. They never become paths."""

from __future__ import annotations

import os
import re
import unicodedata

FALLBACK_NAME = "upload.bin"
MAX_NAME_BYTES = 255
# C0/C1 controls, DEL, and the bidi overrides/isolates that make "invoice\u202etxt.exe"
# display as "invoiceexe.txt".
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_WINDOWS_RESERVED = re.compile(r"(?i)(con|prn|aux|nul|com\d|lpt\d)(\..*)?")


def sanitize_filename(raw: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """The last path segment, NFC, without controls or edge dots/spaces, at most
    `max_bytes` UTF-8 bytes (255 unless told: room for a suffix, say)."""
    name = re.split(r"[/\\]", raw)[-1]
    name = unicodedata.normalize("NFC", name)
    name = _UNSAFE.sub("", name)
    name = name.strip(" .")
    if _WINDOWS_RESERVED.fullmatch(name):
        name = f"_{name}"
    name = _truncate_utf8(name, max_bytes)
    return name or FALLBACK_NAME


def from_filesystem(name: str) -> str:
    """A name read from a folder as text: bytes that are not UTF-8 become U+FFFD (Python
    keeps them as lone surrogates, which cannot be encoded)."""
    return os.fsencode(name).decode(errors="replace")


def _truncate_utf8(name: str, limit: int) -> str:
    encoded = name.encode()
    if len(encoded) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    keep_ext = dot and 0 < len(ext.encode()) <= 16
    suffix = f".{ext}" if keep_ext else ""
    room = limit - len(suffix.encode())
    head = (stem if keep_ext else name).encode()[:room].decode(errors="ignore")
    return head + suffix
