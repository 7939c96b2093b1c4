"""The uvicorn command line Hopper is served with: `hopper serve` (and so `scripts/serve`)."""

from __future__ import annotations

import math
import sys

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def uvicorn_argv(host: str, port: int, shutdown_grace_s: float, extra: list[str]) -> list[str]:
    """`python -m uvicorn app.main:app` with Hopper's protocols (the header deadline and
    size cap live there), no access log (each request's own line replaces it) and uvicorn's
    graceful shutdown matching HOPPER_SHUTDOWN_GRACE. `extra` goes to uvicorn as is."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:app",
        "--host",
        host,
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "app.protocols:HttpToolsProtocol",
        "--timeout-graceful-shutdown",
        str(math.ceil(shutdown_grace_s)),  # uvicorn takes whole seconds
        "--no-access-log",
        *extra,
    ]
