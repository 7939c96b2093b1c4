"""The SHA-256 a client says its file has: RFC 9530 digest headers, or a hex form field.

`Content-Digest` and `Repr-Digest` are structured-field dictionaries
(`sha-256=:<base64>:, sha-512=:...:`). Hopper checks `sha-256` and ignores the other
algorithms (RFC 9530 lets a recipient ignore what it does not support), so a header that
names only others is accepted unchecked. Hopper never decodes a Content-Encoding, so for
its uploads the content and the representation are the same bytes: both headers name
the digest of the file as stored.
"""

from __future__ import annotations

import base64
import binascii
import re

from app.errors import BadUpload

ALGORITHM = "sha-256"
DIGEST_BYTES = 32
MAX_HEADER_CHARS = 4096
_KEY_RE = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_HEX_RE = re.compile(r"[0-9a-fA-F]{64}")


def expected_sha256(headers: dict[str, str | None]) -> str | None:
    """The hex SHA-256 the digest headers name (`{"Content-Digest": ..., ...}`), if any;
    400 for a malformed header, or for two headers that disagree."""
    found = {
        name: digest
        for name, value in headers.items()
        if value is not None and (digest := _sha256_member(name, value)) is not None
    }
    if len(set(found.values())) > 1:
        raise BadUpload(f"The {' and '.join(found)} headers name different SHA-256 digests.")
    return next(iter(found.values()), None)


def sha256_field(value: str) -> str:
    """A multipart `sha256` field: 64 hex digits, in either case."""
    value = value.strip()
    if not _HEX_RE.fullmatch(value):
        raise BadUpload("The sha256 field must be the file's SHA-256 as 64 hex digits.")
    return value.lower()


def check_sha256(actual: str, expected: str | None) -> None:
    if expected is not None and actual != expected:
        raise BadUpload(
            f"The file received has SHA-256 {actual}, not the {expected} the request "
            "gave: it changed on the way, or the digest is of another file. Nothing was "
            "kept; send it again."
        )


def _sha256_member(name: str, value: str) -> str | None:
    """Parse one header's dictionary; return its sha-256 as hex, or None if absent."""
    if len(value) > MAX_HEADER_CHARS:
        raise BadUpload(f"The {name} header is over {MAX_HEADER_CHARS} characters.")
    found: str | None = None
    for member in value.split(","):  # base64 and parameters hold no comma
        key, eq, rest = member.strip().partition("=")
        item = rest.split(";", 1)[0].strip()  # parameters are allowed and ignored
        if not _KEY_RE.fullmatch(key) or not eq or not item:
            raise BadUpload(f"The {name} header is malformed: give it as sha-256=:<base64>:.")
        if key != ALGORITHM:
            continue
        if found is not None:
            raise BadUpload(f"The {name} header gives {ALGORITHM} twice.")
        found = _decode(name, item)
    return found


def _decode(name: str, item: str) -> str:
    if not (len(item) >= 2 and item[0] == item[-1] == ":"):
        raise BadUpload(f"The {name} header's {ALGORITHM} must be a byte sequence, :<base64>:.")
    try:
        raw = base64.b64decode(item[1:-1], validate=True)
    except binascii.Error:
        raise BadUpload(f"The {name} header's {ALGORITHM} is not valid base64.") from None
    if len(raw) != DIGEST_BYTES:
        raise BadUpload(f"The {name} header's {ALGORITHM} is not 32 bytes long.")
    return raw.hex()
