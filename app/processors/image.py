"""`image`: format, dimensions, mode, frames and an EXIF summary (GPS removed); a thumbnail."""

from __future__ import annotations

import io
import warnings
from typing import Any

from app.models import ErrorCode
from app.processors.base import Context, ProcessorError

THUMBNAIL_PX = 256
MAX_PIXELS = 100_000_000  # past this Pillow's bomb check fires: refused, never decoded
EXIF_KEPT = ("Make", "Model", "DateTime", "Orientation", "Software", "Artist", "Copyright")
GPS_TAG = 0x8825


class ImageProcessor:
    name = "image"
    description = "Format, size, mode, frames, EXIF summary (GPS removed) and a 256 px thumbnail."
    version = "1"
    in_auto = True

    def accepts(self, detected_type: str) -> bool:
        return detected_type.startswith("image/") and detected_type != "image/svg+xml"

    def run(self, ctx: Context) -> dict[str, Any]:
        from PIL import Image, UnidentifiedImageError  # heavy: loaded in the worker only

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                return self._inspect(ctx)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ProcessorError(
                ErrorCode.INVALID_INPUT,
                f"The image is too large to decode safely (over {MAX_PIXELS:,} pixels).",
            ) from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ProcessorError(
                ErrorCode.INVALID_INPUT, f"The image is corrupt or truncated ({exc})."
            ) from exc

    def _inspect(self, ctx: Context) -> dict[str, Any]:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        with Image.open(ctx.path) as im:
            result: dict[str, Any] = {
                "format": im.format,
                "width": im.width,
                "height": im.height,
                "mode": im.mode,
                "frames": getattr(im, "n_frames", 1),
                "animated": bool(getattr(im, "is_animated", False)),
                "exif": _exif_summary(im),
            }
            ctx.progress(0.3)
            ctx.artifacts.write("thumbnail.webp", _thumbnail(im), "image/webp")
        ctx.progress(1.0)
        return result


def _exif_summary(im: Any) -> dict[str, Any]:
    from PIL import ExifTags

    exif = im.getexif()
    names = {tag: ExifTags.TAGS.get(tag, str(tag)) for tag in exif}
    summary: dict[str, Any] = {
        names[tag]: str(value)[:200] for tag, value in exif.items() if names[tag] in EXIF_KEPT
    }
    summary["gps_removed"] = GPS_TAG in exif  # location never leaves the server
    return summary


def _thumbnail(im: Any) -> bytes:
    im.seek(0)
    frame = im.convert("RGBA" if im.mode in ("RGBA", "LA", "P", "PA") else "RGB")
    frame.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    out = io.BytesIO()
    frame.save(out, format="WEBP", quality=80)
    return out.getvalue()
