"""`pdf`: pages, metadata, encryption, text of the first pages (pypdf); page 1 as a thumbnail
(pypdfium2)."""

from __future__ import annotations

import io
from typing import Any

from app.models import ErrorCode
from app.processors.base import Context, ProcessorError

TEXT_PAGES = 3
TEXT_CHARS = 4000
THUMBNAIL_PX = 256
META_KEYS = ("/Title", "/Author", "/Subject", "/Creator", "/Producer", "/CreationDate")


class PdfProcessor:
    name = "pdf"
    description = "Pages, metadata, encryption, text of the first pages and a page-1 thumbnail."
    version = "1"
    in_auto = True

    def accepts(self, detected_type: str) -> bool:
        return detected_type == "application/pdf"

    def run(self, ctx: Context) -> dict[str, Any]:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError

        try:
            reader = PdfReader(ctx.path)
            encrypted = reader.is_encrypted
            if encrypted and not reader.decrypt(""):
                return {"encrypted": True, "pages": None, "text": None, "metadata": {}}
            result = _describe(reader, encrypted, ctx)
        except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
            raise ProcessorError(
                ErrorCode.INVALID_INPUT, f"The PDF is corrupt or truncated ({exc})."
            ) from exc
        _thumbnail(ctx)
        ctx.progress(1.0)
        return result


def _describe(reader: Any, encrypted: bool, ctx: Context) -> dict[str, Any]:
    pages = len(reader.pages)
    text_parts: list[str] = []
    for index in range(min(pages, TEXT_PAGES)):
        text_parts.append(reader.pages[index].extract_text() or "")
        ctx.progress((index + 1) / (TEXT_PAGES + 1))
    metadata = reader.metadata or {}
    return {
        "pages": pages,
        "encrypted": encrypted,
        "metadata": {
            k.lstrip("/").lower(): str(metadata[k])[:200] for k in META_KEYS if k in metadata
        },
        "text": "\n".join(text_parts)[:TEXT_CHARS],
    }


def _thumbnail(ctx: Context) -> None:
    """Page 1 rendered small; a PDF pdfium cannot render still gets its other facts."""
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(ctx.path)
        try:
            page = document[0]
            scale = THUMBNAIL_PX / max(page.get_size())
            image = page.render(scale=scale).to_pil()
        finally:
            document.close()
    except pdfium.PdfiumError:
        return
    out = io.BytesIO()
    image.save(out, format="WEBP", quality=80)
    ctx.artifacts.write("thumbnail.webp", out.getvalue(), "image/webp")
