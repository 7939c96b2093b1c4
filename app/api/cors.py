"""CORS: pages on other sites (an Uppy or tus-js-client on one's own site) calling Hopper.

Off unless HOPPER_CORS_ORIGINS names origins. Such a page authenticates with an API key in a
header: credentials are never allowed, so a browser neither sends the login cookie on a
preflighted request nor shows a cookie-authenticated answer to another site (and
app.api.access refuses a cookie-authenticated write whose Origin is not Hopper's own).

A preflight (OPTIONS with Access-Control-Request-Method) is answered by the middleware; a
plain OPTIONS /files/, tus's capability discovery, still reaches its route.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from app.config import split_list

METHODS = ("GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS")
# Every request header Hopper reads. The tus headers it does not offer (deferred length,
# concatenation) are allowed too, so their request gets Hopper's 400, not an opaque CORS error.
REQUEST_HEADERS = (
    "Authorization",
    "X-API-Key",
    "Content-Type",
    "Idempotency-Key",
    "Content-Digest",
    "Repr-Digest",
    "X-Request-ID",
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Offset",
    "Upload-Metadata",
    "Upload-Checksum",
    "Upload-Defer-Length",
    "Upload-Concat",
    "X-HTTP-Method-Override",  # tus-js-client's overridePatchMethod
    "X-Requested-With",
)
# What a script may read of an answer beyond the CORS-safelisted few: tus clients need the
# upload's Location and offsets, everyone the Retry-After of a 429 or 503.
RESPONSE_HEADERS = (
    "Location",
    "Retry-After",
    "X-Request-ID",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Metadata",
    "Upload-Expires",
)
PREFLIGHT_MAX_AGE_S = 3600  # a browser asks once an hour per URL, not before every PATCH


def add_cors(app: FastAPI, origins: str) -> None:
    """Answer the origins in `origins` (a HOPPER_CORS_ORIGINS value); none: no CORS at all."""
    allowed = split_list(origins)
    if not allowed:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=allowed,
        allow_methods=METHODS,
        allow_headers=REQUEST_HEADERS,
        expose_headers=RESPONSE_HEADERS,
        allow_credentials=False,
        max_age=PREFLIGHT_MAX_AGE_S,
    )
