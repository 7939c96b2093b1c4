"""A client of Hopper's HTTP API for the `hopper` command: uploads streamed from disk, job
documents, following jobs to their end, downloads. Plain httpx; it prints nothing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from app.resumes import Resumes
from app.transfer import (
    CHUNK_BYTES,
    ApiError,
    Identity,
    Progress,
    body,
    content_type,
    raise_for,
    sha256_file,
)
from app.tusupload import TUS, Resumed, TusUpload

__all__ = ["ApiError", "Client", "Job", "Progress", "TimedOut"]

DEFAULT_URL = "http://127.0.0.1:8000"
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 300.0  # the answer to an upload comes once the whole file is stored
STREAM_READ_TIMEOUT_S = 30.0  # an event stream sends a keep-alive every 15 s
RECONNECT_S = 0.5
RESUMABLE_MIN_BYTES = 64 * 1024 * 1024  # from this size on, tus where the server has it
FINISHED = frozenset({"done", "failed", "cancelled"})
MAX_IDS_PER_STREAM = 100

Job = dict[str, Any]


class TimedOut(Exception):
    """The jobs were not finished by the deadline."""


def is_finished(job: Job) -> bool:
    return job.get("status") in FINISHED


@dataclass
class Client:
    url: str = DEFAULT_URL
    key: str | None = None
    resumes: Resumes | None = None  # where unfinished tus uploads are kept between runs
    resumable_min_bytes: int = RESUMABLE_MIN_BYTES
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        self.http = httpx.Client(
            base_url=self.url.rstrip("/"), headers=headers, timeout=timeout, verify=_tls(self.url)
        )

    def close(self) -> None:
        self.http.close()

    def upload(
        self,
        path: Path,
        processors: str | None,
        on_progress: Progress,
        on_resumed: Resumed | None = None,
    ) -> Job:
        """Send one file and return its job document (queued).

        The one place that picks how a file travels: streamed from disk as the body of
        PUT /uploads/raw, or, from `resumable_min_bytes` on and where the server speaks
        tus (/files/), as a tus upload that resumes where it stopped if the connection
        drops, or if this run is killed and the next one (with `resumes`) takes it up.

        Then two checks, and the job is deleted if either fails: the file is the same
        (Identity) as before it was read, and the job's SHA-256 is that of the bytes
        sent (a PUT) or of the file (a tus upload sent in more than one go, whose bytes
        the server put together). A tus upload sent in one go is not hashed here: its
        bytes went over one connection, which TCP checksums, and on a machine that also
        runs the server that hash cost a fifth of the upload's speed (docs/performance.md).
        """
        before = Identity.of(path)
        if before.size >= self.resumable_min_bytes and self._speaks_tus():
            tus = TusUpload(self.http, path, before.size, on_progress, on_resumed or _quiet)
            job = self.status(tus.run(processors, self.resumes))
            expected = sha256_file(path) if tus.resumed else job.get("sha256")
        else:
            digest = hashlib.sha256()
            job = self._upload_raw(path, before.size, processors, digest, on_progress)
            expected = digest.hexdigest()
        if Identity.of(path) != before:
            self.delete(str(job["id"]))
            raise ApiError(f"{path} changed while it was uploaded; its job was deleted.")
        if job.get("sha256") != expected:
            self.delete(str(job["id"]))
            raise ApiError(
                f"The server's SHA-256 of {path} is not the file's: the bytes did not arrive "
                "as sent; its job was deleted."
            )
        return job

    def _speaks_tus(self) -> bool:
        try:
            response = self.http.options("/files/", headers=TUS)
        except httpx.HTTPError:
            return False
        return "1.0.0" in response.headers.get("tus-version", "").split(",")

    def _upload_raw(
        self,
        path: Path,
        size: int,
        processors: str | None,
        digest: Any,
        on_progress: Progress,
    ) -> Job:
        params = {"filename": path.name, **({"processors": processors} if processors else {})}
        headers = {"Content-Length": str(size), "Content-Type": content_type(path)}
        content = body(path, 0, size, digest, on_progress)
        response = self._send(
            "PUT", "/uploads/raw", params=params, headers=headers, content=content
        )
        return self._json(response)

    def status(self, job_id: str) -> Job:
        return self._json(self._send("GET", f"/status/{quote(job_id, safe='')}"))

    def jobs(self, page: int) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        return self._json(self._send("GET", "/jobs", params={"page": page}, headers=headers))

    def delete(self, job_id: str) -> bool:
        """True: deleted; False: a running job, deleted once it stops."""
        return self._send("DELETE", f"/jobs/{quote(job_id, safe='')}").status_code == 204

    def follow(self, ids: list[str], timeout_s: float | None = None) -> Iterator[Job]:
        """Each change of the jobs' documents until all are finished: their event stream,
        or polls (with the server's Retry-After) where streams are not available."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        pending = list(dict.fromkeys(ids))
        streams = True
        while pending:
            _check_deadline(deadline)
            batch = pending[:MAX_IDS_PER_STREAM]
            try:
                updates = self._events(batch, deadline) if streams else self._poll(batch, deadline)
                for job in updates:
                    yield job
                    if is_finished(job):
                        pending.remove(job["id"])
            except _NoStream:
                streams = False
            if pending and streams:
                time.sleep(RECONNECT_S)  # the stream ended early (a restart): not in a spin

    def download(self, job: Job, folder: Path) -> list[Path]:
        """The job document (job.json) and each artifact, into `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        written = [folder / "job.json"]
        written[0].write_text(json.dumps(job, indent=2, ensure_ascii=False) + "\n")
        for artifact in job.get("artifacts") or []:
            name = Path(str(artifact["name"])).name
            if name in ("", ".", "..", "job.json"):
                raise ApiError(f"The server named an artifact {artifact['name']!r}; not saved.")
            with self.http.stream("GET", str(artifact["url"])) as response:
                raise_for(response)
                with (folder / name).open("wb") as out:
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        out.write(chunk)
            written.append(folder / name)
        return written

    def _events(self, ids: list[str], deadline: float | None) -> Iterator[Job]:
        read_s = STREAM_READ_TIMEOUT_S
        if deadline is not None:
            read_s = max(min(read_s, deadline - time.monotonic()), 0.05)
        timeout = httpx.Timeout(read_s, connect=CONNECT_TIMEOUT_S)
        params = {"ids": ",".join(ids)}
        try:
            with self.http.stream("GET", "/status/events", params=params, timeout=timeout) as r:
                if r.status_code != 200:
                    r.read()
                    raise_for(r)
                    raise _NoStream  # a 2xx or 3xx that is not a stream: a proxy in the way
                for event, data in _sse(r.iter_lines()):
                    yield _job_event(event, data)
                    _check_deadline(deadline)
        except httpx.ReadTimeout:
            _check_deadline(deadline)  # silent past the deadline; otherwise reconnect
        except httpx.TransportError as exc:
            if isinstance(exc, httpx.ConnectError):
                raise ApiError(f"Cannot reach Hopper at {self.url}: {exc}.") from exc
            raise _NoStream from exc  # cut off mid-stream: polls are sturdier

    def _poll(self, ids: list[str], deadline: float | None) -> Iterator[Job]:
        last: dict[str, Job] = {}
        while True:
            wait_s = 1.0
            for job_id in ids:
                response = self._send("GET", f"/status/{quote(job_id, safe='')}")
                job = self._json(response)
                if last.get(job_id) != job:
                    last[job_id] = job
                    yield job
                with contextlib.suppress(ValueError):
                    wait_s = min(wait_s, float(response.headers.get("retry-after", "1")))
            if all(is_finished(job) for job in last.values()):
                return
            _check_deadline(deadline)
            if deadline is not None:
                wait_s = min(wait_s, max(deadline - time.monotonic(), 0.0))
            time.sleep(max(wait_s, 0.05))  # the server's Retry-After paces the polls

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise ApiError(f"Cannot reach Hopper at {self.url}: {reason}.") from exc
        raise_for(response)
        return response

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ApiError(f"{self.url} answered something that is not a JSON object.")
        return body


class _NoStream(Exception):
    """The server (or a proxy) does not give event streams: poll instead."""


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise TimedOut


def _sse(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) of each Server-Sent Event."""
    event, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def _job_event(event: str, data: str) -> Job:
    body = json.loads(data)
    if event == "missing":
        raise ApiError(f"404: No job with id {body.get('id')!r} (or not one this key sees).")
    job: Job = body
    return job


def _quiet(offset: int) -> None:
    """No one to tell that an upload resumes."""


def _tls(url: str) -> ssl.SSLContext | bool:
    """httpx loads its CA bundle when a client is made (80 ms of each command's start-up),
    which a plain-HTTP server never needs. A context without CAs still verifies: were it
    ever used (an https proxy), it would refuse the peer, not trust it."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT) if url.lower().startswith("http://") else True
