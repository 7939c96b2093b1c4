"""`text`: encoding, line and word counts, and a preview; streamed, so any size is fine."""

from __future__ import annotations

from typing import Any

from app.processors.base import Context
from app.processors.textsample import detect_encoding, open_text

PREVIEW_CHARS = 2000
PROGRESS_EVERY_LINES = 50_000


class TextProcessor:
    name = "text"
    description = "Encoding, lines, words and a preview of a text file."
    version = "1"
    in_auto = True

    def accepts(self, detected_type: str) -> bool:
        return detected_type.startswith("text/") or detected_type in (
            "application/json",
            "application/xml",
        )

    def run(self, ctx: Context) -> dict[str, Any]:
        encoding = detect_encoding(ctx.path)
        lines = words = chars = 0
        preview: list[str] = []
        raw, text = open_text(ctx.path, encoding)
        with raw, text:
            for line in text:
                lines += 1
                words += len(line.split())
                if chars < PREVIEW_CHARS:
                    preview.append(line)
                chars += len(line)
                if lines % PROGRESS_EVERY_LINES == 0:
                    ctx.progress(raw.tell() / max(ctx.size, 1))
        ctx.progress(1.0)
        return {
            "encoding": encoding,
            "lines": lines,
            "words": words,
            "characters": chars,
            "preview": "".join(preview)[:PREVIEW_CHARS],
        }
