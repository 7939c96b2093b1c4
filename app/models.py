"""The job document: what /status/<id> returns and what the store keeps, one per job."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

SCHEMA_VERSION = 1


class JobStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


class ErrorCode(StrEnum):
    INVALID_INPUT = "invalid_input"
    UNSUPPORTED = "unsupported"
    TIMEOUT = "timeout"
    MEMORY = "memory"
    CRASHED = "crashed"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"
    INTERNAL = "internal"


class JobError(BaseModel):
    code: ErrorCode
    message: str = Field(description="What happened, in words a person understands.")


class Warning(BaseModel):
    processor: str
    message: str


class Artifact(BaseModel):
    name: str
    content_type: str
    size: int
    url: str


def utc_now() -> datetime:
    return datetime.now(UTC)


class WebhookState(StrEnum):
    PENDING = "pending"  # a delivery round is due or under way
    DELIVERED = "delivered"
    FAILED = "failed"  # HOPPER_WEBHOOK_MAX_ATTEMPTS in a row failed


class WebhookAttempt(BaseModel):
    round: int = Field(description="1 for the first delivery, 2 after the first redeliver, ...")
    at: datetime = Field(description="When the attempt started.")
    status: int | None = Field(description="The receiver's HTTP status; null if none came.")
    error: str | None = Field(description="Why the attempt failed; null if it succeeded.")
    duration_ms: int


class Webhook(BaseModel):
    """The completion webhook of a job uploaded with callback_url."""

    state: WebhookState = WebhookState.PENDING
    url: str
    round: int = Field(default=1, description="Delivery rounds started (1 + redeliveries).")
    attempts: list[WebhookAttempt] = Field(default_factory=list)


class Job(BaseModel):
    """One upload and the work done on it."""

    schema_version: int = SCHEMA_VERSION
    id: str = Field(description="Random, 128 bits, URL-safe.")
    # Early in the record, so /status finds it in the first bytes without parsing.
    owner: str | None = Field(
        default=None, description="Id of the API key that made the job (HOPPER_AUTH=keys)."
    )
    status: JobStatus = JobStatus.QUEUED
    progress: float = Field(default=0.0, ge=0.0, le=1.0)
    filename: str = Field(description="The client's file name, sanitised, for display only.")
    size: int = Field(description="Bytes stored.")
    sha256: str = Field(description="SHA-256 of the bytes stored, hex.")
    content_type: str = Field(description="As the client declared it.")
    detected_type: str | None = Field(default=None, description="MIME type found from the bytes.")
    processors: list[str] = Field(description="The pipeline; 'auto' is expanded when the job runs.")
    created_at: datetime = Field(default_factory=utc_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = Field(
        default=None, description="When a finished job is deleted (HOPPER_RETENTION)."
    )
    attempts: int = Field(default=0, description="How many times the job was started.")
    result: dict[str, Any] | None = Field(
        default=None, description="When done: one key per processor."
    )
    error: JobError | None = Field(default=None, description="When failed.")
    warnings: list[Warning] = Field(default_factory=list)
    artifacts: list[Artifact] = Field(default_factory=list)
    versions: dict[str, str] = Field(
        default_factory=dict, description="Hopper's version and each processor's, as run."
    )
    webhook: Webhook | None = Field(
        default=None, description="The completion webhook's deliveries (callback_url)."
    )
    duplicate_of: str | None = Field(
        default=None,
        description="HOPPER_DEDUPE: the job whose results these are (same bytes, processors "
        "and owner); this job's processors did not run. It may have been deleted since.",
    )


class ErrorBody(BaseModel):
    detail: str
