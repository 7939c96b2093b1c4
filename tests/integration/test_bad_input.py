"""PITFALLS §5, case by case, over a raw socket: every bad input gets a clear 4xx with
{"detail": ...}, leaves nothing on disk, and the service keeps serving."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SMALL_LIMIT
from tests.helpers import (
    BOUNDARY,
    Server,
    file_part,
    multipart,
    raw_request,
    text_part,
)

MP = f"multipart/form-data; boundary={BOUNDARY}"
GOOD = multipart([file_part()])
Case = tuple[str, Callable[[], dict[str, Any]], int]


def _cd(value: bytes, data: bytes = b"x") -> bytes:
    return multipart([([b"Content-Disposition: " + value], data)])


CASES: list[Case] = [
    ("6 json body", lambda: {"body": b'{"file":"x"}', "ctype": "application/json"}, 415),
    (
        "7 urlencoded",
        lambda: {"body": b"file=abc", "ctype": "application/x-www-form-urlencoded"},
        415,
    ),
    ("8 no content type", lambda: {"body": GOOD, "ctype": None}, 415),
    (
        "9 multipart/mixed",
        lambda: {"body": GOOD, "ctype": f"multipart/mixed; boundary={BOUNDARY}"},
        415,
    ),
    ("10 no boundary", lambda: {"body": GOOD, "ctype": "multipart/form-data"}, 400),
    (
        "11 empty boundary",
        lambda: {
            "body": multipart([file_part()], boundary=""),
            "ctype": "multipart/form-data; boundary=",
        },
        400,
    ),
    (
        "12 300-char boundary",
        lambda: {"body": GOOD, "ctype": "multipart/form-data; boundary=" + "a" * 300},
        400,
    ),
    (
        "13 redos boundary",
        lambda: {"body": GOOD, "ctype": 'multipart/form-data; boundary="' + "\\" * 64 + "a"},
        400,
    ),
    ("14 no delimiter at all", lambda: {"body": b"A" * (512 * 1024)}, 400),
    ("17 closing delimiter missing", lambda: {"body": multipart([file_part()], close=False)}, 400),
    ("19 content-length short", lambda: {"body": GOOD, "content_length": 60}, 400),
    (
        "23 10 GiB content-length",
        lambda: {"body": GOOD, "content_length": 10 * 2**30, "timeout_s": 5},
        413,
    ),
    (
        "27 content-length and chunked",
        lambda: {"body": GOOD, "extra": b"Transfer-Encoding: chunked\r\n"},
        400,
    ),
    (
        "28 bad chunk size",
        lambda: {
            "body": None,
            "extra": b"Transfer-Encoding: chunked\r\n",
            "chunks": [b"zz\r\nabc\r\n0\r\n\r\n"],
        },
        400,
    ),
    ("30 negative content-length", lambda: {"body": b"", "content_length": -1}, 400),
    (
        "31 many file parts",
        lambda: {"body": multipart([file_part(name=f"f{i}", data=b"") for i in range(1001)])},
        400,
    ),
    (
        "32 many text fields",
        lambda: {"body": multipart([text_part(f"t{i}", b"v") for i in range(100)] + [file_part()])},
        400,
    ),
    (
        "33 text field over 64 KiB",
        lambda: {"body": multipart([text_part("note", b"n" * (64 * 1024 + 1)), file_part()])},
        400,
    ),
    (
        "34 part with 20 headers",
        lambda: {
            "body": multipart([(file_part()[0] + [f"X-H{i}: v".encode() for i in range(20)], b"x")])
        },
        400,
    ),
    (
        "35 100 KB part header",
        lambda: {"body": multipart([(file_part()[0] + [b"X-Big: " + b"a" * 100_000], b"x")])},
        400,
    ),
    ("3 no file chosen", lambda: {"body": multipart([file_part(filename="", data=b"")])}, 400),
    ("4 only a text field", lambda: {"body": multipart([text_part("x", b"1")])}, 400),
    ("5 file under another name", lambda: {"body": multipart([file_part(name="upload")])}, 400),
    (
        "42 only filename*",
        lambda: {"body": _cd(b"form-data; name=\"file\"; filename*=UTF-8''%E2%82%AC.txt")},
        400,
    ),
    (
        "44 duplicate filename",
        lambda: {"body": _cd(b'form-data; name="file"; filename="a.txt"; filename="../b.txt"')},
        400,
    ),
    (
        "45 two content-dispositions",
        lambda: {
            "body": multipart(
                [
                    (
                        [
                            b'Content-Disposition: form-data; name="other"; filename="safe.txt"',
                            b'Content-Disposition: form-data; name="file"; filename="../evil.sh"',
                        ],
                        b"x",
                    )
                ]
            )
        },
        400,
    ),
    (
        "51 unterminated quote",
        lambda: {"body": _cd(b'form-data; name="file"; filename="a.txt')},
        400,
    ),
    (
        "53 10,000-char filename",
        lambda: {"body": multipart([file_part(filename="a" * 10_000)])},
        400,
    ),
    (
        "56 two file parts",
        lambda: {
            "body": multipart([file_part(filename="first.txt"), file_part(filename="second.txt")])
        },
        400,
    ),
    ("57 part without name", lambda: {"body": _cd(b'form-data; filename="a.txt"')}, 400),
    (
        "58 part without disposition",
        lambda: {"body": multipart([([b"Content-Type: text/plain"], b"x")])},
        400,
    ),
    ("59 bare LF", lambda: {"body": GOOD.replace(b"\r\n", b"\n")}, 400),
    (
        "60 obs-fold header",
        lambda: {
            "body": multipart(
                [([b'Content-Disposition: form-data; name="file";', b' filename="x"'], b"x")]
            )
        },
        400,
    ),
    (
        "unknown processor (field)",
        lambda: {"body": multipart([text_part("processors", b"nope"), file_part()])},
        400,
    ),
    ("unknown processor (query)", lambda: {"body": GOOD, "path": "/uploads?processors=nope"}, 400),
    ("65 GET /uploads", lambda: {"body": None, "method": "GET", "ctype": None}, 405),
]


@pytest.mark.parametrize(("name", "make", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_4xx_and_leaves_nothing(
    small_server: Server, name: str, make: Callable[[], dict[str, Any]], expected: int
) -> None:
    status, body = raw_request(small_server.port, **make())
    assert status == expected, (name, body[:300])
    detail = json.loads(body)["detail"]  # JSON also where uvicorn's parser refused it
    assert isinstance(detail, str) and detail
    assert small_server.leftovers() == []
    assert httpx.get(f"{small_server.url}/openapi.json").status_code == 200  # still serving


def _job_of(server: Server, body: bytes, **kw: Any) -> dict[str, Any]:
    status, resp = raw_request(server.port, body, **kw)
    assert status == 202, resp[:300]
    return server.wait_finished(json.loads(resp)["id"])


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"../../../etc/passwd", "passwd"),
        (b"/etc/cron.d/x", "x"),
        (b"C:\\Users\\x\\evil.txt", "evil.txt"),
        (b"%2e%2e%2fetc%2fpasswd", "%2e%2e%2fetc%2fpasswd"),
        (b"a\x00b.txt", "ab.txt"),
        ("naïve 東京.txt".encode(), "naïve 東京.txt"),
        (b"\xff\xfe.txt", "\ufffd\ufffd.txt"),
        (b'a\\"b.txt', 'a"b.txt'),
        ("invoice\u202etxt.exe".encode(), "invoicetxt.exe"),
        (b"CON. ", "_CON"),
        (b"a" * 300, "a" * 255),
    ],
)
def test_client_filenames_are_displayed_sanitised_and_never_used_as_paths(
    small_server: Server, raw: bytes, shown: str
) -> None:
    job = _job_of(small_server, multipart([file_part(filename=raw)]))
    assert job["filename"] == shown
    stored = small_server.data_dir / "files" / job["id"]
    assert stored.read_bytes() == b"hello"
    assert small_server.leftovers() == []


def test_starred_filename_does_not_override_the_plain_one(small_server: Server) -> None:
    body = _cd(b'form-data; name="file"; filename="safe.txt"; filename*=UTF-8\'\'..%2F..%2Fevil')
    assert _job_of(small_server, body)["filename"] == "safe.txt"


@pytest.mark.parametrize(
    ("name", "body", "size"),
    [
        ("15 CRLF preamble", b"\r\n" * (256 * 1024) + GOOD, 5),
        ("16 junk epilogue", GOOD + b"J" * (512 * 1024), 5),
        (
            "61 delimiter inside data",
            multipart(
                [
                    file_part(
                        data=b"abc\r\n--"
                        + BOUNDARY.encode()
                        + b'\r\nContent-Disposition: form-data; name="x"\r\n\r\nv'
                    )
                ]
            ),
            3,
        ),
        (
            "62 dashes without CRLF",
            multipart([file_part(data=b"abc--" + BOUNDARY.encode() + b"def")]),
            19,
        ),
        (
            "63 base64 not decoded",
            multipart([(file_part()[0] + [b"Content-Transfer-Encoding: base64"], b"aGVsbG8=")]),
            8,
        ),
        (
            "browser extra fields ignored",
            multipart([text_part("csrf", b"t"), file_part(), text_part("x", b"y")]),
            5,
        ),
    ],
)
def test_odd_but_valid_bodies_are_accepted(
    small_server: Server, name: str, body: bytes, size: int
) -> None:
    assert _job_of(small_server, body)["size"] == size


def test_file_of_exactly_the_limit_fits_and_one_byte_more_is_413(
    small_server: Server, tmp_path: Path
) -> None:
    exact = multipart([file_part(data=b"\x01" * SMALL_LIMIT)])
    assert _job_of(small_server, exact)["size"] == SMALL_LIMIT
    over = multipart([file_part(data=b"\x01" * (SMALL_LIMIT + 1))])
    status, body = raw_request(small_server.port, over)
    assert status == 413, body[:200]
    assert "HOPPER_MAX_UPLOAD_BYTES" in json.loads(body)["detail"]
    assert small_server.leftovers() == []


@pytest.mark.parametrize(
    "extra",
    [
        [],  # curl sends Expect: 100-continue: refused before the body is sent
        ["-H", "Expect:"],  # the body is on its way when the 413 is decided
        ["-H", "Transfer-Encoding: chunked"],  # no Content-Length: counted as it streams
    ],
)
def test_curl_sees_413_not_a_reset_for_an_oversized_file(
    small_server: Server, tmp_path: Path, extra: list[str]
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"\x02" * (8 * SMALL_LIMIT))
    cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-F", f"file=@{path}"]
    out = subprocess.run(
        [*cmd, *extra, f"{small_server.url}/uploads"], capture_output=True, text=True
    )
    assert out.stdout == "413", out.stderr
    assert small_server.leftovers() == []


def test_truncated_body_from_a_vanished_client_leaves_nothing(small_server: Server) -> None:
    body = multipart([file_part(data=b"\x03" * 100_000)])
    status, _ = raw_request(
        small_server.port, None, content_length=len(body), chunks=[body[:50_000]], timeout_s=0.5
    )
    assert status == 0  # nobody answered yet; now the client goes away
    deadline = time.monotonic() + 10
    while small_server.leftovers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert small_server.leftovers() == []
    assert small_server.alive()


def test_status_ignores_hostile_ids_and_range_headers(small_server: Server) -> None:
    for job_id in ["..%2F..%2Fetc%2Fpasswd", "%00", "a" * 22 + "%2F", "../../etc/passwd"]:
        response = httpx.get(f"{small_server.url}/status/{job_id}", follow_redirects=True)
        assert response.status_code == 404, (job_id, response.text)
        assert response.json()["detail"]
    ranges = b"Range: bytes=" + b",".join(b"%d-%d" % (i, i) for i in range(5000)) + b"\r\n"
    status, _ = raw_request(
        small_server.port,
        None,
        method="GET",
        path="/status/AAAAAAAAAAAAAAAAAAAAAA",
        ctype=None,
        extra=ranges,
    )
    assert status == 404
