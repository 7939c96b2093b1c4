"""The sweeper: deletes expired jobs (HOPPER_RETENTION) and what crashes leave behind.

One process at a time: of the server processes sharing a data directory, the one holding
an flock on sweeper.lock sweeps. If it dies the kernel frees the lock, and another
process takes over at its next turn.

A sweep also takes over the unfinished jobs of server processes that died (their leases
are free) and queues them in this process: of several processes, the others run what one
of them had queued when it was killed, without waiting for a restart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.cleanup import StopKind, clear_stop, purge, read_stop, remove_orphans
from app.dedupe import remove_dangling
from app.idempotency import remove_dangling_keys
from app.jobs import JobEnv
from app.layout import is_job_id
from app.locks import ProcessLock, lock_if_free
from app.models import Job
from app.store import JobStore

log = logging.getLogger("hopper.sweeper")


@dataclass(frozen=True)
class SweepReport:
    expired: int = 0
    temp_records: int = 0
    leftovers: int = 0
    adopted: int = 0  # unfinished jobs no live process owned, queued in this process

    @property
    def total(self) -> int:
        return self.expired + self.temp_records + self.leftovers + self.adopted


def sweep(env: JobEnv, store: JobStore) -> SweepReport:
    """One pass: expired jobs, temp records of dead writers, files with no record, settled
    stop requests, keys and dedupe entries of deleted jobs. Everything it removes is
    checked under its lock (or against the job's record)."""
    expired = _remove_expired(env) if env.retention_s else 0
    temps = store.remove_temp_files()
    leftovers = remove_orphans(env.layout, env.store) + _settle_stop_requests(env)
    leftovers += remove_dangling_keys(env.layout, env.store) + remove_dangling(
        env.layout, env.store
    )
    adopted = _adopt_unfinished(env) if env.adopt is not None else 0
    return SweepReport(expired, temps, leftovers, adopted)


_UNFINISHED = (b'"status":"queued"', b'"status":"processing"')


def _adopt_unfinished(env: JobEnv) -> int:
    """Hand every unfinished job to this process's dispatcher, which queues the ones no
    live process owns (a dead process's) and leaves the rest. Not a look at the run
    lock first: that look would make a worker starting the job at that moment skip it."""
    assert env.adopt is not None  # noqa: S101 - checked by the caller
    adopted = 0
    for job_id in env.store.open_candidates():
        with contextlib.suppress(Exception):  # gone meanwhile, or unreadable
            raw = env.store.load_raw(job_id)
            if not any(marker in raw for marker in _UNFINISHED):
                continue  # finished: most records, and no parse needed to tell
            if not Job.model_validate_json(raw).status.finished:
                adopted += env.adopt(job_id)
    return adopted


def _remove_expired(env: JobEnv) -> int:
    now = time.time()
    cutoff = datetime.fromtimestamp(now, UTC) - timedelta(seconds=env.retention_s)
    removed = 0
    for job_id in env.store.ended_before_candidates(now - env.retention_s):
        with contextlib.suppress(Exception):  # unreadable: left for a person
            job = env.store.load(job_id)
            if _ended_before(job, cutoff):
                removed += _purge_if_free(env, job_id)
    return removed


def _ended_before(job: Job, cutoff: datetime) -> bool:
    return job.status.finished and job.finished_at is not None and job.finished_at <= cutoff


def _settle_stop_requests(env: JobEnv) -> int:
    """A stop request for a job that finished anyway: a delete is carried out, a cancel
    dropped. A queued job's request stays: its worker acts on it when the job comes up."""
    settled = 0
    for entry in os.scandir(env.layout.stops):
        job_id = entry.name
        if not is_job_id(job_id):
            continue
        with contextlib.suppress(Exception):
            if not env.store.load(job_id).status.finished:
                continue
            if read_stop(env.layout, job_id) is StopKind.DELETE:
                settled += _purge_if_free(env, job_id)
            else:
                clear_stop(env.layout, job_id)
                settled += 1
    return settled


def _purge_if_free(env: JobEnv, job_id: str) -> int:
    path = env.layout.upload(job_id)
    with lock_if_free(path) as held:
        if held or not path.exists():
            purge(env.layout, env.store, job_id)
            return 1
    return 0


class Sweeper:
    """Runs sweep() every `interval_s` in a thread, when this process holds the lock."""

    def __init__(
        self,
        env: JobEnv,
        store: JobStore,
        interval_s: float,
        tasks: Sequence[Callable[[], object]] = (),
    ) -> None:
        self._env, self._store, self._interval_s = env, store, interval_s
        self._tasks = tasks  # more work for the one sweeping process (webhooks to resume)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hopper-sweeper", daemon=True)
        self._lock = ProcessLock(env.layout.sweeper_lock)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=10)
        self._lock.release()  # another process may sweep from now on

    def _run(self) -> None:
        while not self._done.wait(self._interval_s):
            if not self._holds_lock():
                continue
            try:
                report = sweep(self._env, self._store)
            except Exception:  # a full or read-only disk, say: try again next turn
                log.exception("sweep failed")
                continue
            if report.total:
                log.info("sweep: %s", report)
            self._run_tasks()

    def _run_tasks(self) -> None:
        for task in self._tasks:
            try:
                task()
            except Exception:  # as for a sweep: next turn
                log.exception("sweep task %s failed", getattr(task, "__name__", task))

    def _holds_lock(self) -> bool:
        return self._lock.hold()
