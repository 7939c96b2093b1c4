"""Strict reading of multipart/form-data headers: the Content-Type and each part's
Content-Disposition. Anything ambiguous is refused rather than guessed at (PITFALLS §5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from python_multipart.multipart import parse_options_header

from app.errors import BadUpload, UnsupportedMediaType

# RFC 2046 §5.1.1: 1 to 70 characters from a small set, not ending in a space.
_BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a multipart/form-data Content-Type, or the error that refuses it."""
    media_type, options = parse_options_header(content_type or "")
    if media_type != b"multipart/form-data":
        shown = media_type.decode("latin-1") or "none"
        raise UnsupportedMediaType(
            f"Send the file as multipart/form-data (curl -F file=@PATH); "
            f"the request's Content-Type was {shown}."
        )
    boundary = options.get(b"boundary")
    if boundary is None:
        raise BadUpload("The multipart Content-Type has no boundary parameter.")
    if not _BOUNDARY_RE.fullmatch(boundary.decode("latin-1")):
        raise BadUpload("The multipart boundary must be 1 to 70 plain characters (RFC 2046).")
    return boundary


@dataclass(frozen=True)
class Disposition:
    name: str
    filename: str | None  # None: a text field; "" : a file input with no file chosen


def parse_disposition(raw: str) -> Disposition:
    """Parse `form-data; name="file"; filename="a.txt"`, refusing duplicates and bad quoting.

    RFC 7578 forbids the `filename*=` extended syntax in form-data, so starred parameters
    are ignored, as python-multipart does: the plain `filename` stays authoritative.
    """
    kind, *params = _split_params(raw)
    if kind.strip().lower() != "form-data":
        raise BadUpload("Each part's Content-Disposition must be form-data.")
    values: dict[str, str] = {}
    for param in params:
        key, eq, value = param.partition("=")
        key = key.strip().lower()
        if not eq or not key:
            raise BadUpload("A part's Content-Disposition has a malformed parameter.")
        if key.endswith("*"):
            continue
        if key in values:
            raise BadUpload(f"A part's Content-Disposition gives {key!r} twice.")
        values[key] = _unquote(value.strip())
    if "name" not in values:
        raise BadUpload("A part's Content-Disposition has no name parameter.")
    return Disposition(name=values["name"], filename=values.get("filename"))


def _split_params(raw: str) -> list[str]:
    """Split on semicolons outside quoted strings; an unterminated quote is an error."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in raw:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted:
        raise BadUpload("A part's Content-Disposition has an unterminated quoted string.")
    parts.append("".join(current))
    return [p for p in parts if p.strip()] or [""]


def _unquote(value: str) -> str:
    if not (len(value) >= 2 and value[0] == value[-1] == '"'):
        return value
    inner = value[1:-1]
    if inner[1:3] == ":\\" or inner.startswith("\\\\"):
        return inner  # a Windows path sent raw (old browsers): its backslashes are separators
    return inner.replace("\\\\", "\\").replace('\\"', '"')
