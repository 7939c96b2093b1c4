"""One delivery attempt: POST the signed job document to the checked address.

HOPPER_WEBHOOK_TIMEOUT bounds the whole attempt, from the DNS check to the answer's status,
not each read: a watchdog shuts the attempt's socket down once the time is up, so a
receiver that drips its answer a byte at a time cannot hold a sender thread (nor a
shutdown) for longer. A stop (close()) cuts every attempt in flight the same way.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from app import __version__
from app.webhooks.signature import HEADER, sign
from app.webhooks.targets import CallbackRefused, TargetPolicy

# What a connection or a receiver can make an attempt raise (httpcore's own exceptions
# share no base class).
_NETWORK_ERRORS = (
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.TimeoutException,
    httpcore.UnsupportedProtocol,
    OSError,
)


@dataclass(frozen=True)
class Outcome:
    status: int | None  # the receiver's HTTP status; None if none came
    error: str | None
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.error is None


class Stopped(Exception):
    """The attempt was cut off by close(): it is no attempt at all, nothing to record."""


class _Cut:
    """One attempt's sockets, which its watchdog (at the deadline) or a stop shuts down:
    a read blocked on them then returns at once, whatever the receiver does."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline  # time.monotonic()
        self.why: str | None = None  # "timeout" or "stopped" once cut
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()

    def remaining_s(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)

    def watch(self, sock: socket.socket) -> None:
        """Keep a duplicate of the connection's socket: TLS wraps (and detaches) the
        original, while a shutdown of either ends the one connection they share."""
        with self._lock:
            self._socks.append(sock.dup())
            if self.why is not None:
                _shut(self._socks[-1])

    def cut(self, why: str) -> None:
        with self._lock:
            if self.why is None:
                self.why = why
            for sock in self._socks:
                _shut(sock)

    def close(self) -> None:
        with self._lock:
            for sock in self._socks:
                sock.close()
            self._socks.clear()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # not connected any more: nothing to cut
        sock.shutdown(socket.SHUT_RDWR)


class _Backend(httpcore.NetworkBackend):
    """httpcore's own sockets, each handed to the attempt's _Cut as it connects."""

    def __init__(self, cut: _Cut) -> None:
        self._cut = cut
        self._sync = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        if self._cut.why is not None:  # cut during the DNS lookup
            raise httpcore.ConnectError(f"cut off ({self._cut.why})")
        # Nothing to cut while connecting: the connect waits no longer than what is left.
        limit = self._cut.remaining_s()
        timeout = limit if timeout is None else min(timeout, limit)
        stream = self._sync.connect_tcp(host, port, timeout, local_address, socket_options)
        self._cut.watch(stream.get_extra_info("socket"))
        return stream


class Sender:
    def __init__(self, policy: TargetPolicy, secret: bytes, timeout_s: float) -> None:
        self._policy, self._secret, self._timeout_s = policy, secret, timeout_s
        # No proxy from the environment (it would connect, not us, to an unchecked
        # address), no redirects (to anywhere at all), and a new connection per attempt:
        # a TLS connection checked for one host name must not carry another's request.
        self._ssl = httpx.create_ssl_context(trust_env=False)
        self._lock = threading.Lock()
        self._in_flight: set[_Cut] = set()
        self._closed = False

    def send(self, url: str, body: bytes, delivery_id: str) -> Outcome:
        """Never raises for anything the network or the receiver does; Stopped if close()
        cut it off. Blocks, for HOPPER_WEBHOOK_TIMEOUT at most."""
        started = time.perf_counter()
        cut = _Cut(time.monotonic() + self._timeout_s)
        watchdog = threading.Timer(self._timeout_s, cut.cut, args=("timeout",))
        watchdog.daemon = True
        with self._lock:
            if self._closed:
                raise Stopped
            self._in_flight.add(cut)
        watchdog.start()
        status, error = None, None
        try:
            status = self._post(cut, url, body, delivery_id)
            if not 200 <= status < 300:
                error = f"The receiver answered HTTP {status}."
        except CallbackRefused as exc:  # DNS changed since the upload
            error = exc.detail
        except _NETWORK_ERRORS as exc:
            error = f"The request failed: {exc or type(exc).__name__}."
            if cut.why is not None or isinstance(exc, httpcore.TimeoutException):
                error = (
                    f"The attempt timed out: no answer within {self._timeout_s:g} s "
                    "(HOPPER_WEBHOOK_TIMEOUT)."
                )
        finally:
            watchdog.cancel()
            with self._lock:
                self._in_flight.discard(cut)
            cut.close()
        if cut.why == "stopped" and status is None:
            raise Stopped
        duration_ms = round((time.perf_counter() - started) * 1000)
        return Outcome(status, error, duration_ms)

    def close(self) -> None:
        """Cut every attempt in flight (each raises Stopped) and refuse new ones."""
        with self._lock:
            self._closed = True
            in_flight = list(self._in_flight)
        for cut in in_flight:
            cut.cut("stopped")

    def _post(self, cut: _Cut, url: str, body: bytes, delivery_id: str) -> int:
        target = self._policy.parse(url)
        address = self._policy.resolve(target)  # blocks; the clock runs meanwhile
        if cut.remaining_s() <= 0:
            raise httpcore.ConnectTimeout("the DNS lookup took all the time")
        headers = [
            ("Host", target.host_header),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("User-Agent", f"Hopper/{__version__}"),
            ("Hopper-Delivery", delivery_id),
            (HEADER, sign(self._secret, body)),
        ]
        t = self._timeout_s
        extensions: dict[str, object] = {
            "timeout": {"connect": t, "read": t, "write": t, "pool": t}
        }
        if target.scheme == "https":
            # The certificate is checked against the host name (SNI), not the address.
            extensions["sni_hostname"] = target.host
        request = httpcore.Request(
            "POST", target.url_for(address), headers=headers, content=body, extensions=extensions
        )
        with httpcore.ConnectionPool(
            ssl_context=self._ssl, max_keepalive_connections=0, network_backend=_Backend(cut)
        ) as pool:
            response = pool.handle_request(request)
            response.close()  # the body is never read
        return response.status
