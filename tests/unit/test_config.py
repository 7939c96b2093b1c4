"""Settings that are checked at start-up, so a typo fails loudly instead of doing nothing."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import Settings, split_list


def test_cors_origins_take_scheme_host_and_port_or_a_star() -> None:
    value = " https://app.example.com, http://127.0.0.1:8080 ,*,"
    assert split_list(Settings(cors_origins=value).cors_origins) == [
        "https://app.example.com",
        "http://127.0.0.1:8080",
        "*",
    ]
    assert split_list(Settings().cors_origins) == []  # the default: no other origin


@pytest.mark.parametrize(
    "origin", ["https://app.example.com/", "app.example.com", "https://a.example/upload", "ftp://a"]
)
def test_a_cors_origin_with_a_path_or_no_scheme_is_refused_at_start(origin: str) -> None:
    # A browser's Origin never has a path: such an entry would silently match nothing.
    with pytest.raises(ValidationError, match="is not an origin: write scheme://host"):
        Settings(cors_origins=origin)
