"""Delivery rounds: when a job with a callback_url finishes, its document is POSTed until
the receiver answers 2xx or HOPPER_WEBHOOK_MAX_ATTEMPTS attempts have failed, with
exponential backoff between them; every attempt is recorded in the job's `webhook`.

At least once: the record says a round is `pending` until it ends, so a round cut off by
a crash is taken over by the next sweep (the round's claim, app.webhooks.claims, is free
once its process is gone) and carries on where it stopped, backoff included. A receiver
may therefore see a delivery twice; `Hopper-Delivery` names each attempt.

Sends run on a small thread pool in the server process, never on the event loop; a round
waiting out its backoff sits in a timer heap, not in a thread. An attempt lasts
HOPPER_WEBHOOK_TIMEOUT at most, however its receiver answers (app.webhooks.sender), and a
stop cuts the attempts in flight: their rounds stay pending, for the next sweep.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from app.config import Settings
from app.errors import HopperError, ServiceBusy, UnknownJob
from app.layout import DataDir
from app.locks import job_lock
from app.models import Job, Webhook, WebhookAttempt, WebhookState, utc_now
from app.store import JobStore
from app.webhooks.claims import claims, is_free
from app.webhooks.schedule import Timers
from app.webhooks.sender import Outcome, Sender, Stopped
from app.webhooks.signature import secret_of
from app.webhooks.targets import TargetPolicy

log = logging.getLogger("hopper.webhooks")

SENDER_THREADS = 4  # attempts in flight per process; each waits on the network, not the CPU
STOP_WAIT_S = 2.0  # for the steps a stop cut off to let go of their claims
MAX_BACKOFF_S = 300.0
LOCK_WAIT_S = 10.0  # a finished job's lock is only ever held for a moment
LOCK_RETRY_S = 1.0
_PENDING = b'"state":"pending"'  # seen in the raw record, so most are never parsed


class NotRedeliverable(HopperError):
    status_code = 409


class Deliveries:
    def __init__(self, settings: Settings, layout: DataDir, store: JobStore) -> None:
        self._layout, self._store = layout, store
        self._max_attempts = settings.webhook_max_attempts
        self._backoff_s = settings.webhook_backoff
        secret = secret_of(settings)
        policy = TargetPolicy(settings.webhook_allowed_hosts)
        self._sender = None if secret is None else Sender(policy, secret, settings.webhook_timeout)
        self._pool = ThreadPoolExecutor(SENDER_THREADS, thread_name_prefix="hopper-webhook")
        self._timers = Timers(self._submit, name="hopper-webhook-timers")
        self._claims = claims()
        self._lock = threading.Lock()
        self._busy: set[str] = set()  # a round of this job is queued, waiting or sending here
        self._again: set[str] = set()  # asked for while busy: look at the record once more
        self._stepping = 0  # steps running on the pool
        self._idle = threading.Condition(self._lock)
        self._stopped = False

    @property
    def enabled(self) -> bool:
        """HOPPER_WEBHOOK_SECRET is set: nothing is sent unsigned."""
        return self._sender is not None

    def start(self) -> None:
        self._timers.start()

    def stop(self) -> None:
        """Attempts in flight are cut off, unrecorded, without waiting for their receivers;
        their rounds, like those queued or waiting out a backoff, stay pending in their
        records, for the next sweep of any process."""
        with self._lock:
            self._stopped = True
        self._timers.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._sender is not None:
            self._sender.close()
        with self._idle:  # a moment, for the steps just cut off to end
            self._idle.wait_for(lambda: self._stepping == 0, timeout=STOP_WAIT_S)
        self._claims.release_all()

    def job_finished(self, job_id: str, timings: dict[str, float] | None = None) -> None:
        """The dispatcher's finish hook (and the cancel route's): cheap, it only queues."""
        self.deliver(job_id)

    def deliver(self, job_id: str) -> bool:
        """Look at the job's record soon and send what is due; True if queued now."""
        if not self.enabled:
            return False
        with self._lock:
            if self._stopped:
                return False
            if job_id in self._busy:
                self._again.add(job_id)
                return False
            self._busy.add(job_id)
        self._submit(job_id)
        return True

    def redeliver(self, job_id: str) -> Job:
        """Start a new round for a finished job; UnknownJob, or NotRedeliverable (409)."""
        if not self.enabled:
            raise NotRedeliverable(
                "This server sends no webhooks: HOPPER_WEBHOOK_SECRET is not set."
            )
        _check_redeliverable(self._store.load(job_id))  # before waiting for any lock
        with self._record_lock(job_id) as held:
            if not held:
                raise ServiceBusy("The job is busy for a moment; try again.", retry_after_s=1)
            job = self._store.load(job_id)
            hook = _check_redeliverable(job)
            hook.state, hook.round = WebhookState.PENDING, hook.round + 1
            self._store.save(job)
        self.deliver(job_id)
        return job

    def resume_pending(self) -> int:
        """For the sweeper: queue the pending rounds of finished jobs that no live process
        is delivering (a killed one's, or one a stop left waiting)."""
        if not self.enabled:
            return 0
        resumed = 0
        for job_id in self._store.open_candidates():
            with contextlib.suppress(Exception):  # gone meanwhile, or unreadable
                raw = self._store.load_raw(job_id)
                if _PENDING not in raw or not _due(Job.model_validate_json(raw)):
                    continue
                if is_free(self._layout.upload(job_id)):
                    resumed += self.deliver(job_id)
        if resumed:
            log.info("resumed %d webhook deliveries", resumed)
        return resumed

    def _submit(self, job_id: str) -> None:
        try:
            self._pool.submit(self._step, job_id)
        except RuntimeError:  # shut down: the record stays pending for a sweep
            self._end(job_id)

    def _step(self, job_id: str) -> None:
        """One attempt (or none, if none is due), then the next one timed or the round over."""
        with self._lock:
            self._stepping += 1
        try:
            try:
                delay_s = self._attempt(job_id)
            except Stopped:  # cut off by stop(): the round stays pending for a sweep
                delay_s = None
            except Exception:  # a full disk, say: the round stays pending; a sweep resumes it
                log.exception("job %s: webhook delivery failed", job_id, extra={"job_id": job_id})
                delay_s = None
            if delay_s is None:
                self._end(job_id)
            else:
                self._timers.after(delay_s, job_id)
        finally:
            with self._idle:
                self._stepping -= 1
                self._idle.notify_all()

    def _end(self, job_id: str) -> None:
        with self._lock:
            self._claims.release(job_id)
            again = job_id in self._again and not self._stopped
            self._again.discard(job_id)
            if not again:
                self._busy.discard(job_id)
        if again:
            self._submit(job_id)

    def _attempt(self, job_id: str) -> float | None:
        """Seconds until this round's next attempt; None once the round is not ours."""
        with contextlib.suppress(UnknownJob):
            if not _due(self._store.load(job_id)):
                return None  # most finished jobs: no webhook at all
        if not self._claims.take(job_id, self._layout.upload(job_id)):
            return None  # another live process delivers it
        with self._record_lock(job_id) as held:
            if not held:
                return LOCK_RETRY_S
            try:
                raw = self._store.load_raw(job_id)
            except UnknownJob:
                return None  # deleted
            job = Job.model_validate_json(raw)
            if job.webhook is None or not _due(job):
                return None
            wait_s = self._wait_s(job.webhook)
            if wait_s > 0:
                return wait_s  # a round taken over: its backoff still runs
        assert self._sender is not None  # noqa: S101 - enabled, or nothing was queued
        hook, started = job.webhook, utc_now()
        outcome = self._sender.send(hook.url, raw, f"{job_id}-{len(hook.attempts) + 1}")
        return self._record(job_id, started, outcome)

    def _record(self, job_id: str, started: datetime, outcome: Outcome) -> float | None:
        with self._record_lock(job_id) as held:
            if not held:
                log.warning("job %s: a webhook attempt went unrecorded", job_id)
                return LOCK_RETRY_S
            try:
                job = self._store.load(job_id)
            except UnknownJob:
                return None
            hook = job.webhook
            if hook is None or hook.state is not WebhookState.PENDING:
                return None
            hook.attempts.append(_attempt_of(hook.round, started, outcome))
            tried = len(_this_round(hook))
            if outcome.delivered:
                hook.state = WebhookState.DELIVERED
            elif tried >= self._max_attempts:
                hook.state = WebhookState.FAILED
            self._store.save(job)
            _log_attempt(job_id, tried, hook.state, outcome)
            if hook.state is not WebhookState.PENDING:
                # Free while the record lock is still held: a redeliver, from any process,
                # then finds the claim free.
                self._claims.release(job_id)
                return None
        return self._delay_s(tried)

    def _wait_s(self, hook: Webhook) -> float:
        """Before a round's next attempt: its backoff after the last one (0 for the first)."""
        tried = _this_round(hook)
        if not tried:
            return 0.0
        last = tried[-1]
        ended = last.at + timedelta(milliseconds=last.duration_ms)
        due = ended + timedelta(seconds=self._delay_s(len(tried)))
        return max((due - utc_now()).total_seconds(), 0.0)

    def _delay_s(self, tried: int) -> float:
        """1, 2, 4, 8 ... times HOPPER_WEBHOOK_BACKOFF after the 1st, 2nd, 3rd ... attempt."""
        return float(min(self._backoff_s * 2 ** (tried - 1), MAX_BACKOFF_S))

    @contextlib.contextmanager
    def _record_lock(self, job_id: str) -> Iterator[bool]:
        """The job's lock, as every writer of its record takes it: an attempt's record
        cannot clobber a concurrent change, nor one of them."""
        with contextlib.ExitStack() as stack:
            try:
                held = stack.enter_context(
                    job_lock(self._layout.upload(job_id), wait_s=LOCK_WAIT_S)
                )
            except FileNotFoundError:
                held = True  # the file is gone (a purge under way): nobody runs the job
            yield held


def _due(job: Job) -> bool:
    """A finished job whose webhook round is not over."""
    return (
        job.status.finished
        and job.webhook is not None
        and job.webhook.state is WebhookState.PENDING
    )


def _this_round(hook: Webhook) -> list[WebhookAttempt]:
    return [attempt for attempt in hook.attempts if attempt.round == hook.round]


def _check_redeliverable(job: Job) -> Webhook:
    if job.webhook is None:
        raise NotRedeliverable(
            "The job was uploaded without a callback_url: it has no webhook to send."
        )
    if not job.status.finished:
        raise NotRedeliverable(
            f"The job is {job.status.value}; its webhook is sent when it finishes."
        )
    if job.webhook.state is WebhookState.PENDING:
        raise NotRedeliverable(
            "A delivery of this job's webhook is under way; its attempts are in the job's "
            "`webhook`. Redeliver once it is delivered or failed."
        )
    return job.webhook


def _attempt_of(round_: int, started: datetime, outcome: Outcome) -> WebhookAttempt:
    return WebhookAttempt(
        round=round_,
        at=started,
        status=outcome.status,
        error=outcome.error,
        duration_ms=outcome.duration_ms,
    )


def _log_attempt(job_id: str, tried: int, state: WebhookState, outcome: Outcome) -> None:
    extra = {
        "job_id": job_id,
        "attempt": tried,
        "status": outcome.status,
        "duration_ms": outcome.duration_ms,
    }
    if outcome.delivered:
        log.info("webhook delivered", extra=extra)
    else:
        log.warning("webhook attempt failed (%s): %s", state.value, outcome.error, extra=extra)
