"""The job metrics of HOPPER_BACKEND=celery: counted in Redis by whichever process ends a
job (mostly a worker), read back by every API process's /metrics.

With Celery, jobs end in worker processes that serve no HTTP; counting them in the API
process would show nothing. So the worker that ends a job adds it to one Redis hash,
`<queue>:metrics`, in one MULTI/EXEC (a scrape never sees half a job), and each API
process's /metrics reports that hash under the same names as the local backend:
`hopper_jobs_finished_total{status}`, `hopper_jobs_deduplicated_total` and the histogram
`hopper_job_duration_seconds{processor}`. These are the deployment's totals, the same in
every API process: aggregate them across API processes with max(), not sum().

Hash fields: `finished:<status>`, `deduplicated`, and per processor
`count:<p>`, `sum:<p>`, `bucket:<p>:<le>` (a job counted in the one bucket it falls in;
the collector makes them cumulative, as Prometheus wants). A job is counted by the run
that recorded its end (RunOutcome.ended), so a second delivery of an ended job, which
Celery's at-least-once delivery allows, does not count it again.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator, Sequence

import redis
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from app.metrics import DEDUPLICATED_HELP, DURATION_HELP, FINISHED_HELP
from app.redisstore import answering

log = logging.getLogger("hopper.metrics")

INF = float("inf")


def metrics_key(prefix: str) -> str:
    return f"{prefix}:metrics"


class RedisJobMetrics(Collector):
    """Counts finished jobs in Redis; as a prometheus Collector, reports the counts."""

    def __init__(self, client: redis.Redis, prefix: str, buckets: Sequence[float]) -> None:
        self._redis = client
        self.prefix = prefix
        self._key = metrics_key(prefix)
        self._bounds = [*sorted(buckets), INF]
        # `le` as prometheus-client writes it (1.0, +Inf): the local backend's series.
        self._le = [floatToGoString(b) for b in self._bounds]  # type: ignore[no-untyped-call]
        # What a scrape reports while Redis is away: the last counts read, or (None)
        # none at all, never zeros (Prometheus would take them for a counter reset).
        self._last: dict[str, str] | None = None

    def job_finished(self, status: str, timings: dict[str, float], *, duplicate: bool) -> None:
        with answering():
            self._count(status, timings, duplicate)

    def _count(self, status: str, timings: dict[str, float], duplicate: bool) -> None:
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(self._key, f"finished:{status}", 1)
            if duplicate:
                pipe.hincrby(self._key, "deduplicated", 1)
            for processor, seconds in timings.items():
                le = self._le[bisect.bisect_left(self._bounds, seconds)]
                pipe.hincrby(self._key, f"bucket:{processor}:{le}", 1)
                pipe.hincrby(self._key, f"count:{processor}", 1)
                pipe.hincrbyfloat(self._key, f"sum:{processor}", seconds)
            pipe.execute()

    def collect(self) -> Iterator[Metric]:
        fields = self._read()
        if fields is None:  # never read: the families, without samples
            yield from self.describe()
            return
        finished = CounterMetricFamily("hopper_jobs_finished", FINISHED_HELP, labels=["status"])
        for status, count in _with_prefix(fields, "finished:"):
            finished.add_metric([status], float(count))
        yield finished
        yield CounterMetricFamily(
            "hopper_jobs_deduplicated",
            DEDUPLICATED_HELP,
            value=float(fields.get("deduplicated", 0)),
        )
        yield self._durations(fields)

    def describe(self) -> Iterator[Metric]:
        """The families without reading Redis, so that registering this needs no Redis."""
        yield CounterMetricFamily("hopper_jobs_finished", FINISHED_HELP, labels=["status"])
        yield CounterMetricFamily("hopper_jobs_deduplicated", DEDUPLICATED_HELP)
        yield HistogramMetricFamily("hopper_job_duration_seconds", DURATION_HELP)

    def _read(self) -> dict[str, str] | None:
        """The hash, or the last one read: a scrape must answer whatever Redis says."""
        try:
            raw = self._redis.hgetall(self._key)
        except redis.RedisError:
            log.warning("job metrics: Redis did not answer; reporting the last counts read")
            return self._last
        self._last = {_text(k): _text(v) for k, v in raw.items()}
        return self._last

    def _durations(self, fields: dict[str, str]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "hopper_job_duration_seconds", DURATION_HELP, labels=["processor"]
        )
        for processor, count in _with_prefix(fields, "count:"):
            cumulative, buckets = 0, []
            for le in self._le:
                cumulative += int(fields.get(f"bucket:{processor}:{le}", 0))
                buckets.append((le, float(cumulative)))
            if cumulative != int(count):  # written in one MULTI: never, short of a hand edit
                log.warning(
                    "job metrics: %s has %s jobs in buckets of %s", processor, cumulative, count
                )
            total = float(fields.get(f"sum:{processor}", 0))
            family.add_metric([processor], buckets, total)
        return family


def _with_prefix(fields: dict[str, str], prefix: str) -> Iterator[tuple[str, str]]:
    for name, value in sorted(fields.items()):
        if name.startswith(prefix):
            yield name[len(prefix) :], value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
