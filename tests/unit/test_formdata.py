from __future__ import annotations

import pytest

from app.errors import BadUpload, UnsupportedMediaType
from app.formdata import Disposition, boundary_of, parse_disposition


def test_boundary_is_read_from_a_quoted_or_mixed_case_content_type() -> None:
    assert boundary_of('Multipart/Form-Data; boundary="ab cd"') == b"ab cd"
    assert boundary_of("multipart/form-data; boundary=----x") == b"----x"


@pytest.mark.parametrize(
    "content_type", [None, "", "application/json", "multipart/mixed; boundary=B", "text/plain"]
)
def test_other_media_types_are_415(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType):
        boundary_of(content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=" + "a" * 71,
        'multipart/form-data; boundary="' + "\\" * 64 + "a",
        "multipart/form-data; boundary=a\x01b",
    ],
)
def test_missing_empty_long_or_odd_boundaries_are_400(content_type: str) -> None:
    with pytest.raises(BadUpload):
        boundary_of(content_type)


def test_disposition_gives_name_and_filename() -> None:
    got = parse_disposition('form-data; name="file"; filename="a;b \\"c\\".txt"')
    assert got == Disposition(name="file", filename='a;b "c".txt')
    assert parse_disposition('form-data; name="note"') == Disposition("note", None)


def test_starred_filename_is_ignored_and_the_plain_one_kept() -> None:
    got = parse_disposition(
        'form-data; name="file"; filename="safe.txt"; filename*=UTF-8\'\'..%2Fx'
    )
    assert got.filename == "safe.txt"


@pytest.mark.parametrize(
    "raw",
    [
        'form-data; name="file"; filename="a.txt"; filename="../b.txt"',  # decoy duplicate
        'form-data; name="file"; filename="a.txt',  # unterminated quote
        'form-data; filename="a.txt"',  # no name
        'attachment; name="file"; filename="a"',
        'form-data; name="file"; junk',
    ],
)
def test_ambiguous_dispositions_are_refused(raw: str) -> None:
    with pytest.raises(BadUpload):
        parse_disposition(raw)
