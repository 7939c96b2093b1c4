"""Fuzzing against real servers: random and mutated multipart bodies sent to POST /uploads
over a raw socket (hypothesis), and the whole API from its OpenAPI description
(schemathesis). Whatever arrives: never a 5xx, a 4xx says why in JSON, a 202 stored
exactly the bytes sent, nothing is left on disk and the server keeps serving.

HOPPER_FUZZ_EXAMPLES  inputs per hypothesis run (default 600 raw bodies, and 1/16 of that
                      per API operation and mode: the CI budget, derandomized, so CI
                      sees the same inputs every time).
HOPPER_FUZZ_SECONDS   long mode (scripts/fuzz): random runs one after another until that
                      many seconds have passed, 70% for the raw bodies, 30% for schemathesis.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import string
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import hypothesis.configuration
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.filenames import sanitize_filename
from app.ingest import FRAMING_ALLOWANCE_BYTES, MAX_FIELD_BYTES, MAX_PART_HEADERS, MAX_PARTS
from app.processors.registry import MAX_PIPELINE, builtin_processors
from tests.helpers import Server, file_part, multipart, raw_request, wait_until

EXAMPLES = int(os.environ.get("HOPPER_FUZZ_EXAMPLES", "600"))
SECONDS = float(os.environ.get("HOPPER_FUZZ_SECONDS", "0"))
LONG = SECONDS > 0
BATCH = max(EXAMPLES, 500) if LONG else EXAMPLES  # inputs per hypothesis run
LIMIT = 64 * 1024  # HOPPER_MAX_UPLOAD_BYTES of the fuzzed servers: bodies reach past it
REQUEST_TIMEOUT_S = 10.0  # every example ends long before this, or it is a hang
KEEP_JOBS = 100  # accepted jobs kept; older ones are deleted (a long run stays small)
PLAIN_400 = b"Invalid HTTP request received."  # uvicorn's parser, before the app sees it

# Hypothesis keeps nothing in the work tree: no example database, its caches in a tmp dir.
hypothesis.configuration.set_hypothesis_home_dir(
    Path(tempfile.gettempdir()) / f"hopper-hypothesis-{os.getuid()}"
)
# tus PATCH bodies (and creation-with-upload) are raw bytes, like application/octet-stream.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
pytestmark = pytest.mark.timeout(int(SECONDS * 1.5) + 600 if LONG else 300)


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=not LONG,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )


def _batches(share: float) -> Iterator[int]:
    """CI: one run. Long mode: runs until this fuzzer's share of HOPPER_FUZZ_SECONDS is up."""
    deadline = time.monotonic() + SECONDS * share
    batch = 0
    while batch == 0 or time.monotonic() < deadline:
        yield batch
        batch += 1


def _report(what: str, tried: int, started: float, outcomes: Counter[Any]) -> str:
    elapsed = time.monotonic() - started
    common = ", ".join(f"{k}: {n}" for k, n in outcomes.most_common(12))
    rate = tried / elapsed * 60 if elapsed else 0.0
    return f"fuzz {what}: {tried} inputs in {elapsed:.0f} s ({rate:.0f}/min); {common}"


def _say(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """The figures of a run, shown even when pytest captures output."""
    with capsys.disabled():
        sys.stdout.write(f"\n{line}\n")


# ---------------------------------------------------------------------------------------
# Raw multipart bodies


TOKEN = string.ascii_letters + string.digits + "-_."
BOUNDARY_CHARS = string.ascii_letters + string.digits + "'()+_,-./:=?"
HTTP_TOKEN = set(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")
KNOWN_PROCESSORS = {"auto", *(p.name for p in builtin_processors())}
OVER_PART_LIMITS = ("many-parts", "many-headers", "big-field")  # each a 400 as it is parsed
DISPOSITION_KEYS = [b"Content-Disposition", b"content-disposition", b"CONTENT-DISPOSITION"]
BROWSER_ACCEPTS = {"text/html", "text/html,application/xhtml+xml,*/*;q=0.8"}

HOSTILE_FILENAMES = [
    b"../../../etc/passwd",
    b"..\\..\\boot.ini",
    b"/etc/cron.d/x",
    b"C:\\Users\\x\\evil.txt",
    b"\\\\server\\share\\x.txt",
    b"a\x00b.txt",
    b"\x00",
    "invoice\u202etxt.exe".encode(),
    "\u200f\u2066\u2069x.txt".encode(),
    "\ufeffbom.txt".encode(),
    b"\xff\xfe.txt",
    b"\xc3",
    b"\x1b[31mred\x1b[0m.txt",
    b"tab\there.txt",
    b"CON",
    b"nul.txt",
    b"LPT1. ",
    b" . . ",
    b"..",
    b".",
    b"%2e%2e%2fetc%2fpasswd",
    b"a/b/../../c",
    "naïve 東京.txt".encode(),
    "e\u0301.txt".encode(),
    b"a" * 300,
    ("\u00e9" * 200).encode(),
    ("\U0001f600" * 100).encode(),
    b"x" * 3000,
]
PROCESSOR_SPECS = [
    "inspect",
    "checksums",
    "inspect,checksums",
    " inspect , checksums ,",
    "auto",
    "auto,checksums",
    "inspect,inspect",
    "",
    ",",
    " ",
    "nope",
    "inspect,nope",
    "INSPECT",
    ",".join(["inspect"] * (MAX_PIPELINE + 1)),
    "inspect\x00",
]
CONTENT_TYPES = [
    None,
    "",
    "text/plain",
    "application/octet-stream",
    "image/png",
    "application/json; charset=utf-8",
    "x" * 300,
]


def _short(value: object) -> str:
    """repr, with long bytes cut in the middle: examples stay readable when they fail."""
    if isinstance(value, bytes) and len(value) > 120:
        return f"{value[:60]!r}...<{len(value)} bytes>...{value[-20:]!r}"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return repr(value)


@dataclass(repr=False)
class Part:
    headers: list[bytes]
    data: bytes

    def __repr__(self) -> str:
        return f"Part({_short(self.headers)}, {_short(self.data)})"


@dataclass(repr=False)
class Upload:
    """One generated request: a multipart body built from parts, how it is framed, and
    what is mutated. Without mutations its outcome is predicted (see _expected); with
    them, only the properties that hold for every input are checked."""

    parts: list[Part]
    file_data: bytes
    filename: bytes
    file_ctype: bytes | None
    fields: list[tuple[str, bytes]]
    boundary: str
    quote_boundary: bool
    ctype_style: str
    query: str | None
    accept: str | None
    expect_continue: bool
    key: str | None  # Idempotency-Key, from a small alphabet so that keys repeat
    preamble: bytes
    epilogue: bytes
    framing: str
    chunk_sizes: list[int]
    body_mutations: list[tuple[str, int, bytes]]
    structure: str
    file_index: int

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={_short(v)}" for k, v in vars(self).items())
        return f"Upload({fields})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis's printer
        printer.text(repr(self))

    def body(self) -> bytes:
        parts = list(self.parts)
        if self.structure == "drop-file":
            del parts[self.file_index]
        if self.structure == "dup-part" and parts:
            parts.insert(0, parts[-1])
        if self.structure == "dup-header" and parts:
            first = parts[0]
            parts[0] = Part(first.headers + first.headers[:1], first.data)
        if self.structure == "many-headers":
            file = parts[self.file_index]
            extra = [b"X-H%d: v" % i for i in range(MAX_PART_HEADERS)]
            parts[self.file_index] = Part(file.headers + extra, file.data)
        if self.structure == "many-parts":
            parts += [Part([b'Content-Disposition: form-data; name="t"'], b"v")] * MAX_PARTS
        if self.structure in ("big-field", "max-field"):
            size = MAX_FIELD_BYTES + (self.structure == "big-field")
            parts.append(Part([b'Content-Disposition: form-data; name="big"'], b"b" * size))
        out = self.preamble + multipart(
            [(p.headers, p.data) for p in parts],
            boundary=self.boundary,
            close=self.structure != "no-close",
        )
        out += self.epilogue
        for kind, pos, payload in self.body_mutations:
            out = _mutate(out, kind, pos, payload)
        return out

    def content_type(self) -> str | None:
        b = f'"{self.boundary}"' if self.quote_boundary else self.boundary
        return {
            "plain": f"multipart/form-data; boundary={b}",
            "spaced": f"multipart/form-data ;  boundary={b} ",
            "upper": f"Multipart/Form-Data; Boundary={b}",
            "charset-first": f"multipart/form-data; charset=utf-8; boundary={b}",
            "charset-last": f"multipart/form-data; boundary={b}; charset=utf-8",
            "no-boundary": "multipart/form-data",
            "two-boundaries": f"multipart/form-data; boundary={b}; boundary=other",
            "mixed": f"multipart/mixed; boundary={b}",
            "json": "application/json",
            "none": None,
        }[self.ctype_style]


def _mutate(body: bytes, kind: str, pos: int, payload: bytes) -> bytes:
    at = pos % (len(body) + 1)
    if kind == "flip" and body:
        at %= len(body)
        return body[:at] + bytes([body[at] ^ (payload[0] | 1)]) + body[at + 1 :]
    if kind == "truncate":
        return body[:at]
    if kind == "insert":
        return body[:at] + payload + body[at:]
    if kind == "delete":
        return body[:at] + body[at + len(payload) :]
    if kind == "bare-lf":
        return body.replace(b"\r\n", b"\n", 1 + pos % 4)
    if kind == "repeat":
        return body[:at] + body[at : at + len(payload)] * 3 + body[at:]
    return body


def _plain_framing(upload: Upload) -> bool:
    """Framed as HTTP allows, the whole body sent, header values of visible ASCII: the
    request reaches the app (the HTTP parser may refuse a control character)."""
    values = [upload.content_type() or "", upload.key or ""]
    visible = all(" " <= c <= "~" for value in values for c in value)
    return visible and upload.framing in ("length", "length-split", "chunked", *KEEP_ALIVE)


def _valid_boundary(b: str) -> bool:
    return 1 <= len(b) <= 70 and not b.endswith(" ") and all(c in BOUNDARY_CHARS + " " for c in b)


def _valid_key(key: str) -> bool:
    return 1 <= len(key) <= 255 and all("!" <= c <= "~" for c in key)


def _pipeline_ok(spec: str) -> bool:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    return 0 < len(names) <= MAX_PIPELINE and all(n in KNOWN_PROCESSORS for n in names)


def _pipeline(spec: str) -> list[str]:
    return list(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))


@st.composite
def filenames(draw: st.DrawFn) -> bytes:
    safe_text = st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters='"\\\r\n'), max_size=40
    )
    choice: bytes = draw(
        st.one_of(
            st.sampled_from(HOSTILE_FILENAMES),
            safe_text.map(lambda s: s.encode()),
            st.binary(max_size=40),
            st.just(b""),
            st.integers(200, 1200).map(lambda n: b"f" * n + b".txt"),
        )
    )
    return choice


@st.composite
def file_datas(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["small"] * 3 + ["empty", "text", "near-limit", "limit"]))
    if kind == "empty":
        return b""
    if kind == "text":
        return draw(st.text(max_size=300)).encode()
    if kind in ("near-limit", "limit"):
        size = draw(st.integers(LIMIT - 8, LIMIT + 8) if kind == "near-limit" else st.just(LIMIT))
        size += kind == "limit" and draw(st.booleans())
        pattern = draw(st.binary(min_size=1, max_size=16))
        return (pattern * (size // len(pattern) + 1))[:size]
    data: bytes = draw(st.binary(max_size=2048))
    return data


def _disposition(draw: st.DrawFn, name: bytes, filename: bytes | None) -> bytes:
    key = draw(st.sampled_from(DISPOSITION_KEYS))
    sep = draw(st.sampled_from([b"; ", b";", b" ; ", b";\t"]))
    quoted_name = draw(st.booleans()) or not set(name.decode()) <= HTTP_TOKEN
    params = [b"name=" + (b'"' + name + b'"' if quoted_name else name)]
    if filename is not None:
        params.append(b'filename="' + filename + b'"')
        if draw(st.booleans()):
            params.reverse()
    return key + b": form-data" + sep + sep.join(params)


@st.composite
def uploads(draw: st.DrawFn) -> Upload:
    filename = draw(filenames())
    data = draw(file_datas())
    file_ctype = draw(st.sampled_from(CONTENT_TYPES))
    file_headers = [_disposition(draw, b"file", filename)]
    if file_ctype is not None:
        file_headers.append(b"Content-Type: " + file_ctype.encode())
    extra_names = st.text(string.ascii_letters + "-", min_size=1, max_size=12)
    for extra in draw(st.lists(extra_names, max_size=3)):
        file_headers.append(b"X-" + extra.encode() + b": " + draw(st.binary(max_size=20)))
    if draw(st.booleans()):
        draw(st.randoms()).shuffle(file_headers)
    file_part_ = Part(file_headers, data)

    fields: list[tuple[str, bytes]] = []
    names = st.text(TOKEN, min_size=1, max_size=20).filter(lambda n: n != "file")
    for name in draw(st.lists(names, max_size=4)):
        fields.append((name, draw(st.binary(max_size=200))))
    if draw(st.booleans()):
        fields.append(("processors", draw(st.sampled_from(PROCESSOR_SPECS)).encode()))
    text_parts = [Part([_disposition(draw, n.encode(), None)], v) for n, v in fields]
    position = draw(st.integers(0, len(text_parts)))
    parts = [*text_parts[:position], file_part_, *text_parts[position:]]

    boundary = draw(
        st.one_of(
            st.text(BOUNDARY_CHARS, min_size=1, max_size=70),
            st.text(BOUNDARY_CHARS + " ", min_size=1, max_size=70),
            st.sampled_from(["", "a" * 71, "a" * 300, "é", "a\x01b", "ab ", "-", "--"]),
        )
    )
    needs_quotes = not set(boundary) <= HTTP_TOKEN or not boundary
    mutations = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["flip", "truncate", "insert", "delete", "bare-lf", "repeat"]),
                st.integers(0, 1 << 20),
                st.binary(min_size=1, max_size=64),
            ),
            max_size=3,
        )
        if draw(st.integers(0, 2)) == 0
        else st.just([])
    )
    return Upload(
        parts=parts,
        file_data=data,
        filename=filename,
        file_ctype=None if file_ctype is None else file_ctype.encode(),
        fields=fields,
        boundary=boundary,
        quote_boundary=needs_quotes or draw(st.booleans()),
        ctype_style=draw(
            st.sampled_from(
                ["plain"] * 6
                + ["spaced", "upper", "charset-first", "charset-last"]
                + ["no-boundary", "two-boundaries", "mixed", "json", "none"]
            )
        ),
        query=draw(st.none() | st.none() | st.sampled_from(PROCESSOR_SPECS)),
        accept=draw(
            st.sampled_from([None, None, "*/*", "application/json", *sorted(BROWSER_ACCEPTS)])
        ),
        expect_continue=draw(st.integers(0, 4)) == 0,
        key=draw(
            st.none()
            | st.none()
            | st.text("abc", min_size=1, max_size=3)
            | st.sampled_from(["", "k" * 255, "k" * 256, "a b", "\u00e9", "a\x7f", "a\tb"])
        ),
        preamble=draw(st.sampled_from([b"", b"", b"\r\n", b"\r\n" * 50])),
        epilogue=draw(st.sampled_from([b"", b"", b"junk", b"\r\n--x--\r\n", b"\x00" * 100])),
        framing=draw(
            st.sampled_from(
                ["length"] * 8
                + ["length-split", "length-split", "chunked", "chunked", "chunked"]
                + ["keep-alive", "keep-alive", "keep-alive-chunked"]
                + ["short-length", "long-length", "no-length", "length-and-chunked"]
                + ["bad-chunk", "chunked-cut", "two-lengths", "bad-header"]
            )
        ),
        chunk_sizes=draw(st.lists(st.integers(1, 70_000), min_size=1, max_size=6)),
        body_mutations=mutations,
        structure=draw(
            st.sampled_from(
                ["ok"] * 12
                + ["dup-part", "dup-header", "no-close", "drop-file", "max-field"]
                + list(OVER_PART_LIMITS)
            )
        ),
        file_index=position,
    )


@dataclass
class Sent:
    status: int
    headers: dict[str, str]
    body: bytes
    timed_out: bool
    half_closed: bool
    rest: bytes  # what came after the first response (keep-alive: the follow-up's answer)


def _split(body: bytes, sizes: list[int]) -> list[bytes]:
    pieces, i, k = [], 0, 0
    floor = len(body) // 2000  # at most a few thousand pieces: each example stays fast
    while i < len(body):
        n = max(sizes[k % len(sizes)], floor)
        pieces.append(body[i : i + n])
        i, k = i + n, k + 1
    return pieces


def _frame(upload: Upload, body: bytes) -> tuple[bytes, list[bytes], bool]:
    """Request head, body pieces, and whether to half-close after sending them."""
    path = "/uploads"
    if upload.query is not None:
        path += "?processors=" + quote(upload.query)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\n".encode()
    ctype = upload.content_type()
    if ctype is not None:
        head += b"Content-Type: " + ctype.encode() + b"\r\n"
    if upload.accept is not None:
        head += b"Accept: " + upload.accept.encode() + b"\r\n"
    if upload.expect_continue:
        head += b"Expect: 100-continue\r\n"
    if upload.key is not None:
        head += b"Idempotency-Key: " + upload.key.encode("latin-1") + b"\r\n"
    if upload.framing in KEEP_ALIVE:  # then a second request on the same connection
        framing, pieces, _ = FRAMINGS[KEEP_ALIVE[upload.framing]](body, upload.chunk_sizes)
        return head + framing + b"\r\n", [*pieces, FOLLOW_UP], False
    framing, pieces, half_close = FRAMINGS[upload.framing](body, upload.chunk_sizes)
    return head + framing + b"Connection: close\r\n\r\n", pieces, half_close


Framing = tuple[bytes, list[bytes], bool]  # headers, body pieces, half-close after them


def _chunked(body: bytes, sizes: list[int]) -> list[bytes]:
    return [b"%x\r\n" % len(p) + p + b"\r\n" for p in _split(body, sizes)]


def _length(n: int) -> bytes:
    return f"Content-Length: {n}\r\n".encode()


TE = b"Transfer-Encoding: chunked\r\n"
KEEP_ALIVE = {"keep-alive": "length", "keep-alive-chunked": "chunked"}
FOLLOW_UP = b"GET /processors HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
END = b"0\r\n\r\n"
FRAMINGS: dict[str, Callable[[bytes, list[int]], Framing]] = {
    "length": lambda body, _: (_length(len(body)), [body], False),
    "length-split": lambda body, sizes: (_length(len(body)), _split(body, sizes), False),
    "chunked": lambda body, sizes: (TE, [*_chunked(body, sizes), END], False),
    # The body is longer than Content-Length: the rest reads as a next request.
    "short-length": lambda body, _: (_length(len(body) // 2), [body], False),
    # The client stops sending before Content-Length: the server sees the end of input.
    "long-length": lambda body, sizes: (_length(len(body) + sizes[0]), [body], True),
    "length-and-chunked": lambda body, sizes: (
        _length(len(body)) + TE,
        [*_chunked(body, sizes), END],
        False,
    ),
    "bad-chunk": lambda body, sizes: (TE, [b"zz\r\n", *_chunked(body, sizes), END], False),
    "chunked-cut": lambda body, sizes: (TE, _chunked(body, sizes)[:-1] or [b"5\r\nab"], True),
    "two-lengths": lambda body, _: (_length(len(body)) + _length(len(body) + 1), [body], False),
    "bad-header": lambda body, _: (_length(len(body)) + b"X-Bad\x00: \x7f\r\n", [body], False),
    # Neither length nor chunked: no body, so the body reads as a next request.
    "no-length": lambda body, _: (b"", [body], False),
}


def _exchange(port: int, head: bytes, pieces: list[bytes], half_close: bool) -> Sent:
    data, timed_out = b"", False
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT_S) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The server may answer and close before it has all (a 415 from the headers).
        with contextlib.suppress(OSError):  # BrokenPipe, ConnectionReset, ENOTCONN
            s.sendall(head)
            for piece in pieces:
                s.sendall(piece)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        try:
            while piece := s.recv(65536):
                data += piece
        except ConnectionResetError:
            pass
        except TimeoutError:
            timed_out = True
    status, headers, body, rest = _parse_response(data)
    return Sent(status, headers, body, timed_out, half_close, rest)


def _parse_response(data: bytes) -> tuple[int, dict[str, str], bytes, bytes]:
    """The first final response (interim 100s skipped): status, headers, body, and the
    bytes after it."""
    while data.startswith(b"HTTP/1.1 1") and b"\r\n\r\n" in data:
        data = data.split(b"\r\n\r\n", 1)[1]
    if not data.startswith(b"HTTP/1.1 ") or b"\r\n\r\n" not in data:
        return 0, {}, data, b""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    body = b""
    if "content-length" in headers:
        length = int(headers["content-length"])
        body, rest = rest[:length], rest[length:]
    elif headers.get("transfer-encoding") == "chunked":
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                rest = rest.removeprefix(b"\r\n")
                break
            body, rest = body + rest[:size], rest[size + 2 :]
    else:
        body, rest = rest, b""
    return int(lines[0].split()[1]), headers, body, rest


def _expected(upload: Upload, body_size: int) -> int | None:
    """The status a clean request must get, or None when anything was mutated."""
    mutated = upload.body_mutations or upload.epilogue == b"\r\n--x--\r\n"
    if mutated or upload.structure not in ("ok", "max-field", *OVER_PART_LIMITS):
        return None
    if not _plain_framing(upload):
        return None
    if upload.query is not None and not _pipeline_ok(upload.query):
        return 400
    if upload.key is not None and not _valid_key(upload.key):
        return 400
    if body_size > LIMIT + FRAMING_ALLOWANCE_BYTES:
        # Refused from its Content-Length; chunked, it depends on what is parsed first
        return None if "chunked" in upload.framing else 413
    if upload.ctype_style in ("mixed", "json", "none"):
        return 415
    if upload.ctype_style in ("no-boundary", "two-boundaries"):
        return None  # two boundary parameters: which one counts is the parser's choice
    if not _valid_boundary(upload.boundary):
        return 400
    expected = _expected_from_parts(upload)
    if upload.structure in OVER_PART_LIMITS:
        # Refused as it is parsed: unless the file went over the limit first
        return None if expected in (None, 413) else 400
    return expected


def _expected_from_parts(upload: Upload) -> int | None:
    delimiter = b"--" + upload.boundary.encode()
    for part in upload.parts:
        # The delimiter inside a part, or a header the parser may refuse: not predicted.
        raw = b"\r\n".join(part.headers) + b"\r\n\r\n" + part.data + b"\r\n"
        if delimiter in raw or any(len(h) > 3900 for h in part.headers):
            return None
        extra = [h for h in part.headers if h.startswith(b"X-")]
        if any(b"\r" in h or b"\n" in h or b"\x00" in h for h in extra):
            return None
    if any(c in upload.filename for c in b'"\\\r\n'):
        return None
    if upload.filename == b"" and upload.file_data == b"":
        return 400
    if len(upload.file_data) > LIMIT:
        return 413
    spec = _processors_spec(upload)
    if spec is not None and not _pipeline_ok(spec):
        return 400
    return 303 if upload.accept in BROWSER_ACCEPTS else 202


def _processors_spec(upload: Upload) -> str | None:
    field_value = ""
    for name, value in upload.fields:
        if name == "processors":
            field_value = value.decode("utf-8", errors="replace")
    return field_value or upload.query


def _check_job(
    server: Server, job: dict[str, Any], upload: Upload, *, exact: bool, fresh: bool
) -> None:
    """A job's document matches what is stored; for a clean body, what was sent. `fresh`:
    the 202's own document (a later one may show the job run, `auto` expanded)."""
    stored = (server.data_dir / "files" / job["id"]).read_bytes()
    assert job["size"] == len(stored) <= LIMIT
    assert job["sha256"] == hashlib.sha256(stored).hexdigest()
    assert job["status"] == "queued" or not fresh
    if not exact:
        return
    assert stored == upload.file_data
    assert job["filename"] == sanitize_filename(upload.filename.decode("utf-8", errors="replace"))
    ctype = (upload.file_ctype or b"").strip()
    assert job["content_type"] == (ctype.decode("latin-1")[:255] or "application/octet-stream")
    spec = _processors_spec(upload)
    if fresh:
        assert job["processors"] == (_pipeline(spec) if spec else ["auto"])


def _describe(upload: Upload, head: bytes, body: bytes, sent: Sent) -> str:
    """What was sent and what came back, in full where it matters (pytest shortens reprs)."""
    return (
        f"\nframing={upload.framing} structure={upload.structure} key={upload.key!r} "
        f"mutations={upload.body_mutations!r}\nrequest head: {head!r}\n"
        f"body ({len(body)} bytes): {body[:600]!r}\n"
        f"answer: {sent.status} {sent.headers!r} {sent.body[:600]!r}\n"
    )


class RawFuzz:
    """Sends each generated upload and checks what came back."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.tried = 0
        self.outcomes: Counter[str] = Counter()
        self.kept: deque[str] = deque()
        self.keys: dict[str, str] = {}  # Idempotency-Key -> its job, while the job lives

    def run_one(self, upload: Upload) -> None:
        self.tried += 1
        body = upload.body()
        head, pieces, half_close = _frame(upload, body)
        sent = _exchange(self.server.port, head, pieces, half_close)
        self.outcomes[f"{sent.status}"] += 1
        context = _describe(upload, head, body, sent)
        assert self.server.alive(), ("server died", context, self.server.log()[-3000:])
        assert not sent.timed_out, ("no answer within the timeout", context)
        assert sent.status < 500, ("5xx", context, self.server.log()[-3000:])
        self._check_follow_up(upload, sent, context)
        replay = self.keys.get(upload.key or "")
        # A known key is answered before the body is read: even a body the HTTP parser
        # would refuse may get its replay first.
        if replay is not None and (_plain_framing(upload) or sent.status in (202, 303)):
            self._check_replay(upload, sent, replay, context)
            return
        expected = None if replay else _expected(upload, len(body))
        if expected is not None:
            self.outcomes["predicted"] += 1
            assert sent.status == expected, ("unexpected status", expected, context)
        if sent.status == 0:
            assert half_close, ("connection closed without an answer", context)
        elif 400 <= sent.status < 500:
            self._check_error(sent, context)
        elif sent.status in (202, 303):
            self._check_accepted(sent, upload, exact=expected is not None)
        else:
            raise AssertionError(("unexpected status", context))

    def _check_replay(self, upload: Upload, sent: Sent, job_id: str, context: object) -> None:
        """A known key gets its first job back, whatever the body (it is not read), unless
        the query names an unknown processor (checked first)."""
        if upload.query is not None and not _pipeline_ok(upload.query):
            assert sent.status == 400, context
            return
        self.outcomes["replayed"] += 1
        if upload.accept in BROWSER_ACCEPTS:
            assert (sent.status, sent.headers["location"]) == (303, f"/jobs/{job_id}"), context
            return
        assert sent.status == 202, context
        assert sent.headers.get("idempotent-replayed") == "true", context
        assert json.loads(sent.body)["id"] == job_id, context

    def _check_follow_up(self, upload: Upload, sent: Sent, context: object) -> None:
        """Nothing but the answer to our own follow-up request may come after the first
        response: a body is never read as requests (no smuggling)."""
        if upload.framing not in KEEP_ALIVE or not sent.rest:
            # Connection: close, or the server closed after the first answer
            return
        status, _, body, rest = _parse_response(sent.rest)
        assert status == 200, ("not the follow-up's answer", context)
        assert "inspect" in {p["name"] for p in json.loads(body)}, ("not the follow-up", context)
        assert rest == b"", ("more answers than requests", context)
        self.outcomes["keep-alive follow-up"] += 1

    def _check_error(self, sent: Sent, context: object) -> None:
        if sent.body == PLAIN_400 or (sent.half_closed and sent.body == b""):
            # uvicorn's parser refused the request, or the client stopped sending and
            # the app's answer to a vanished client came through
            assert sent.status == 400, context
            return
        assert sent.headers.get("content-type") == "application/json", context
        detail = json.loads(sent.body)["detail"]
        assert isinstance(detail, str) and detail, context
        if sent.status == 503:
            assert "retry-after" in sent.headers, context

    def _check_accepted(self, sent: Sent, upload: Upload, exact: bool) -> None:
        if sent.status == 303:
            job_id = sent.headers["location"].removeprefix("/jobs/")
            job = self.server.status(job_id)
        else:
            job = json.loads(sent.body)
            assert sent.headers["location"] == f"/status/{job['id']}"
        _check_job(self.server, job, upload, exact=exact, fresh=sent.status == 202)
        if upload.key is not None:
            assert upload.key not in self.keys, ("a known key made a new job", upload)
            self.keys[upload.key] = job["id"]
        self.kept.append(job["id"])
        while len(self.kept) > KEEP_JOBS:
            job_id = self.kept.popleft()
            response = httpx.delete(f"{self.server.url}/jobs/{job_id}", timeout=10)
            assert response.status_code in (202, 204), response.text
            self.keys = {k: v for k, v in self.keys.items() if v != job_id}

    def settle(self) -> None:
        """After a run: nothing on disk but recorded jobs, every kept job processed
        without an internal error, and the server still answering."""
        assert self.server.alive(), self.server.log()[-3000:]
        wait_until(self.server.leftovers, lambda left: left == [], timeout_s=15)
        for job_id in self.kept:
            job = self.server.wait_finished(job_id, timeout_s=60)
            if job["status"] == "failed":
                assert job["error"]["code"] in ("invalid_input", "unsupported"), job
        assert httpx.get(f"{self.server.url}/openapi.json", timeout=10).status_code == 200


def _fuzz_server(
    tmp_path_factory: pytest.TempPathFactory, name: str, **more: str
) -> Iterator[Server]:
    env = {
        "HOPPER_MAX_UPLOAD_BYTES": str(LIMIT),
        "HOPPER_WORKERS": "1",
        "HOPPER_MAX_QUEUE": "100000",  # a 503 for a full queue is not what is fuzzed here
        # The sweeper runs amid the traffic, and takes the Idempotency-Keys of deleted
        # jobs (that is its job, not DELETE's) before the leftovers are checked.
        "HOPPER_SWEEP_INTERVAL": "1",
        **more,
    }
    server = Server(data_dir=tmp_path_factory.mktemp(name) / "data", env=env).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def raw_server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    yield from _fuzz_server(tmp_path_factory, "fuzz-raw")


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    # Dedupe on: the real jobs the operations are tried on are the same bytes each time, so
    # most are duplicates, and deleting an original must leave its duplicates whole.
    yield from _fuzz_server(tmp_path_factory, "fuzz-api", HOPPER_DEDUPE="true")


@pytest.mark.local_only  # the multipart parser: the same code whatever the backend
def test_random_and_mutated_multipart_bodies(
    raw_server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    fuzz = RawFuzz(raw_server)
    started = time.monotonic()

    @_settings(BATCH)
    @given(upload=uploads())
    def send(upload: Upload) -> None:
        fuzz.run_one(upload)

    for _ in _batches(0.7):
        send()
        fuzz.settle()
    _say(capsys, _report("raw multipart", fuzz.tried, started, fuzz.outcomes))


# ---------------------------------------------------------------------------------------
# The whole API, from its OpenAPI description

# Invalid input: no 5xx, and a status the description lists (see _check_documented);
# the body and headers of a refusal are not checked against the schema.
NEGATIVE_CHECKS = [not_a_server_error]
POSITIVE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def _check_documented(spec: dict[str, Any], case: schemathesis.Case[Any], status: int) -> None:
    """The status is one the description lists for the operation."""
    documented = set(spec["paths"][case.path][case.method.lower()]["responses"])
    assert str(status) in documented or f"{status // 100}XX" in documented, (
        f"{case.method} {case.path}: {status} is not among {sorted(documented)}"
    )


def _upload_one(server: Server) -> str:
    status, body = raw_request(server.port, multipart([file_part(data=b"fuzz me")]))
    assert status == 202, body
    job_id: str = json.loads(body)["id"]
    server.wait_finished(job_id)
    return job_id


def test_schemathesis_over_the_openapi_description(
    api_server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = schemathesis.openapi.from_url(f"{api_server.url}/openapi.json", timeout=10)
    spec = httpx.get(f"{api_server.url}/openapi.json", timeout=10).json()
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), results
    assert len(operations) >= 10
    tried = 0
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    per_operation = max(5, BATCH // 16)

    def run(strategy: Any, checks: list[Callable[..., Any]]) -> None:
        @_settings(per_operation)
        @given(case=strategy)
        def call(case: schemathesis.Case[Any]) -> None:
            nonlocal tried
            tried += 1
            response = case.call(base_url=api_server.url, timeout=REQUEST_TIMEOUT_S)
            outcomes[f"{case.method.upper()} {case.path} {response.status_code}"] += 1
            case.validate_response(response, checks=checks)
            _check_documented(spec, case, response.status_code)
            if 400 <= response.status_code < 500 and "json" in response.headers.get(
                "content-type", ""
            ):
                detail = response.json()["detail"]
                assert isinstance(detail, str) and detail, response.text
            assert api_server.alive(), api_server.log()[-3000:]

        with contextlib.suppress(Unsatisfiable):  # no negative input exists for it
            call()

    for _ in _batches(0.3):
        for operation in operations:
            run(operation.as_strategy(GenerationMode.POSITIVE), POSITIVE_CHECKS)
            run(operation.as_strategy(GenerationMode.NEGATIVE), NEGATIVE_CHECKS)
            if "{job_id}" in operation.path:  # the same operation on a real job
                real = {"job_id": _upload_one(api_server)}
                strategy = operation.as_strategy(GenerationMode.POSITIVE, path_parameters=real)
                run(strategy, POSITIVE_CHECKS)
        assert api_server.alive()
        wait_until(api_server.leftovers, lambda left: left == [], timeout_s=15)
        assert httpx.get(f"{api_server.url}/openapi.json", timeout=10).status_code == 200
    by_status: Counter[str] = Counter()
    for key, n in outcomes.items():
        by_status[key.rsplit(" ", 1)[1]] += n
    _say(capsys, _report("schemathesis", tried, started, by_status))
