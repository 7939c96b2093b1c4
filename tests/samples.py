"""Real sample files, made by the libraries that read them, and corrupt versions of them."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zipfile
from pathlib import Path

from PIL import Image

# A one-page PDF with a line of text; pypdf rewrites it (tests/samples.pdf).
_TEXT = b"BT /F1 18 Tf 20 60 Td (Hello Hopper) Tj ET"
_PDF_OBJECTS = [
    b"<< /Type /Catalog /Pages 2 0 R >>",
    b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
    b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 144] /Contents 4 0 R"
    b" /Resources << /Font << /F1 5 0 R >> >> >>",
    b"<< /Length %d >>\nstream\n%s\nendstream" % (len(_TEXT), _TEXT),
    b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
]


def png(path: Path, size: tuple[int, int] = (640, 480), gps: bool = True) -> Path:
    image = Image.new("RGB", size, (200, 40, 40))
    exif = Image.Exif()
    exif[0x010F] = "HopperCam"  # Make
    exif[0x0110] = "Model 1"  # Model
    if gps:
        exif[0x8825] = {1: "N", 2: (48.0, 51.0, 30.0)}
    image.save(path, format="PNG", exif=exif)
    return path


def gif_animated(path: Path) -> Path:
    frames = [Image.new("RGB", (32, 32), color) for color in ("red", "green", "blue")]
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    return path


def _with_xref(objects: list[bytes]) -> bytes:
    """A PDF file around numbered objects, with the cross-reference table they need."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer << /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def pdf(path: Path) -> Path:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(_with_xref(_PDF_OBJECTS))))
    writer.add_metadata({"/Title": "A test document", "/Author": "Hopper tests"})
    with path.open("wb") as f:
        writer.write(f)
    return path


def zip_archive(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def tar_gz(path: Path, entries: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def gz(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data))
    return path


def csv_file(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def json_file(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value))
    return path


def truncated(source: Path, target: Path, keep: float = 0.5) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target
