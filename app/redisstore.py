"""Job records in Redis (HOPPER_BACKEND=celery): every API process and worker sees them.

`<queue>:job:<id>` holds the job document as the JSON store writes it (so /status sends
it as is); `<queue>:jobs` is a sorted set of ids by upload time, for listing;
`<queue>:open` the set of open jobs (unfinished, or a webhook round pending), so that
the sweeps read those records, not all. A record and its index entries change together
(MULTI/EXEC). A Redis that does not answer makes
each call raise StoreUnavailable: a 503 with Retry-After, never a 500.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from app.errors import StoreUnavailable, UnknownJob
from app.layout import is_job_id
from app.models import Job
from app.store import is_open

SOCKET_TIMEOUT_S = 2.0  # a Redis that stops answering costs a request this much, at most
LIST_BATCH = 500


def connect(url: str) -> redis.Redis:
    """A client that fails fast: a couple of short retries, then StoreUnavailable."""
    return redis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 2),
        health_check_interval=30,
    )


# Redis is there but cannot take writes: out of memory under noeviction, a read-only
# replica after a failover, a failed snapshot (MISCONF).
_REFUSING = (OutOfMemoryError, ReadOnlyError)


@contextlib.contextmanager
def answering() -> Iterator[None]:
    """Turn Redis being down, loading its data after a restart, or refusing writes into a
    503 with Retry-After."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, *_REFUSING) as exc:
        raise StoreUnavailable() from exc
    except ResponseError as exc:
        if str(exc).startswith("MISCONF"):
            raise StoreUnavailable() from exc
        raise


class RedisJobStore:
    remote = True  # a network round trip: the event loop hands reads to a thread

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = self._redis = client  # shared with the dispatcher's own keys
        self.prefix = self._prefix = prefix
        self._index = f"{prefix}:jobs"
        self._open = f"{prefix}:open"  # the ids of open jobs (app.store.is_open)
        self._open_indexed = f"{prefix}:open:indexed"  # set once the index covers all

    def _key(self, job_id: str) -> str:
        return f"{self._prefix}:job:{job_id}"

    def save(self, job: Job) -> None:
        with answering(), self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key(job.id), job.model_dump_json())
            pipe.zadd(self._index, {job.id: job.created_at.timestamp()}, nx=True)
            if is_open(job):
                pipe.sadd(self._open, job.id)
            else:
                pipe.srem(self._open, job.id)
            pipe.execute()

    def load_raw(self, job_id: str) -> bytes:
        if not is_job_id(job_id):
            raise UnknownJob(job_id)
        with answering():
            raw = cast(bytes | None, self._redis.get(self._key(job_id)))
        if raw is None:
            raise UnknownJob(job_id)
        return raw

    def load(self, job_id: str) -> Job:
        return Job.model_validate_json(self.load_raw(job_id))

    def exists(self, job_id: str) -> bool:
        if not is_job_id(job_id):
            return False
        with answering():
            return bool(self._redis.exists(self._key(job_id)))

    def delete(self, job_id: str) -> None:
        with answering(), self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(job_id))
            pipe.zrem(self._index, job_id)
            pipe.srem(self._open, job_id)
            pipe.execute()

    def recent_ids(self, offset: int, limit: int) -> list[str]:
        with answering():
            ids = cast(list[bytes], self._redis.zrevrange(self._index, offset, offset + limit - 1))
        return [job_id.decode() for job_id in ids]

    def job_ids(self) -> Iterator[str]:
        yield from self._ids_by_score("-inf", "+inf")

    def open_candidates(self) -> Iterator[str]:
        with answering():
            if not self._redis.exists(self._open_indexed):
                self._index_open()
            ids = [i.decode() for i in self._redis.sscan_iter(self._open, count=LIST_BATCH)]
        return iter(ids)

    def _index_open(self) -> None:
        """Records saved before this index existed (an upgrade): the open ones, once."""
        for job_id in self.job_ids():
            with contextlib.suppress(UnknownJob, ValueError):
                if is_open(self.load(job_id)):
                    self._redis.sadd(self._open, job_id)
        self._redis.set(self._open_indexed, "1")

    def drop_if_closed(self, job_id: str) -> None:
        """A member left by that indexing racing a save, or by an older writer: taken
        out unless a save made the record open meanwhile (WATCH)."""
        key = self._key(job_id)
        with answering(), self._redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                raw = cast(bytes | None, pipe.get(key))
                if raw is not None and is_open(Job.model_validate_json(raw)):
                    return
                pipe.multi()
                pipe.srem(self._open, job_id)
                pipe.execute()
            except WatchError:
                pass  # saved meanwhile: that save set its membership

    def ended_before_candidates(self, cutoff: float) -> Iterator[str]:
        # Uploaded before the cutoff: every job that ended before it was.
        yield from self._ids_by_score("-inf", cutoff)

    def _ids_by_score(self, low: Any, high: Any) -> Iterator[str]:
        start = 0
        while True:
            with answering():
                batch = cast(
                    list[bytes],
                    self._redis.zrangebyscore(self._index, low, high, start=start, num=LIST_BATCH),
                )
            yield from (job_id.decode() for job_id in batch)
            if len(batch) < LIST_BATCH:
                return
            start += LIST_BATCH

    def remove_temp_files(self) -> int:
        return 0  # a Redis write is whole or absent: there are none

    def ping(self) -> str | None:
        """None if Redis answers, else why not (for /readyz)."""
        try:
            self._redis.ping()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            return f"Redis is not answering ({exc})"
        return None
