"""Who is calling (HOPPER_AUTH=keys): the key, the scope each route needs, the jobs it sees.

A key comes in `Authorization: Bearer <key>`, `X-API-Key: <key>` or the login cookie. With
auth off every request is an implicit admin and nothing is looked up. A job of another
owner is answered exactly like an unknown id, so ids never leak.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import Depends
from starlette.requests import HTTPConnection, Request

from app.api.deps import services
from app.api.negotiation import prefers_html
from app.apikeys import ApiKey, KeyRing, Scope
from app.config import Settings
from app.errors import Forbidden, LoginRequired, NotAuthenticated, UnknownJob
from app.layout import DataDir
from app.models import Job
from app.quotas import Quotas
from app.store import JobStore

COOKIE = "hopper_key"
OWNER_PREFIX_BYTES = 256
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_OWNER_RE = re.compile(rb'"owner":(?:"([A-Za-z0-9_-]{10})"|null)')


@dataclass(frozen=True)
class Caller:
    key: ApiKey | None  # None: auth is off and the caller may do anything
    via_cookie: bool = False

    @property
    def owner(self) -> str | None:
        """What a job this caller makes records as its owner."""
        return None if self.key is None else self.key.id

    @property
    def sees_all(self) -> bool:
        return self.key is None or self.key.admin


ANYONE = Caller(None)


class Access:
    """What authentication needs, built once per app."""

    def __init__(self, settings: Settings, layout: DataDir, store: JobStore) -> None:
        self.enabled = settings.auth == "keys"
        self.keys = KeyRing(layout.apikeys)
        self.quotas = Quotas(layout, store)


def access_of(conn: HTTPConnection) -> Access:
    found: Access = conn.app.state.access
    return found


def authorize(request: Request, scope: Scope | None) -> Caller:
    """The caller, if it has `scope` (None: any valid key); 401 or 403 otherwise."""
    access = access_of(request)
    if not access.enabled:
        return ANYONE
    caller = _identify(request, access)
    if caller.via_cookie and request.method not in SAFE_METHODS:
        check_same_origin(request)
    if scope is not None and caller.key is not None and not caller.key.allows(scope):
        raise Forbidden(
            f"Key {caller.key.name!r} lacks the {scope.value!r} scope this needs; "
            f"use a key made with --scope {scope.value}."
        )
    request.state.caller = caller
    request.state.key_id = caller.owner  # for the request's log line
    return caller


def needs(scope: Scope | None) -> Any:
    """A route dependency: `dependencies=[needs(Scope.READ)]`."""

    def dependency(request: Request) -> Caller:
        return authorize(request, scope)

    return Depends(dependency)


def needs_page(scope: Scope | None) -> Any:
    """As `needs`, but a browser without a key is sent to the login form."""

    def dependency(request: Request) -> Caller:
        try:
            return authorize(request, scope)
        except NotAuthenticated:
            if not prefers_html(request.headers.get("accept")):
                raise
            raise LoginRequired(login_url(request)) from None

    return Depends(dependency)


def caller_of(request: Request) -> Caller:
    """The caller a route's dependency found. Without one (a route that forgot its
    dependency) this fails closed: a 500, never an implicit admin."""
    if not access_of(request).enabled:
        return ANYONE
    found: Caller = request.state.caller
    return found


def visible_raw(request: Request, caller: Caller, job_id: str) -> bytes:
    """A job record the caller may see; another owner's is an unknown id."""
    raw = services(request).store.load_raw(job_id)
    if not caller.sees_all and owner_of(raw) != caller.owner:
        raise UnknownJob(job_id)
    return raw


def visible_job(request: Request, job_id: str) -> Job:
    return Job.model_validate_json(visible_raw(request, caller_of(request), job_id))


def raw_filter(caller: Caller) -> Callable[[bytes], bool]:
    """For lists of records: does the caller see this one?"""
    if caller.sees_all:
        return lambda raw: True
    return lambda raw: owner_of(raw) == caller.owner


def owner_of(raw: bytes) -> str | None:
    """The owner without parsing the record: it sits near the start, like `status`."""
    match = _OWNER_RE.search(raw, 0, OWNER_PREFIX_BYTES)
    if match is not None:
        return match.group(1).decode() if match.group(1) else None
    owner = json.loads(raw).get("owner")
    return owner if isinstance(owner, str) else None


def presented_key(conn: HTTPConnection) -> tuple[str | None, bool]:
    """The key a request carries, and whether it came from the cookie."""
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    if header := conn.headers.get("x-api-key", "").strip():
        return header, False
    cookie = conn.cookies.get(COOKIE)
    return (cookie, True) if cookie else (None, False)


def check_same_origin(request: Request) -> None:
    """CSRF: a form post a browser sends on its own carries its page's Origin (or, from
    older browsers, a Referer); one from another site is refused."""
    source = request.headers.get("origin") or request.headers.get("referer")
    host = request.headers.get("host", "")
    if source is None or source == "null" or urlsplit(source).netloc.lower() != host.lower():
        raise Forbidden(
            "This form post did not come from a Hopper page (its Origin does not match); "
            "submit it from the page itself."
        )


def login_url(request: Request) -> str:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/login?next={quote(here, safe='/')}"


def _identify(request: Request, access: Access) -> Caller:
    presented, via_cookie = presented_key(request)
    if presented is None:
        raise NotAuthenticated(
            "This needs an API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>` "
            "(an operator makes one with `hopper keys create`), or log in at /login."
        )
    key = access.keys.verify(presented)
    if key is None:
        raise NotAuthenticated(
            "That API key is unknown or was revoked; check it, or ask an operator for a new "
            "one (`hopper keys create`)."
        )
    return Caller(key, via_cookie=via_cookie)
