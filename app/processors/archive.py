"""`archive`: entries with sizes and the total uncompressed size of zip, tar and gz/bz2/xz,
without extracting anything; bombs (ratio, entry count, total size) are refused."""

from __future__ import annotations

import bz2
import gzip
import lzma
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from app.models import ErrorCode
from app.processors.base import Context, ProcessorError

MAX_ENTRIES = 10_000
MAX_TOTAL_BYTES = 16 * 1024**3  # a listing larger than this is a bomb, not an archive
MAX_RATIO = 200  # uncompressed / compressed, over the whole archive
LISTED_ENTRIES = 200
CHUNK_BYTES = 1024 * 1024
_STREAMS: dict[str, Callable[..., Any]] = {
    "application/gzip": gzip.open,
    "application/x-gzip": gzip.open,
    "application/x-bzip2": bz2.open,
    "application/x-xz": lzma.open,
}


class ArchiveProcessor:
    name = "archive"
    description = (
        "Entries and sizes of zip, tar, gz, bz2 and xz files; decompression bombs refused."
    )
    version = "1"
    in_auto = True

    def accepts(self, detected_type: str) -> bool:
        return (
            detected_type in ("application/zip", "application/x-tar") or detected_type in _STREAMS
        )

    def run(self, ctx: Context) -> dict[str, Any]:
        try:
            if ctx.detected_type == "application/zip":
                result = _zip(ctx)
            elif ctx.detected_type == "application/x-tar" or _is_tar(ctx):
                result = _tar(ctx)
            else:
                result = _stream(ctx)
        except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, lzma.LZMAError) as exc:
            raise ProcessorError(
                ErrorCode.INVALID_INPUT, f"The archive is corrupt or truncated ({exc})."
            ) from exc
        ctx.progress(1.0)
        return result


def _zip(ctx: Context) -> dict[str, Any]:
    with zipfile.ZipFile(ctx.path) as archive:
        infos = archive.infolist()
        _check_count(len(infos))
        total = sum(i.file_size for i in infos)
        _check_total(total, ctx.size)
        entries = [_entry(i.filename, i.file_size, i.is_dir()) for i in infos]
    return _listing("zip", entries, total)


def _tar(ctx: Context) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    total = 0
    # Streaming mode ("r|*"): members are read in order, nothing is extracted.
    with ctx.path.open("rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as archive:
        for member in archive:
            _check_count(len(entries) + 1)
            total += member.size
            _check_total(total, ctx.size)
            entries.append(_entry(member.name, member.size, member.isdir()))
            ctx.progress(raw.tell() / max(ctx.size, 1))
    return _listing("tar", entries, total)


def _stream(ctx: Context) -> dict[str, Any]:
    total = 0
    with _STREAMS[ctx.detected_type](ctx.path, "rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            total += len(chunk)
            _check_total(total, ctx.size)
    return {
        "format": ctx.detected_type.rsplit("/", 1)[1].removeprefix("x-"),
        "uncompressed_size": total,
    }


def _is_tar(ctx: Context) -> bool:
    """A compressed stream that holds a tar (tar.gz, tar.bz2, tar.xz)."""
    if ctx.detected_type not in _STREAMS:
        return False
    with _STREAMS[ctx.detected_type](ctx.path, "rb") as stream:
        block = stream.read(512)
    return len(block) == 512 and block[257:262] == b"ustar"


def _entry(name: str, size: int, is_dir: bool) -> dict[str, Any]:
    path = PurePosixPath(name)
    unsafe = path.is_absolute() or ".." in path.parts or "\\" in name
    return {"name": name[:300], "size": size, "dir": is_dir, "unsafe_path": unsafe}


def _listing(kind: str, entries: list[dict[str, Any]], total: int) -> dict[str, Any]:
    return {
        "format": kind,
        "entries": len(entries),
        "uncompressed_size": total,
        "unsafe_paths": sum(e["unsafe_path"] for e in entries),
        "listing": entries[:LISTED_ENTRIES],
    }


def _check_count(count: int) -> None:
    if count > MAX_ENTRIES:
        raise ProcessorError(
            ErrorCode.INVALID_INPUT, f"The archive has more than {MAX_ENTRIES:,} entries: refused."
        )


def _check_total(total: int, compressed: int) -> None:
    if total > MAX_TOTAL_BYTES or (total > 64 * 1024**2 and total > MAX_RATIO * max(compressed, 1)):
        raise ProcessorError(
            ErrorCode.INVALID_INPUT,
            "The archive expands far beyond its size (a decompression bomb): refused.",
        )
