"""Settings: every knob is a HOPPER_-prefixed environment variable, listed in the README."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GIB = 1024**3
_ORIGIN_RE = re.compile(r"https?://[^\s/?#]+")  # what a browser sends in Origin
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _duration_s(value: object) -> object:
    """'7d', '12h', '30m', '45s' or plain seconds; '' or 0 for none."""
    if isinstance(value, str):
        text = value.strip().lower()
        if not text:
            return 0
        if text[-1] in _UNIT_S:
            return float(text[:-1]) * _UNIT_S[text[-1]]
    return value


Duration = Annotated[float, BeforeValidator(_duration_s)]


def _unset_if_empty(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


def split_list(value: str) -> list[str]:
    """A comma-separated setting's entries, blanks dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HOPPER_", extra="ignore")

    data_dir: Path = Field(default=Path("./data"), description="Where files and job records live.")
    max_upload_bytes: int = Field(default=GIB, gt=0, description="Largest file accepted.")
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        gt=0,
        description="Job workers per server process.",
    )
    fsync: bool = Field(
        default=False,
        description="fsync file, record and folder before the 202 (survives power loss).",
    )
    default_processors: str = Field(
        default="auto", description="Pipeline used when an upload names no processors."
    )
    job_timeout: float = Field(
        default=600.0, gt=0, description="Seconds a job may run before it is stopped."
    )
    job_memory_bytes: int = Field(
        default=2 * GIB,
        ge=0,
        description="Address-space limit of each job worker process; 0 for none.",
    )
    max_queue: int = Field(
        default=1000,
        gt=0,
        description="Jobs queued or running per process (celery: in the whole deployment) "
        "before uploads get 503.",
    )
    min_free_bytes: int = Field(
        default=256 * 1024**2, ge=0, description="Free space kept on the data disk; below it, 507."
    )
    max_concurrent_uploads: int = Field(
        default=64, gt=0, description="Uploads streaming at once per process; more get 503."
    )
    max_retries: int = Field(
        default=2, ge=0, description="Retries of a job whose processor reports a transient error."
    )

    backend: Literal["local", "celery"] = Field(
        default="local",
        description="'local': jobs run in this process's worker pool, records in DATA_DIR; "
        "'celery': jobs go to Celery workers, records live in Redis.",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="With HOPPER_BACKEND=celery: the Redis that is broker and job store.",
    )
    queue: str = Field(
        default="hopper",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="With HOPPER_BACKEND=celery: the Celery queue, and the prefix of every "
        "Redis key (several deployments can share one Redis).",
    )

    header_timeout: float = Field(
        default=10.0,
        ge=0,
        description="Seconds a request's headers may take to arrive (with app.protocols); 0: none.",
    )
    max_header_bytes: int = Field(
        default=64 * 1024, gt=0, description="Largest request head (with app.protocols); more, 431."
    )
    body_idle_timeout: float = Field(
        default=30.0,
        ge=0,
        description="Seconds an upload's body may send nothing before it is closed; 0: none.",
    )

    log_format: Literal["json", "text"] = Field(
        default="json", description="Log lines as JSON objects, or as text for a terminal."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="The least severe log lines written."
    )

    shutdown_grace: float = Field(
        default=30.0,
        ge=0,
        description="Seconds uploads and running jobs get to finish after SIGTERM.",
    )
    retention: Duration = Field(
        default=0.0,
        ge=0,
        description="Finished jobs are deleted this long after they end (e.g. 7d); 0 keeps them.",
    )
    tus_expiry: Duration = Field(
        default=86400.0,
        gt=0,
        description="An unfinished resumable (tus) upload is deleted this long after its "
        "last PATCH (e.g. 24h).",
    )
    sweep_interval: float = Field(
        default=60.0, gt=0, description="Seconds between sweeps for expired jobs and leftovers."
    )
    dedupe: bool = Field(
        default=False,
        description="An upload with the same bytes, processors and owner as a job that is "
        "done gets that job's results without running the processors again.",
    )
    auth: Literal["off", "keys"] = Field(
        default="off",
        description="'keys': every request but health, docs and login needs an API key.",
    )
    cors_origins: str = Field(
        default="",
        description="Comma-separated origins (https://app.example) whose pages may call "
        "Hopper from the browser with an API key (CORS); '*' any; empty: none.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Signs completion webhooks (HMAC-SHA256); unset: callback_url is refused.",
    )
    webhook_allowed_hosts: str = Field(
        default="",
        description="Comma-separated hosts (or host:port) webhooks may call, private ones "
        "included; empty: any public host.",
    )
    webhook_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a whole webhook attempt may take, however slowly its receiver "
        "answers.",
    )
    webhook_max_attempts: int = Field(
        default=6, gt=0, description="Attempts per delivery round before the webhook is failed."
    )
    webhook_backoff: float = Field(
        default=1.0, gt=0, description="Seconds before a webhook's first retry; doubles each time."
    )

    watch_dir: Annotated[Path | None, BeforeValidator(_unset_if_empty)] = Field(
        default=None,
        description="A folder whose files become jobs (README, 'Watch folder'); unset: none.",
    )
    watch_settle: float = Field(
        default=2.0,
        gt=0,
        description="Seconds a file in the watch folder must stay unchanged before it is taken.",
    )
    watch_processors: str = Field(
        default="",
        description="Pipeline for files from the watch folder; empty: HOPPER_DEFAULT_PROCESSORS.",
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in split_list(value):
            if origin != "*" and not _ORIGIN_RE.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: write scheme://host[:port], with no path "
                    "or trailing slash (e.g. https://app.example.com), or '*'."
                )
        return value

    @field_validator("data_dir", "watch_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Resolved once, so a later chdir cannot move the data directory.
        return None if value is None else value.expanduser().resolve()

    @model_validator(mode="after")
    def _watch_dir_apart(self) -> Settings:
        """The watch folder's files are taken and deleted: never the data directory's own."""
        watch = self.watch_dir
        if watch is not None and watch.is_relative_to(self.data_dir):
            raise ValueError("HOPPER_WATCH_DIR must not be HOPPER_DATA_DIR or a folder inside it.")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
