"""Timers on one thread: a webhook waiting out its backoff holds no thread of its own."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable


class Timers:
    """Calls `run(key)` on its thread once each key's delay has passed; `run` must be
    quick (it hands the key on)."""

    def __init__(self, run: Callable[[str], None], name: str) -> None:
        self._run = run
        self._due: list[tuple[float, int, str]] = []
        self._order = itertools.count()  # equal times keep their order; keys never compared
        self._changed = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def after(self, delay_s: float, key: str) -> None:
        with self._changed:
            heapq.heappush(self._due, (time.monotonic() + delay_s, next(self._order), key))
            self._changed.notify()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while (key := self._next()) is not None:
            self._run(key)

    def _next(self) -> str | None:
        with self._changed:
            while not self._stopped:
                now = time.monotonic()
                if self._due and self._due[0][0] <= now:
                    return heapq.heappop(self._due)[2]
                self._changed.wait(self._due[0][0] - now if self._due else None)
            return None
