"""The dispatcher: the app's own bounded job workers, fed by job id.

Jobs never run on the request threadpool: the BackgroundTasks job only calls submit(),
which queues the id and returns. HOPPER_WORKERS threads take ids off the queue.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("hopper.dispatch")


class Dispatcher(Protocol):
    def start(self) -> None: ...

    def submit(self, job_id: str) -> None:
        """Queue a job; a job already queued or running here is not queued twice."""
        ...

    def stop(self, timeout_s: float) -> None: ...

    def waiting(self) -> int: ...


class ThreadDispatcher:
    def __init__(self, run: Callable[[str], None], workers: int) -> None:
        self._run = run
        self._workers = workers
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._active: set[str] = set()  # queued or running in this process
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for n in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"hopper-job-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._active:
                return
            self._active.add(job_id)
        self._queue.put(job_id)

    def waiting(self) -> int:
        return self._queue.qsize()

    def stop(self, timeout_s: float) -> None:
        """Let running jobs finish up to the deadline; a job cut off is requeued at next start."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout_s / max(len(self._threads), 1))
        self._threads.clear()

    def _work(self) -> None:
        while (job_id := self._queue.get()) is not None:
            try:
                self._run(job_id)
            except Exception:  # run_job records failures; this keeps the worker alive
                log.exception("job %s escaped its runner", job_id)
            finally:
                with self._lock:
                    self._active.discard(job_id)
