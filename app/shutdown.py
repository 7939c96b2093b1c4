"""Knowing the server is shutting down from the moment the signal arrives.

uvicorn first waits (up to --timeout-graceful-shutdown) for open connections, and only
then runs the lifespan shutdown. Chaining its SIGTERM/SIGINT handler lets long-lived
responses (event streams) end at once instead of holding the exit for the whole grace
period, and lets running jobs share one deadline with the uploads in flight.
"""

from __future__ import annotations

import signal
import threading
import time
from functools import partial
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ShutdownWatch:
    def __init__(self) -> None:
        self.signalled_at: float | None = None

    @property
    def requested(self) -> bool:
        return self.signalled_at is not None

    def install(self) -> None:
        """Chain the handlers the server installed; call from the lifespan startup."""
        if threading.current_thread() is not threading.main_thread():
            return  # signals are only delivered to the main thread's handlers
        for sig in SIGNALS:
            previous = signal.getsignal(sig)
            if callable(previous):
                signal.signal(sig, partial(self._on_signal, previous))

    def remaining_s(self, grace_s: float) -> float:
        """What is left of the grace period that started with the signal."""
        if self.signalled_at is None:
            return grace_s
        return max(0.0, grace_s - (time.monotonic() - self.signalled_at))

    def _on_signal(self, previous: Any, signum: int, frame: FrameType | None) -> None:
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()
        previous(signum, frame)
