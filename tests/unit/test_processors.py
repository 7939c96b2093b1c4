"""Each built-in processor on real samples made by the libraries, and on corrupt ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.artifacts import Artifacts
from app.detect import detect_type, refine_text_type
from app.models import ErrorCode
from app.processors.archive import ArchiveProcessor
from app.processors.base import Context, Processor, ProcessorError
from app.processors.checksums import Checksums
from app.processors.csvstats import CsvProcessor
from app.processors.image import ImageProcessor
from app.processors.jsonstats import JsonProcessor
from app.processors.pdf import PdfProcessor
from app.processors.registry import builtin_registry
from app.processors.text import TextProcessor
from tests import samples


def run(processor: Processor, path: Path, tmp_path: Path) -> tuple[dict[str, Any], Artifacts]:
    detected = refine_text_type(detect_type(path), path.name, "application/octet-stream")
    assert processor.accepts(detected), detected
    progress: list[float] = []
    artifacts = Artifacts("AAAAAAAAAAAAAAAAAAAAAA", tmp_path / "artifacts")
    ctx = Context(
        job_id="AAAAAAAAAAAAAAAAAAAAAA",
        path=path,
        filename=path.name,
        size=path.stat().st_size,
        sha256="0" * 64,
        detected_type=detected,
        declared_type="application/octet-stream",
        progress=progress.append,
        artifacts=artifacts,
    )
    result = processor.run(ctx)
    assert progress and progress[-1] == 1.0
    assert progress == sorted(progress)
    return result, artifacts


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def failure(processor: Processor, path: Path, tmp_path: Path) -> ProcessorError:
    with pytest.raises(ProcessorError) as caught:
        run(processor, path, tmp_path)
    return caught.value


def test_image_facts_exif_without_gps_and_a_thumbnail(tmp_path: Path) -> None:
    result, artifacts = run(ImageProcessor(), samples.png(tmp_path / "a.png"), tmp_path)
    assert (result["format"], result["width"], result["height"]) == ("PNG", 640, 480)
    assert result["exif"]["Make"] == "HopperCam"
    assert result["exif"]["gps_removed"] is True
    assert "GPSInfo" not in result["exif"]
    assert max(_size(tmp_path / "artifacts" / "thumbnail.webp")) == 256
    assert artifacts.written["thumbnail.webp"].content_type == "image/webp"


def test_animated_gif_counts_frames(tmp_path: Path) -> None:
    result, _ = run(ImageProcessor(), samples.gif_animated(tmp_path / "a.gif"), tmp_path)
    assert result["frames"] == 3
    assert result["animated"] is True


def test_truncated_image_fails_as_invalid_input(tmp_path: Path) -> None:
    source = samples.png(tmp_path / "a.png", size=(2000, 2000))
    error = failure(ImageProcessor(), samples.truncated(source, tmp_path / "t.png"), tmp_path)
    assert error.code is ErrorCode.INVALID_INPUT


def test_image_bomb_is_refused_without_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(path)  # 400 MP, a few KB on disk
    error = failure(ImageProcessor(), path, tmp_path)
    assert "too large" in error.message


def test_pdf_pages_metadata_text_and_thumbnail(tmp_path: Path) -> None:
    result, _ = run(PdfProcessor(), samples.pdf(tmp_path / "a.pdf"), tmp_path)
    assert result["pages"] == 1
    assert result["encrypted"] is False
    assert result["metadata"]["title"] == "A test document"
    assert "Hello Hopper" in result["text"]
    assert max(_size(tmp_path / "artifacts" / "thumbnail.webp")) <= 256


def test_truncated_pdf_fails_clearly(tmp_path: Path) -> None:
    source = samples.pdf(tmp_path / "a.pdf")
    error = failure(PdfProcessor(), samples.truncated(source, tmp_path / "t.pdf", 0.3), tmp_path)
    assert error.code is ErrorCode.INVALID_INPUT


@pytest.mark.parametrize(
    ("text", "encoding"),
    [("héllo wörld\nzweite Zeile\n", "utf-8"), ("Grüße aus Köln, schöne Straße\n" * 20, "cp1252")],
)
def test_text_encoding_lines_words(tmp_path: Path, text: str, encoding: str) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(text.encode(encoding))
    result, _ = run(TextProcessor(), path, tmp_path)
    assert result["lines"] == text.count("\n")
    assert result["words"] == len(text.split())
    assert result["preview"].startswith(text[:10])


def test_csv_columns_types_and_nulls(tmp_path: Path) -> None:
    text = "id,price,when,name\n1,2.5,2026-01-01,a\n2,,2026-01-02,b\n3,4,,c\n"
    result, _ = run(CsvProcessor(), samples.csv_file(tmp_path / "a.csv", text), tmp_path)
    assert result["rows"] == 3
    assert result["has_header"] is True
    columns = {c["name"]: (c["type"], c["nulls"]) for c in result["columns"]}
    assert columns == {
        "id": ("integer", 0),
        "price": ("float", 1),
        "when": ("date", 1),
        "name": ("string", 0),
    }


def test_csv_with_semicolons(tmp_path: Path) -> None:
    text = "a;b\n" + "".join(f"{i};x{i}\n" for i in range(100))
    result, _ = run(CsvProcessor(), samples.csv_file(tmp_path / "s.csv", text), tmp_path)
    assert result["delimiter"] == ";"
    assert result["rows"] == 100


def test_json_object_and_array(tmp_path: Path) -> None:
    value = {"name": "x", "items": [{"a": [1, 2]}, {"b": None}]}
    result, _ = run(JsonProcessor(), samples.json_file(tmp_path / "o.json", value), tmp_path)
    assert result == {
        "valid": True,
        "top_level": "object",
        "keys": ["name", "items"],
        "items": 0,
        "depth": 4,
    }
    result, _ = run(
        JsonProcessor(), samples.json_file(tmp_path / "a.json", [1, {"x": 2}, [3]]), tmp_path
    )
    assert (result["top_level"], result["items"]) == ("array", 3)


def test_broken_json_says_where_it_breaks(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text('{"a": [1, 2, {"b": tru}]}')
    result, _ = run(JsonProcessor(), path, tmp_path)
    assert result["valid"] is False
    assert result["error"]


def test_zip_listing_and_unsafe_names(tmp_path: Path) -> None:
    path = samples.zip_archive(tmp_path / "a.zip", {"a.txt": b"x" * 10, "../evil": b"y"})
    result, _ = run(ArchiveProcessor(), path, tmp_path)
    assert (result["format"], result["entries"], result["uncompressed_size"]) == ("zip", 2, 11)
    assert result["unsafe_paths"] == 1


def test_tar_gz_and_plain_gz(tmp_path: Path) -> None:
    result, _ = run(
        ArchiveProcessor(), samples.tar_gz(tmp_path / "a.tgz", {"d/f": b"12345"}), tmp_path
    )
    assert (result["format"], result["entries"], result["uncompressed_size"]) == ("tar", 1, 5)
    result, _ = run(ArchiveProcessor(), samples.gz(tmp_path / "a.gz", b"z" * 1000), tmp_path)
    assert result["uncompressed_size"] == 1000


@pytest.mark.parametrize("kind", ["ratio", "count"])
def test_archive_bombs_are_refused(tmp_path: Path, kind: str) -> None:
    if kind == "ratio":
        path = samples.zip_archive(tmp_path / "bomb.zip", {"zeros": bytes(100 * 1024 * 1024)})
    else:
        path = samples.zip_archive(tmp_path / "many.zip", {f"f{i}": b"" for i in range(10_001)})
    error = failure(ArchiveProcessor(), path, tmp_path)
    assert error.code is ErrorCode.INVALID_INPUT


def test_corrupt_zip_fails_clearly(tmp_path: Path) -> None:
    source = samples.zip_archive(tmp_path / "a.zip", {"a.txt": b"x" * 5000})
    path = tmp_path / "c.zip"
    data = bytearray(source.read_bytes())
    data[-30:] = b"\0" * 30  # break the central directory
    path.write_bytes(bytes(data))
    with pytest.raises(ProcessorError):
        ArchiveProcessor().run(_ctx(path, "application/zip", tmp_path))


def _ctx(path: Path, detected: str, tmp_path: Path) -> Context:
    return Context(
        "AAAAAAAAAAAAAAAAAAAAAA",
        path,
        path.name,
        path.stat().st_size,
        "",
        detected,
        "",
        lambda _: None,
        Artifacts("AAAAAAAAAAAAAAAAAAAAAA", tmp_path / "x"),
    )


def test_checksums_match_hashlib(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "c.bin"
    path.write_bytes(bytes(range(256)) * 1000)
    result, _ = run(Checksums(), path, tmp_path)
    data = path.read_bytes()
    assert result == {name: hashlib.new(name, data).hexdigest() for name in result}
    assert set(result) == {"md5", "sha1", "sha512", "blake2b"}


@pytest.mark.parametrize(
    ("detected", "expected"),
    [
        ("image/png", ["inspect", "image"]),
        ("application/pdf", ["inspect", "pdf"]),
        ("text/csv", ["inspect", "text", "csv"]),
        ("application/json", ["inspect", "text", "json"]),
        ("application/zip", ["inspect", "archive"]),
        ("application/octet-stream", ["inspect"]),
    ],
)
def test_auto_picks_what_fits_the_detected_type(detected: str, expected: list[str]) -> None:
    assert builtin_registry().expand(["auto"], detected) == expected


def test_thumbnail_of_a_transparent_palette_image(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    Image.new("P", (300, 100)).save(path, transparency=0)
    _, artifacts = run(ImageProcessor(), path, tmp_path)
    assert _size(tmp_path / "artifacts" / "thumbnail.webp") == (256, 85)
    assert "thumbnail.webp" in artifacts.written
