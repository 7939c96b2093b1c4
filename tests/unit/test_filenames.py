from __future__ import annotations

import pytest

from app.filenames import FALLBACK_NAME, sanitize_filename


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../../etc/passwd", "passwd"),
        ("/etc/cron.d/x", "x"),
        ("C:\\Users\\x\\evil.txt", "evil.txt"),
        ("%2e%2e%2fetc%2fpasswd", "%2e%2e%2fetc%2fpasswd"),  # never percent-decoded
        ("a\x00b.txt", "ab.txt"),
        ("invoice\u202etxt.exe", "invoicetxt.exe"),
        ("CON. ", "_CON"),
        ("..", FALLBACK_NAME),
        ("", FALLBACK_NAME),
        ("nai\u0308ve 東京.txt", "naïve 東京.txt"),  # NFC
        ("a\r\nb.txt", "ab.txt"),
    ],
)
def test_sanitize_filename_makes_a_display_name_never_a_path(raw: str, expected: str) -> None:
    assert sanitize_filename(raw) == expected


def test_long_names_are_cut_to_255_utf8_bytes_keeping_the_extension() -> None:
    name = sanitize_filename("é" * 300 + ".txt")
    assert len(name.encode()) <= 255
    assert name.endswith(".txt")
    name.encode().decode()  # still valid UTF-8: no character was split
