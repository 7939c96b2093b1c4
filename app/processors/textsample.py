"""Reading text files of any size: the encoding guessed from a sample, then streamed."""

from __future__ import annotations

import io
from pathlib import Path

SAMPLE_BYTES = 256 * 1024


def detect_encoding(path: Path) -> str:
    """The encoding of the first 256 KiB (charset-normalizer), UTF-8 if it cannot tell."""
    with path.open("rb") as f:
        sample = f.read(SAMPLE_BYTES)
    if not sample:
        return "utf-8"
    from charset_normalizer import from_bytes  # heavy: loaded in the worker only

    best = from_bytes(sample).best()
    return best.encoding if best is not None else "utf-8"


def open_text(path: Path, encoding: str) -> tuple[io.BufferedReader, io.TextIOWrapper]:
    """The raw file (its tell() gives progress) and a text view that never fails to decode."""
    raw = path.open("rb")
    return raw, io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline="")
