"""Test helpers: a real uvicorn server in a subprocess, polling with deadlines, raw sockets."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis

from app.layout import new_job_id
from app.models import Job, JobStatus

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    timeout_s: float = 20.0,
    every_s: float = 0.02,
) -> T:
    """Poll `fetch` until `done` holds; fail with the last value seen."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            last = fetch()
            if done(last):
                return last
        time.sleep(every_s)
    raise AssertionError(f"condition not met within {timeout_s}s; last value: {last!r}")


@dataclass
class Backend:
    """The backend the integration tests run against: set by the `backend` fixture."""

    name: str = "local"
    redis_url: str = ""


BACKEND = Backend()


@dataclass
class Server:
    """`uvicorn app.main:app` on a free loopback port with its own data dir; with the
    celery backend, also a Celery worker (`celery -A app.worker worker`) of its own."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    http: str = "app.protocols:HttpToolsProtocol"  # as scripts/serve runs it
    args: list[str] = field(default_factory=list)  # more uvicorn options (e.g. --workers 4)
    port: int = field(default_factory=free_port)
    backend: str = field(default_factory=lambda: BACKEND.name)
    proc: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def queue(self) -> str:
        """One per data dir, so a restarted server (and its worker) finds its jobs."""
        return "t" + hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]

    def full_env(self) -> dict[str, str]:
        # A small free-space reserve, so the suite also passes on a nearly full CI disk.
        # A short grace period: teardown does not wait 30 s for a test's endless job.
        defaults = {"HOPPER_MIN_FREE_BYTES": str(16 << 20), "HOPPER_SHUTDOWN_GRACE": "3"}
        if self.backend == "celery":
            defaults |= {"HOPPER_BACKEND": "celery", "HOPPER_REDIS_URL": BACKEND.redis_url}
            defaults["HOPPER_QUEUE"] = self.queue
        env = {**os.environ, **defaults, **self.env}
        env["HOPPER_DATA_DIR"] = str(self.data_dir)
        return env

    def start(self) -> Server:
        env = self.full_env()
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
        cmd += ["--port", str(self.port), "--http", self.http, "--no-access-log", *self.args]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
        if self.backend == "celery" and self.worker is None:
            self.start_worker()
        wait_until(lambda: httpx.get(f"{self.url}/openapi.json", timeout=2), _ok, timeout_s=30)
        return self

    def start_worker(self) -> None:
        env = self.full_env()
        env.setdefault("HOPPER_WORKERS", "2")
        # `hopper worker` as a user runs it (celery -A app.worker worker -Q <queue> -c N),
        # without the cluster chatter that only slows a worker's start.
        cmd = [str(Path(sys.executable).parent / "hopper"), "worker"]
        cmd += ["-n", f"{self.queue}-{free_port()}@127.0.0.1"]
        cmd += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        log_path = self.data_dir.parent / f"worker-{self.port}.log"
        with log_path.open("ab") as log:
            self.worker = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True
            )

    def stop_worker(self, sig: int = signal.SIGTERM) -> None:
        """A warm shutdown (running jobs finish, briefly), then the whole process group."""
        if self.worker is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.worker.pid, sig)
        try:
            self.worker.wait(8)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.worker.pid, signal.SIGKILL)
            self.worker.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.worker.pid, signal.SIGKILL)  # children a killed master left
        self.worker = None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        self.stop_worker(sig)  # with SIGKILL: as if the machine died, workers and all

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def status(self, job_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/status/{job_id}", timeout=10)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_finished(self, job_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        return wait_until(
            lambda: self.status(job_id),
            lambda j: j["status"] in ("done", "failed", "cancelled"),
            timeout_s=timeout_s,
        )

    def leftovers(self) -> list[str]:
        """Anything in the data dir that is not a recorded job's record, file or artifact,
        or an unfinished resumable upload's record and file."""
        jobs = set(self.job_ids())
        jobs |= {p.stem for p in (self.data_dir / "partials").glob("*.json")}
        found = [p for p in self.data_dir.rglob("*") if p.is_file()]
        return [str(f) for f in found if not _belongs_to_a_job(f, self.data_dir, jobs)]

    def worker_log(self) -> str:
        """What the Celery workers of this server wrote (celery backend), else ''."""
        logs = sorted(self.data_dir.parent.glob("worker-*.log"))
        return "".join(p.read_text(errors="replace") for p in logs)

    def record(self, job_id: str) -> dict[str, Any]:
        """The stored job document, read where the backend keeps it, not over HTTP."""
        if self.backend == "celery":
            raw = redis.Redis.from_url(BACKEND.redis_url).get(f"{self.queue}:job:{job_id}")
            assert isinstance(raw, bytes), f"no record of {job_id}"
        else:
            raw = (self.data_dir / "jobs" / f"{job_id}.json").read_bytes()
        record: dict[str, Any] = json.loads(raw)
        return record

    def set_record(self, job_id: str, raw: str | None) -> None:
        """Overwrite (or, with None, remove) a stored record behind the server's back."""
        if self.backend == "celery":
            client = redis.Redis.from_url(BACKEND.redis_url)
            key = f"{self.queue}:job:{job_id}"
            client.delete(key) if raw is None else client.set(key, raw)
            return
        path = self.data_dir / "jobs" / f"{job_id}.json"
        path.unlink() if raw is None else path.write_text(raw)

    def job_ids(self) -> list[str]:
        """Every job with a record, wherever the backend keeps them."""
        if self.backend == "celery":
            client = redis.Redis.from_url(BACKEND.redis_url)
            keys: list[bytes] = client.keys(f"{self.queue}:job:*")  # type: ignore[assignment]
            return [key.decode().rsplit(":", 1)[1] for key in keys]
        return [p.stem for p in (self.data_dir / "jobs").glob("*.json")]

    def stored_files(self) -> list[Path]:
        return sorted((self.data_dir / "files").iterdir())


def _belongs_to_a_job(path: Path, root: Path, jobs: set[str]) -> bool:
    folder, *rest = path.relative_to(root).parts
    if folder in ("jobs", "partials"):
        return path.suffix == ".json" and path.stem in jobs
    if folder in ("files", "artifacts", "stops"):  # stops/<id>: a running job asked to stop
        return rest[0] in jobs
    if folder in ("keys", "digests"):  # an idempotency key, a dedupe entry: names its job
        try:
            return path.read_text() in jobs
        except FileNotFoundError:
            return True  # swept between the listing and the read: not left over
    if folder == "usage":  # HOPPER_AUTH=keys: each key's quota usage
        return True
    return folder in ("sweeper.lock", "watch.lock", "apikeys.json", ".apikeys.json.lock")


def _ok(response: httpx.Response) -> bool:
    return response.status_code == 200


@contextlib.contextmanager
def running(data_dir: Path, **env: str) -> Iterator[Server]:
    server = Server(data_dir=data_dir, env=env).start()
    try:
        yield server
    finally:
        server.stop()


def curl_upload(url: str, path: Path, *extra: str) -> tuple[int, dict[str, str], Any]:
    """`curl -F file=@path` as a user runs it; returns status, headers, JSON body."""
    cmd = ["curl", "-sS", "--noproxy", "*", "-D", "-", "-F", f"file=@{path}", *extra, url]
    out = subprocess.run(cmd, capture_output=True, check=True, timeout=120).stdout
    return _parse_http(out)


def curl_put(url: str, path: Path, *extra: str) -> tuple[int, dict[str, str], Any]:
    """`curl -T path` as a user runs it (a PUT of the file as the body)."""
    cmd = ["curl", "-sS", "--noproxy", "*", "-D", "-", "-T", str(path), *extra, url]
    out = subprocess.run(cmd, capture_output=True, check=True, timeout=120).stdout
    return _parse_http(out)


def _parse_http(out: bytes) -> tuple[int, dict[str, str], Any]:
    # Skip interim responses (100 Continue) to the final one.
    while out.startswith(b"HTTP/1.1 100"):
        out = out.split(b"\r\n\r\n", 1)[1]
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    parsed = json.loads(body) if body and "json" in headers.get("content-type", "") else body
    return status, headers, parsed


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


BOUNDARY = "XyZb0undary"


def file_part(
    name: str = "file",
    filename: str | bytes = "a.txt",
    data: bytes = b"hello",
    ctype: str = "text/plain",
) -> tuple[list[bytes], bytes]:
    fn = filename if isinstance(filename, bytes) else filename.encode()
    disposition = b'Content-Disposition: form-data; name="' + name.encode() + b'"; filename="'
    return ([disposition + fn + b'"', f"Content-Type: {ctype}".encode()], data)


def text_part(name: str, value: bytes) -> tuple[list[bytes], bytes]:
    return ([b'Content-Disposition: form-data; name="' + name.encode() + b'"'], value)


def multipart(
    parts: list[tuple[list[bytes], bytes]], boundary: str = BOUNDARY, close: bool = True
) -> bytes:
    out = b""
    for headers, body in parts:
        out += b"--" + boundary.encode() + b"\r\n"
        for header in headers:
            out += header + b"\r\n"
        out += b"\r\n" + body + b"\r\n"
    return out + (b"--" + boundary.encode() + b"--\r\n" if close else b"")


def raw_request(
    port: int,
    body: bytes | None,
    *,
    ctype: str | None = f"multipart/form-data; boundary={BOUNDARY}",
    path: str = "/uploads",
    method: str = "POST",
    extra: bytes = b"",
    content_length: int | None = None,
    chunks: list[bytes] | None = None,
    timeout_s: float = 10.0,
) -> tuple[int, bytes]:
    """Send a hand-made HTTP/1.1 request; return the status code (0 if none) and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        head = f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode()
        if ctype is not None:
            head += b"Content-Type: " + ctype.encode("latin-1") + b"\r\n"
        if content_length is None and body is not None and chunks is None:
            content_length = len(body)
        if content_length is not None:
            head += f"Content-Length: {content_length}\r\n".encode()
        s.sendall(head + extra + b"Connection: close\r\n\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for piece in chunks if chunks is not None else ([body] if body else []):
                s.sendall(piece)
        data = b""
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while piece := s.recv(65536):
                data += piece
    if not data.startswith(b"HTTP/1.1 "):
        return 0, data
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[-1]


def make_job(status: JobStatus = JobStatus.QUEUED, attempts: int = 0) -> Job:
    """A job record for store-level tests."""
    return Job(
        id=new_job_id(),
        filename="a.txt",
        size=1,
        sha256="0" * 64,
        content_type="text/plain",
        processors=["auto"],
        status=status,
        attempts=attempts,
    )
