"""The pages' routes that read many files must not block the event loop."""

from __future__ import annotations

import inspect

from app.web import pages


def test_the_job_list_runs_in_the_threadpool_not_on_the_event_loop() -> None:
    # A plain def route: FastAPI runs it in its threadpool, so a key that sees few jobs on
    # a big data directory (every record read to find its own) stalls no other request.
    assert not inspect.iscoroutinefunction(pages.jobs_page)
