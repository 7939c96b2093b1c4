"""A webhook receiver for tests: a real HTTP server on 127.0.0.1 in a thread, checking
each delivery's signature with the code docs/webhooks.md gives receivers."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.helpers import ROOT, free_port

Verify = Callable[[bytes, bytes, str], bool]


def documented_verifier() -> Verify:
    """The `verify` function of docs/webhooks.md, run as a receiver would copy it."""
    text = (ROOT / "docs" / "webhooks.md").read_text()
    match = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert match is not None, "docs/webhooks.md has no python block"
    namespace: dict[str, Any] = {}
    exec(match.group(1), namespace)  # noqa: S102 - our own documentation's code, under test
    verify: Verify = namespace["verify"]
    return verify


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    verified: bool
    received_at: float  # time.time()


class Receiver:
    """Answers each path with its scripted statuses in turn, then 200."""

    def __init__(self, secret: bytes, port: int | None = None) -> None:
        self.port = port or free_port()
        self._secret = secret
        self._verify = documented_verifier()
        self._scripts: dict[str, list[int]] = {}
        self._seen: list[Delivery] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, statuses: list[int]) -> None:
        with self._lock:
            self._scripts[path] = list(statuses)

    def deliveries(self, path: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self._seen if d.path == path]

    def start(self) -> Receiver:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        signature = headers.get("hopper-signature", "")
        verified = self._verify(self._secret, body, signature)
        with self._lock:
            self._seen.append(Delivery(path, headers, body, verified, time.time()))
            script = self._scripts.get(path, [])
            return script.pop(0) if script else 200

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver._answer(self.path, headers, body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test asserts on what arrived

        return Handler


class DrippingReceiver:
    """A slow-loris receiver on a raw socket: it reads each delivery, then answers `200`
    one byte every `every_s` seconds (about 11 s in all at 0.3 s), so that no single read
    waits long, until `drip` is turned off, when it answers at once."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    def __init__(self, every_s: float = 0.3) -> None:
        self.port = free_port()
        self.every_s = every_s
        self.drip = True
        self._lock = threading.Lock()
        self._arrived: list[float] = []  # time.monotonic() of each delivery read
        self._open = 0  # deliveries being answered now
        self._stopped = threading.Event()
        self._listener: socket.socket | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def arrived(self) -> list[float]:
        with self._lock:
            return list(self._arrived)

    @property
    def open(self) -> int:
        with self._lock:
            return self._open

    def start(self) -> DrippingReceiver:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data and (piece := conn.recv(65536)):
                data += piece
            head, _, body = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            while length is not None and len(body) < int(length[1]):
                if not (piece := conn.recv(65536)):
                    break
                body += piece
            with self._lock:
                self._arrived.append(time.monotonic())
                self._open += 1
            try:
                if not self.drip:
                    conn.sendall(self.ANSWER)
                    return
                for byte in self.ANSWER:
                    if self._stopped.wait(self.every_s):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return  # the sender hung up
            finally:
                with self._lock:
                    self._open -= 1
