"""The tus 1.0 protocol's vocabulary: versions, extensions, header values and its errors.

Plain values only (no FastAPI): what the headers mean, parsed and checked, so the routes
stay thin and the upload logic (app.resumable) deals in numbers and strings.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Any

from app.errors import BadUpload, HopperError

TUS_VERSION = "1.0.0"
# Upload-Defer-Length and concatenation are not offered: a length is known at creation.
TUS_EXTENSIONS = "creation,creation-with-upload,termination,expiration,checksum"
CHECKSUM_ALGORITHMS = ("md5", "sha1", "sha256", "sha512")
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
MAX_METADATA_BYTES = 8 * 1024
_KEY_RE = re.compile(r"[!-+\--~]+")  # visible ASCII but the comma


class TusVersionUnsupported(HopperError):
    status_code = 412

    def __init__(self) -> None:
        super().__init__(
            f"Send `Tus-Resumable: {TUS_VERSION}`: it is the tus version this server speaks."
        )
        self.headers = {"Tus-Version": TUS_VERSION}


class OffsetMismatch(HopperError):
    status_code = 409


class UploadLocked(HopperError):
    """Another PATCH of the same upload is under way."""

    status_code = 423


class UploadGone(HopperError):
    status_code = 410


class ChecksumMismatch(HopperError):
    status_code = 460  # the checksum extension's own status


def check_version(value: str | None) -> None:
    if value != TUS_VERSION:
        raise TusVersionUnsupported


def parse_length(value: str | None) -> int:
    if value is None:
        raise BadUpload(
            "Send Upload-Length with the file's size in bytes (deferred lengths are not supported)."
        )
    if not value.isdigit() or len(value) > 19:
        raise BadUpload("Upload-Length must be a whole number of bytes.")
    return int(value)


def parse_offset(value: str | None) -> int:
    if value is None or not value.isdigit() or len(value) > 19:
        raise BadUpload("Send Upload-Offset: the number of bytes the server already has.")
    return int(value)


def parse_metadata(value: str | None) -> dict[str, str]:
    """`key base64,key base64,key`: the values decoded (UTF-8)."""
    if value is None or not value.strip():
        return {}
    if len(value) > MAX_METADATA_BYTES:
        raise BadUpload(f"Upload-Metadata is over {MAX_METADATA_BYTES // 1024} KiB.")
    found: dict[str, str] = {}
    for pair in value.split(","):
        key, _, encoded = pair.strip().partition(" ")
        if not _KEY_RE.fullmatch(key) or key in found or " " in encoded.strip():
            raise BadUpload(f"Upload-Metadata has a malformed or repeated key: {key[:40]!r}.")
        try:
            found[key] = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise BadUpload(f"Upload-Metadata's {key!r} is not base64 of UTF-8 text.") from None
    return found


@dataclass(frozen=True)
class Checksum:
    """A PATCH's Upload-Checksum: the digest its bytes must have."""

    algorithm: str
    digest: bytes

    def hasher(self) -> Any:
        return hashlib.new(self.algorithm)


def parse_checksum(value: str | None) -> Checksum | None:
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    algorithm = algorithm.lower()
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise BadUpload(
            f"Upload-Checksum names an algorithm this server does not offer; use one of "
            f"{', '.join(CHECKSUM_ALGORITHMS)}."
        )
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        raise BadUpload("Upload-Checksum's digest is not base64.") from None
    if len(digest) != hashlib.new(algorithm).digest_size:
        raise BadUpload(f"Upload-Checksum's digest is not the size of a {algorithm} digest.")
    return Checksum(algorithm, digest)


def http_date(moment: Any) -> str:
    """RFC 9110 date, as Upload-Expires takes it."""
    return format_datetime(moment, usegmt=True)
