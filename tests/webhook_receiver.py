"""A webhook receiver for tests: a real HTTP server on 127.0.0.1 in a thread, checking
each delivery's signature with the code docs/webhooks.md gives receivers."""

from __future__ import annotations

import re
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
