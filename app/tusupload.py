"""The client's tus uploads to Hopper's /files/: a new upload, or the one an earlier run
left unfinished (app.resumes), sent from the server's offset; after a dropped connection,
sent on from the offset the server then has (RESUME_ATTEMPTS times, with backoff)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.resumes import ResumeKey, Resumes
from app.transfer import ApiError, Progress, body, content_type, raise_for

RESUME_ATTEMPTS = 8
RESUME_BACKOFF_S = 0.25  # doubled for each next attempt, at most 10 s
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"
Resumed = Callable[[int], None]  # told the offset an upload goes on from


class _AskAgain(Exception):
    """The server has the upload, but not at the offset sent (409) or another PATCH of it
    still runs (423: an earlier run's, until the server notices it is gone)."""


@dataclass
class TusUpload:
    http: httpx.Client
    path: Path
    size: int
    on_progress: Progress
    on_resumed: Resumed
    location: str = ""
    sent: int = 0  # bytes reported to on_progress
    resumed: bool = False  # sent in more than one go: an earlier run's, or a dropped one

    def run(self, processors: str | None, resumes: Resumes | None) -> str:
        """Send the file; the upload's id, which is its job's. The upload is in `resumes`
        from its creation until its last byte is in, so that a killed run leaves it
        there for the next one."""
        key = ResumeKey.of(str(self.http.base_url), self.path, processors)
        offset = self._take_up(resumes.find(key) if resumes else None)
        if offset is None:
            self.location, offset = self._create(processors), 0
            if resumes:
                resumes.remember(key, self.location)
        else:
            self._resumed(offset)
        self._send_from(offset)
        if resumes:
            resumes.forget(key)
        return self.location.rstrip("/").rsplit("/", 1)[1]

    def _take_up(self, location: str | None) -> int | None:
        """The server's offset of an earlier run's upload; None if there is nothing to go
        on with: gone (404), expired (410), or not of this file's length."""
        if location is None:
            return None
        response = self._request("HEAD", location)
        if response.status_code in (404, 410):
            return None
        raise_for(response)
        try:
            offset = int(response.headers["upload-offset"])
            length = int(response.headers["upload-length"])
        except (KeyError, ValueError):
            return None
        if length != self.size or not 0 <= offset <= length:
            return None
        self.location = location
        return offset

    def _create(self, processors: str | None) -> str:
        meta = {"filename": self.path.name, "filetype": content_type(self.path)}
        if processors:
            meta["processors"] = processors
        encoded = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta.items())
        headers = {**TUS, "Upload-Length": str(self.size), "Upload-Metadata": encoded}
        response = self._request("POST", "/files/", headers=headers)
        raise_for(response)
        return response.headers["location"]

    def _send_from(self, offset: int) -> None:
        failure: Exception | None = None
        for attempt in range(RESUME_ATTEMPTS + 1):
            try:
                if attempt:  # ask where it stands, then send the rest from there
                    offset = self._offset()
                    self._resumed(offset)
                self._count(offset - self.sent)
                while offset < self.size:
                    offset = self._patch(offset)
                return
            except (httpx.TransportError, _AskAgain) as exc:
                failure = exc
                time.sleep(min(RESUME_BACKOFF_S * 2**attempt, 10.0))
        raise ApiError(f"The upload of {self.path} kept failing ({failure}); gave up.")

    def _patch(self, offset: int) -> int:
        headers = {**TUS, "Upload-Offset": str(offset), "Content-Type": OCTETS}
        headers["Content-Length"] = str(self.size - offset)
        content = body(self.path, offset, self.size, None, self._count)
        response = self.http.patch(self.location, headers=headers, content=content)
        if response.status_code in (409, 423):
            raise _AskAgain(f"{response.status_code} {response.reason_phrase}")
        raise_for(response)
        return int(response.headers["upload-offset"])

    def _offset(self) -> int:
        response = self.http.head(self.location, headers=TUS)
        raise_for(response)
        return int(response.headers["upload-offset"])

    def _resumed(self, offset: int) -> None:
        self.resumed = True
        self.on_resumed(offset)

    def _count(self, n: int) -> None:
        self.sent += n
        self.on_progress(n)

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, url, **{"headers": TUS, **kwargs})
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise ApiError(f"Cannot reach Hopper at {self.http.base_url}: {reason}.") from exc
