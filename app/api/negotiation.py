"""Who is asking: a browser (HTML first) or a program (JSON)."""

from __future__ import annotations


def prefers_html(accept: str | None) -> bool:
    """True when text/html ranks above application/json in the Accept header.

    curl sends */*, programs send application/json: both get JSON. Browsers list
    text/html explicitly with the top weight.
    """
    if not accept:
        return False
    html = json = 0.0
    for item in accept.split(","):
        media, _, params = item.strip().partition(";")
        media = media.strip().lower()
        q = _quality(params)
        if media == "text/html":
            html = max(html, q)
        elif media in ("application/json", "application/*", "*/*"):
            json = max(json, q)
    return html > json


def _quality(params: str) -> float:
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "q":
            try:
                return min(max(float(value), 0.0), 1.0)
            except ValueError:
                return 0.0
    return 1.0
