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


class StoreUnavailable(ServiceBusy):
    """The job store (Redis, with HOPPER_BACKEND=celery) does not answer."""

    def __init__(self) -> None:
        super().__init__(
            "The job store (Redis) is not answering; nothing was kept. Try again shortly.",
            retry_after_s=5,
        )


class NotAuthenticated(HopperError):
    """No key, or one that is unknown or revoked."""

    status_code = 401
    headers = {"WWW-Authenticate": 'Bearer realm="hopper"'}  # noqa: RUF012 - read-only


class Forbidden(HopperError):
    """A valid key without the scope a route needs, or a cross-origin form post."""

    status_code = 403


class LoginRequired(HopperError):
    """A page asked for without a key: the browser is sent to the login form."""

    status_code = 303

    def __init__(self, login_url: str) -> None:
        super().__init__("Log in with an API key first.")
        self.headers = {"Location": login_url}


class QuotaExceeded(HopperError):
    """A key's own limit (bytes a day, jobs at once): come back after Retry-After."""

    status_code = 429

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(max(retry_after_s, 1))}


class ClientGone(Exception):
    """The client went away mid-upload: nothing to answer, only to clean up."""
