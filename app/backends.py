"""HOPPER_BACKEND: where job records live and who runs the jobs.

`local`: records are JSON files in DATA_DIR/jobs and this process's worker pool runs the
jobs. `celery`: records live in Redis and Celery workers (`celery -A app.worker worker`)
run them; the data directory holding files and artifacts is shared by both sides.
"""

from __future__ import annotations

from app.config import Settings
from app.layout import DataDir
from app.store import JobStore, JsonJobStore


def open_store(settings: Settings) -> JobStore:
    if settings.backend == "celery":
        # Imported here: redis-py is about 19 MiB a process the local backend never needs.
        from app.redisstore import RedisJobStore, connect

        return RedisJobStore(connect(settings.redis_url), settings.queue)
    return JsonJobStore(DataDir(settings.data_dir), fsync=settings.fsync)
