"""uvicorn's HTTP protocols with the limits on the request head that uvicorn lacks.

uvicorn waits for a request's headers forever and, with httptools, takes a head of any size
(PITFALLS §0.4). These subclasses give the head a deadline (HOPPER_HEADER_TIMEOUT, from the
connection's start or the request's first byte to the end of its headers) and a size cap
(HOPPER_MAX_HEADER_BYTES). Select one with uvicorn's `--http`, as `scripts/serve` does:

    uvicorn app.main:app --http app.protocols:HttpToolsProtocol   # or app.protocols:H11Protocol

They also answer a request the parser refuses with JSON, like every other error.
The body has its own idle deadline, in app.middleware, where the upload can clean up.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http import h11_impl, httptools_impl

from app.config import get_settings

LINGER_S = 2.0  # how long a refused connection is read (and dropped) before it closes
_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
_NOT_HTTP = (
    "The request is not valid HTTP/1.1 (a malformed request line, header or chunk size, "
    "or both Content-Length and Transfer-Encoding)."
)


class HeadLimits:
    """The deadline and the byte count of one request head, and the refusal when either
    is passed. Mixed into a uvicorn protocol, which provides `loop` and `transport`."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def _init_head_limits(self) -> None:
        settings = get_settings()
        self._head_timeout_s = settings.header_timeout
        self._head_max_bytes = settings.max_header_bytes
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # of the request line and the headers parsed so far
        self._head_raw_bytes = 0  # of the reads that did not finish the head
        self._in_head = False
        self._head_seen = False  # a byte of this head has arrived
        self._refused = False  # answered 400/408/431: what comes now is dropped

    def _head_started(self, *, first_byte: bool = True) -> None:
        self._head_seen = self._head_seen or first_byte
        self._in_head = True
        if self._head_deadline is None and self._head_timeout_s > 0:
            self._head_deadline = self.loop.call_later(self._head_timeout_s, self._head_too_slow)

    def _head_finished(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        self._head_bytes = 0
        self._head_raw_bytes = 0
        self._in_head = False
        self._head_seen = False

    def _head_grew(self, size: int) -> bool:
        """Count `size` more bytes of the head; refuse it (and say so) past the cap."""
        self._head_bytes += size
        if self._head_bytes <= self._head_max_bytes:
            return False
        self._head_too_large()
        return True

    def _head_too_large(self) -> None:
        limit_kib = self._head_max_bytes // 1024
        detail = f"The request headers are over {limit_kib} KiB (HOPPER_MAX_HEADER_BYTES)."
        self._refuse(431, detail)

    def _not_http(self) -> None:
        """The parser refused the request: the same JSON answer as every other error,
        where uvicorn would send plain text."""
        self._refuse(400, _NOT_HTTP)

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self._head_seen:  # an idle connection: nobody to answer
            self.transport.close()
            return
        self._refuse(
            408,
            f"The request headers did not arrive within {self._head_timeout_s:g} s "
            "(HOPPER_HEADER_TIMEOUT).",
        )

    def _refuse(self, status: int, detail: str) -> None:
        """Answer before any ASGI cycle exists, then close: the rest of the request is
        never parsed. Written raw, since the parser's state no longer matters."""
        self._head_finished()
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        body = json.dumps({"detail": detail}).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, _REASONS[status], len(body), body)
        )
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        # A lingering close, as nginx does: closing at once while the client still sends
        # makes the kernel answer with a reset, which can destroy the answer before the
        # client reads it. So: half-close, drop what still comes, close after a moment.
        self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    @property
    def _ignoring(self) -> bool:
        return self._refused or self.transport.is_closing()


class HttpToolsProtocol(HeadLimits, httptools_impl.HttpToolsProtocol):
    """httptools, which has no header cap of its own: every header is counted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_head_limits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_started(first_byte=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_finished()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started()

    def on_url(self, url: bytes) -> None:
        if not self._head_grew(len(url)):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._head_grew(len(name) + len(value) + 4):  # ": " and CRLF
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._ignoring:  # refused above: start no request
            return
        self._head_finished()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._ignoring:
            return
        super().data_received(data)
        if self._in_head and not self._ignoring:
            # httptools reports a header only once it ends: one that never ends would grow
            # unseen, so the reads of an unfinished head count too (one read over at most).
            self._head_raw_bytes += len(data)
            if self._head_raw_bytes > self._head_max_bytes:
                self._head_too_large()

    def send_400_response(self, msg: str) -> None:
        self._not_http()  # nothing is sent after our own 408 or 431


class _CappedConnection(h11.Connection):
    """h11's server side with a cap on the whole head. h11's own cap (its
    max_incomplete_event_size, set to the same value) applies only to a head still
    incomplete in its buffer, so a bigger one that arrives in a few reads would pass."""

    def __init__(self, max_head_bytes: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head_bytes)
        self.max_head_bytes = max_head_bytes
        self.head_too_large = False

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            self.head_too_large = exc.error_status_hint == 431
            raise
        if isinstance(event, h11.Request) and _head_size(event) > self.max_head_bytes:
            self.head_too_large = True
            raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
        return event


def _head_size(request: h11.Request) -> int:
    line = len(request.method) + len(request.target) + 11  # spaces, HTTP/1.1, CRLF
    return line + sum(len(name) + len(value) + 4 for name, value in request.headers)


class H11Protocol(HeadLimits, h11_impl.H11Protocol):
    """h11, with the head counted as it is parsed (see _CappedConnection)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_head_limits()
        self.conn = _CappedConnection(self._head_max_bytes)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_started(first_byte=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_finished()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._ignoring:
            return
        if self.conn.their_state is h11.IDLE:  # no complete head yet
            self._head_started()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._head_finished()

    def send_400_response(self, msg: str) -> None:
        if isinstance(self.conn, _CappedConnection) and self.conn.head_too_large:
            self._head_too_large()
        else:
            self._not_http()
