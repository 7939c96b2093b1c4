"""RedisJobStore's index of open jobs, in a real redis-server: what the sweeps read
instead of every record."""

from __future__ import annotations

import itertools

import pytest

from app.models import Job, JobStatus, Webhook, WebhookState
from app.redisstore import RedisJobStore, connect
from tests.helpers import make_job
from tests.redis_server import RedisServer

_prefixes = itertools.count()


@pytest.fixture
def store(redis_server: RedisServer) -> RedisJobStore:
    return RedisJobStore(connect(redis_server.url), f"store-test-{next(_prefixes)}")


def test_a_job_is_open_until_it_finishes(store: RedisJobStore) -> None:
    queued, running, done = make_job(), make_job(JobStatus.PROCESSING), make_job(JobStatus.DONE)
    for job in (queued, running, done):
        store.save(job)
    assert sorted(store.open_candidates()) == sorted([queued.id, running.id])
    queued.status = JobStatus.FAILED
    store.save(queued)
    assert list(store.open_candidates()) == [running.id]
    assert sorted(store.job_ids()) == sorted([queued.id, running.id, done.id])  # all kept


def test_a_finished_job_with_a_pending_webhook_round_is_open(store: RedisJobStore) -> None:
    job = make_job(JobStatus.DONE)
    job.webhook = Webhook(url="https://example.com/hook")
    store.save(job)
    assert list(store.open_candidates()) == [job.id]
    job.webhook.state = WebhookState.DELIVERED
    store.save(job)
    assert list(store.open_candidates()) == []


def test_a_deleted_job_leaves_the_open_index(store: RedisJobStore) -> None:
    job = make_job()
    store.save(job)
    store.delete(job.id)
    assert list(store.open_candidates()) == []
    assert list(store.job_ids()) == []


def _as_an_older_writer_would(store: RedisJobStore, job: Job) -> None:
    """The record and its listing entry only, as saves made before `<queue>:open`."""
    store.client.set(f"{store.prefix}:job:{job.id}", job.model_dump_json())
    store.client.zadd(f"{store.prefix}:jobs", {job.id: job.created_at.timestamp()})


def test_records_saved_before_the_index_existed_are_indexed_once(store: RedisJobStore) -> None:
    queued, done = make_job(), make_job(JobStatus.DONE)
    _as_an_older_writer_would(store, queued)
    _as_an_older_writer_would(store, done)
    assert list(store.open_candidates()) == [queued.id]
    later = make_job()
    _as_an_older_writer_would(store, later)  # after the indexing: not looked for again
    assert list(store.open_candidates()) == [queued.id]


def test_a_member_whose_record_is_not_open_is_dropped_and_an_open_one_kept(
    store: RedisJobStore,
) -> None:
    running, done = make_job(JobStatus.PROCESSING), make_job(JobStatus.DONE)
    store.save(running)
    _as_an_older_writer_would(store, done)
    store.client.sadd(f"{store.prefix}:open", done.id, "gone-job-id")
    for job_id in (running.id, done.id, "gone-job-id"):
        store.drop_if_closed(job_id)
    assert list(store.open_candidates()) == [running.id]
