"""`inspect`: what the file is (from its bytes), its size and SHA-256, and cheap facts."""

from __future__ import annotations

from typing import Any

from app.detect import describe
from app.processors.base import Context


class Inspect:
    name = "inspect"
    description = "Detected type from the bytes, size, SHA-256 and libmagic's description."
    version = "1"
    in_auto = True

    def accepts(self, detected_type: str) -> bool:
        return True

    def run(self, ctx: Context) -> dict[str, Any]:
        declared = ctx.declared_type.split(";")[0].strip().lower()
        result = {
            "detected_type": ctx.detected_type,
            "declared_type": ctx.declared_type,
            "type_matches_declared": declared == ctx.detected_type,
            "description": describe(ctx.path),
            "size": ctx.size,
            # Computed while the upload streamed: the file is not read again to hash it.
            "sha256": ctx.sha256,
        }
        ctx.progress(1.0)
        return result
