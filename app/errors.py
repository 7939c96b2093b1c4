"""Domain errors: each carries the HTTP status and a sentence for a person."""

from __future__ import annotations


class HopperError(Exception):
    status_code = 500
    headers: dict[str, str] | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadUpload(HopperError):
    """Malformed, truncated or ambiguous multipart body; missing file part; unknown processor."""

    status_code = 400


class UnknownJob(HopperError):
    status_code = 404

    def __init__(self, job_id: str | None = None) -> None:
        super().__init__("No job with that id. Check the id you got from POST /uploads.")


class BodyStalled(HopperError):
    """The client stopped sending the body: answered, then the connection is closed."""

    status_code = 408
    headers = {"Connection": "close"}  # noqa: RUF012 - read-only class default


class UploadTooLarge(HopperError):
    status_code = 413


class UnsupportedMediaType(HopperError):
    status_code = 415


class InsufficientStorage(HopperError):
    status_code = 507


class ServiceBusy(HopperError):
    """Over a configured limit: the client should come back after Retry-After seconds."""

    status_code = 503

    def __init__(self, detail: str, retry_after_s: int = 5) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after_s)}


class ClientGone(Exception):
    """The client went away mid-upload: nothing to answer, only to clean up."""
