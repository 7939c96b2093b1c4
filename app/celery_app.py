"""The Celery application both sides share (HOPPER_BACKEND=celery): the API publishes
to it, `celery -A app.worker worker` consumes from it.

Delivery is at least once, with one final record: a message is acknowledged only when
its job has ended (acks_late), a worker process lost mid-job gives its message back
(reject_on_worker_lost), each worker process reserves one job at a time (prefetch 1),
and a message a dead worker machine had taken comes back once Redis's visibility
timeout passes: the job time limit plus a margin, not Kombu's default hour.
"""

from __future__ import annotations

from celery import Celery

from app.config import Settings

RUN_JOB_TASK = "hopper.run_job"
VISIBILITY_MARGIN_S = 60.0  # past the job's own limit, before its message is handed out again
HARD_LIMIT_GRACE_S = 10.0  # after the soft limit, for the job to record its timeout itself


def visibility_timeout_s(settings: Settings) -> float:
    return settings.job_timeout + HARD_LIMIT_GRACE_S + VISIBILITY_MARGIN_S


def make_celery(settings: Settings) -> Celery:
    app = Celery("hopper", broker=settings.redis_url, set_as_current=False)
    transport = {
        "visibility_timeout": visibility_timeout_s(settings),
        # Look for overdue messages every 10 s, not every 100 s (Kombu's 10 x throttle 10).
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
        # Kombu's own keys (unacked messages, bindings) under the deployment's prefix too,
        # so deployments sharing a Redis never restore each other's messages.
        "global_keyprefix": f"{settings.queue}:kombu:",
        # A half-open connection fails a publish instead of hanging it.
        "socket_timeout": 10.0,
        "socket_connect_timeout": 5.0,
    }
    app.conf.update(
        task_default_queue=settings.queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.job_timeout,  # raised in the job: `timeout`
        task_time_limit=settings.job_timeout + HARD_LIMIT_GRACE_S,  # the process is killed
        task_ignore_result=True,  # the job document is the result
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        # No task events unless asked: 3 Redis publishes a job that nobody may read.
        # Flower turns them on in the workers it watches (its enable_events, on by
        # default); `hopper worker -E` sends them from the start.
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,  # Hopper's JSON log lines, as in the API
        worker_redirect_stdouts=False,
    )
    return app
