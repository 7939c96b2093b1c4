"""A client of Hopper's HTTP API for the `hopper` command: uploads streamed from disk, job
documents, following jobs to their end, downloads. Plain httpx; it prints nothing."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import mimetypes
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
CHUNK_BYTES = 1024 * 1024  # read from disk and sent a MiB at a time: memory stays flat
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 300.0  # the answer to an upload comes once the whole file is stored
STREAM_READ_TIMEOUT_S = 30.0  # an event stream sends a keep-alive every 15 s
RECONNECT_S = 0.5
RESUMABLE_MIN_BYTES = 64 * 1024 * 1024  # from this size on, tus where the server has it
RESUME_ATTEMPTS = 8
RESUME_BACKOFF_S = 0.25  # doubled for each next attempt, at most 10 s
TUS = {"Tus-Resumable": "1.0.0"}
FINISHED = frozenset({"done", "failed", "cancelled"})
MAX_IDS_PER_STREAM = 100

Job = dict[str, Any]
Progress = Callable[[int], None]  # bytes sent since the last call


class ApiError(Exception):
    """The server refused, or could not be reached: the message says which and why."""


class TimedOut(Exception):
    """The jobs were not finished by the deadline."""


def is_finished(job: Job) -> bool:
    return job.get("status") in FINISHED


@dataclass
class Client:
    url: str = DEFAULT_URL
    key: str | None = None
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        self.http = httpx.Client(base_url=self.url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def upload(self, path: Path, processors: str | None, on_progress: Progress) -> Job:
        """Send one file and return its job document (queued).

        The one place that picks how a file travels: streamed from disk as the body of
        PUT /uploads/raw, or, from RESUMABLE_MIN_BYTES on and where the server speaks tus
        (/files/), as a tus upload that resumes where it stopped if the connection drops.
        """
        size = path.stat().st_size
        if size >= RESUMABLE_MIN_BYTES and self._speaks_tus():
            return self._upload_tus(path, size, processors, on_progress)
        return self._upload_raw(path, processors, on_progress)

    def _speaks_tus(self) -> bool:
        try:
            response = self.http.options("/files/", headers=TUS)
        except httpx.HTTPError:
            return False
        return "1.0.0" in response.headers.get("tus-version", "").split(",")

    def _upload_tus(
        self, path: Path, size: int, processors: str | None, on_progress: Progress
    ) -> Job:
        location = self._create_tus(path, size, processors)
        sent = 0  # bytes reported to on_progress

        def count(n: int) -> None:
            nonlocal sent
            sent += n
            on_progress(n)

        offset, failure = 0, None
        for attempt in range(RESUME_ATTEMPTS + 1):
            try:
                if attempt:  # dropped: ask where it stands, then send the rest from there
                    offset = self._tus_offset(location)
                    count(offset - sent)
                while offset < size:
                    offset = self._tus_patch(location, path, offset, size, count)
                break
            except httpx.TransportError as exc:
                failure = exc
                time.sleep(min(RESUME_BACKOFF_S * 2**attempt, 10.0))
        else:
            raise ApiError(f"The upload of {path} kept failing ({failure}); gave up.")
        job = self.status(location.rstrip("/").rsplit("/", 1)[1])  # the upload's id is the job's
        if job.get("sha256") != _sha256_file(path):
            self.delete(str(job["id"]))
            raise ApiError(f"{path} changed while it was uploaded; its job was deleted.")
        return job

    def _create_tus(self, path: Path, size: int, processors: str | None) -> str:
        meta = {"filename": path.name, "filetype": _content_type(path)}
        if processors:
            meta["processors"] = processors
        encoded = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta.items())
        headers = {**TUS, "Upload-Length": str(size), "Upload-Metadata": encoded}
        return self._send("POST", "/files/", headers=headers).headers["location"]

    def _tus_patch(
        self, location: str, path: Path, offset: int, size: int, on_progress: Progress
    ) -> int:
        headers = {**TUS, "Upload-Offset": str(offset), "Content-Length": str(size - offset)}
        headers["Content-Type"] = "application/offset+octet-stream"
        body = _chunks(path, None, on_progress, start=offset)
        response = self.http.patch(location, headers=headers, content=body)
        _raise_for(response)
        return int(response.headers["upload-offset"])

    def _tus_offset(self, location: str) -> int:
        response = self.http.head(location, headers=TUS)
        _raise_for(response)
        return int(response.headers["upload-offset"])

    def _upload_raw(self, path: Path, processors: str | None, on_progress: Progress) -> Job:
        size = path.stat().st_size
        digest = hashlib.sha256()
        params = {"filename": path.name, **({"processors": processors} if processors else {})}
        headers = {"Content-Length": str(size), "Content-Type": _content_type(path)}
        body = _chunks(path, digest, on_progress)
        job = self._json(
            self._send("PUT", "/uploads/raw", params=params, headers=headers, content=body)
        )
        if job.get("sha256") != digest.hexdigest():  # the file changed while it was read
            self.delete(str(job["id"]))
            raise ApiError(f"{path} changed while it was uploaded; its job was deleted.")
        return job

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
                _raise_for(response)
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
                    _raise_for(r)
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
        _raise_for(response)
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


def _chunks(path: Path, digest: Any, on_progress: Progress, start: int = 0) -> Iterator[bytes]:
    with path.open("rb") as f:
        f.seek(start)
        while chunk := f.read(CHUNK_BYTES):
            if digest is not None:
                digest.update(chunk)
            yield chunk
            on_progress(len(chunk))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _content_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"  # as curl -F does


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        detail = str(response.json()["detail"])
    except (ValueError, KeyError, TypeError):
        detail = response.reason_phrase or "no reason given"
    raise ApiError(f"{response.status_code}: {detail}")


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
