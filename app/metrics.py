"""Prometheus metrics (prometheus-client), one registry per app, served at /metrics.

Counters count in the server process that answered or ran the job: with several server
processes (`--workers N`), scrape each or aggregate, as for any multi-process server.
With HOPPER_BACKEND=celery the job families are the deployment's, counted in Redis by
whoever ends a job (app.jobmetrics), the same in every API process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from app.errors import UnknownJob
from app.store import JobStore

if TYPE_CHECKING:  # the Celery backend's; the local backend never loads redis-py
    from app.jobmetrics import RedisJobMetrics

# Uploads from a few KiB on loopback to a GiB on a slow link.
UPLOAD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
# No *_created series: half the lines, and nothing a dashboard uses.
disable_created_metrics()  # type: ignore[no-untyped-call]

JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
FINISHED_HELP = "Jobs that reached a final state, by state."
DEDUPLICATED_HELP = "Jobs done at once with an earlier job's results (HOPPER_DEDUPE)."
DURATION_HELP = "Time each processor of a finished job ran, by processor."


class JobMetrics(Protocol):
    """Where finished jobs are counted: this process's registry (LocalJobMetrics), or
    with Celery the deployment's hash in Redis (app.jobmetrics.RedisJobMetrics)."""

    def job_finished(self, status: str, timings: dict[str, float], *, duplicate: bool) -> None: ...


class LocalJobMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.processor_seconds = Histogram(
            "hopper_job_duration_seconds",
            DURATION_HELP,
            ["processor"],
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.finished = Counter(
            "hopper_jobs_finished", FINISHED_HELP, ["status"], registry=registry
        )
        self.deduplicated = Counter(
            "hopper_jobs_deduplicated", DEDUPLICATED_HELP, registry=registry
        )

    def job_finished(self, status: str, timings: dict[str, float], *, duplicate: bool) -> None:
        self.finished.labels(status).inc()
        if duplicate:
            self.deduplicated.inc()
        for processor, seconds in timings.items():
            self.processor_seconds.labels(processor).observe(seconds)


class Metrics:
    def __init__(
        self,
        *,
        queue_depth: Callable[[], int],
        free_bytes: Callable[[], int],
        shared_jobs: RedisJobMetrics | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs: JobMetrics
        if shared_jobs is None:
            self.jobs = LocalJobMetrics(r)
        else:
            r.register(shared_jobs)
            self.jobs = shared_jobs
        self.uploads = Counter(
            "hopper_uploads", "Upload requests answered, by HTTP status.", ["code"], registry=r
        )
        self.upload_bytes = Counter(
            "hopper_upload_bytes", "Bytes of files stored by accepted uploads.", registry=r
        )
        self.upload_seconds = Histogram(
            "hopper_upload_duration_seconds",
            "Time from an upload's first byte to its answer.",
            buckets=UPLOAD_BUCKETS,
            registry=r,
        )
        self.responses = Counter(
            "hopper_http_responses",
            "HTTP responses, by route template and status code.",
            ["route", "code"],
            registry=r,
        )
        self.watch_files = Counter(
            "hopper_watch_files",
            "Files from the watch folder: taken as jobs or rejected.",
            ["outcome"],
            registry=r,
        )
        self._responses: dict[tuple[str, int], Any] = {}
        queue = Gauge(
            "hopper_queue_depth",
            "Jobs queued or running: in this process, or with Celery in the deployment.",
            registry=r,
        )
        queue.set_function(queue_depth)
        free = Gauge("hopper_disk_free_bytes", "Free bytes on the data disk.", registry=r)
        free.set_function(free_bytes)

    def response_sent(self, route: str, code: int) -> None:
        # labels() costs a lock and a tuple per call; every request comes through here.
        child = self._responses.get((route, code))
        if child is None:
            child = self._responses[(route, code)] = self.responses.labels(route, str(code))
        child.inc()

    def watch_file(self, outcome: str) -> None:
        self.watch_files.labels(outcome).inc()

    def upload_answered(self, code: int, seconds: float, stored_bytes: int) -> None:
        self.uploads.labels(str(code)).inc()
        self.upload_seconds.observe(seconds)
        if stored_bytes:
            self.upload_bytes.inc(stored_bytes)

    async def endpoint(self, request: Request) -> Response:
        # In a thread: the shared job metrics are a Redis read, the free bytes a statvfs.
        body = await run_in_threadpool(generate_latest, self.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def count_finished(
    store: JobStore, metrics: JobMetrics, job_id: str, timings: dict[str, float]
) -> None:
    """Count a job that has just ended (the finish hook of the API and of the workers)."""
    try:
        job = store.load(job_id)
    except UnknownJob:
        return  # deleted as it ended
    if job.status.finished:
        metrics.job_finished(job.status.value, timings, duplicate=job.duplicate_of is not None)
