"""The Celery backend's job metrics, counted in a real redis-server and read back as
Prometheus text, as /metrics serves them."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.jobmetrics import RedisJobMetrics
from app.metrics import JOB_BUCKETS
from app.redisstore import connect
from tests.redis_server import RedisServer

_prefixes = itertools.count()
DONE = ("hopper_jobs_finished_total", (("status", "done"),))


@pytest.fixture
def counter(redis_server: RedisServer) -> RedisJobMetrics:
    return RedisJobMetrics(
        connect(redis_server.url), f"metrics-test-{next(_prefixes)}", JOB_BUCKETS
    )


def _scrape(*collectors: RedisJobMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_jobs_are_counted_by_status_and_timed_by_processor(counter: RedisJobMetrics) -> None:
    counter.job_finished("done", {"inspect": 0.03, "text": 2.0}, duplicate=False)
    counter.job_finished("done", {"inspect": 0.07}, duplicate=True)
    counter.job_finished("failed", {}, duplicate=False)
    got = _scrape(counter)
    assert got[DONE] == 2
    assert got[("hopper_jobs_finished_total", (("status", "failed"),))] == 1
    assert got[("hopper_jobs_deduplicated_total", ())] == 1
    inspect = (("processor", "inspect"),)
    assert got[("hopper_job_duration_seconds_count", inspect)] == 2
    assert got[("hopper_job_duration_seconds_sum", inspect)] == pytest.approx(0.1)
    bucket = "hopper_job_duration_seconds_bucket"
    # Cumulative, with `le` written as prometheus-client writes it for the local backend.
    assert got[(bucket, (("le", "0.01"), ("processor", "inspect")))] == 0
    assert got[(bucket, (("le", "0.05"), ("processor", "inspect")))] == 1
    assert got[(bucket, (("le", "0.1"), ("processor", "inspect")))] == 2
    assert got[(bucket, (("le", "+Inf"), ("processor", "inspect")))] == 2
    assert got[(bucket, (("le", "1.0"), ("processor", "text")))] == 0
    assert got[(bucket, (("le", "2.5"), ("processor", "text")))] == 1


def test_every_reader_sees_the_deployments_counts(
    counter: RedisJobMetrics, redis_server: RedisServer
) -> None:
    other_process = RedisJobMetrics(connect(redis_server.url), counter.prefix, JOB_BUCKETS)
    counter.job_finished("done", {}, duplicate=False)
    other_process.job_finished("cancelled", {}, duplicate=False)
    for reader in (counter, other_process):
        got = _scrape(reader)
        assert got[DONE] == 1
        assert got[("hopper_jobs_finished_total", (("status", "cancelled"),))] == 1


def test_a_scrape_while_redis_is_away_reports_the_last_counts(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path).start()
    try:
        counter = RedisJobMetrics(connect(redis_server.url), "away", JOB_BUCKETS)
        counter.job_finished("done", {}, duplicate=False)
        assert _scrape(counter)[DONE] == 1
    finally:
        redis_server.stop()
    assert _scrape(counter)[DONE] == 1  # the last counts read: a scrape, not an error
