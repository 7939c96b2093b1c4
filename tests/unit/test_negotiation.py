from __future__ import annotations

import pytest

from app.api.negotiation import prefers_html

CHROME = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (CHROME, True),
        ("text/html", True),
        ("*/*", False),
        (None, False),
        ("application/json", False),
        ("application/json, text/html;q=0.5", False),
        ("text/html;q=0.2, */*;q=0.9", False),
        ("text/html;q=bogus", False),
    ],
)
def test_only_an_explicit_html_preference_counts_as_a_browser(
    accept: str | None, html: bool
) -> None:
    assert prefers_html(accept) is html
