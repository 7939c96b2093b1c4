"""Scaling out: CPU-heavy jobs per second with 1 and 2 worker processes, local vs Celery.

    .venv/bin/python bench/scaling.py [--rounds 3] [--jobs 32] [--mib 2] [--hash-rounds 32]

Starts its own redis-server (a free loopback port, a temp folder, no persistence), then,
every round, each configuration once, the order reversed on odd rounds so that machine
noise falls on all alike: `celery1`, `celery2` (HOPPER_BACKEND=celery, the API as
scripts/serve starts it plus `celery -A app.worker worker -c N`) and `local1`, `local2`
(HOPPER_BACKEND=local, HOPPER_WORKERS=N). Every run has a fresh API, worker, data dir
and queue, and first runs one tiny job per worker process so that every process is up.

Workload: --jobs uploads of the same --mib random file with processors=checksums
(MD5, SHA-1, SHA-512 and BLAKE2b over the bytes) run --hash-rounds times over the file
(HASH_ROUNDS): about 0.3 s of CPU per job at the defaults. All jobs are uploaded first,
one after the other. Meanwhile a poller sends GET /status for the oldest unfinished job
(so, mostly a running one) every --poll-ms and times each answer.

Per run: jobs/s from the first upload's start to the last job's finished_at (e2e) and from
the first started_at to the last finished_at (processing window), status latency
p50/p99/max over that window, and CPU seconds of every process started here, read from
/proc (API, job worker processes, Celery's main process, Redis), with the machine's busy
cores (other tenants included). Each run prints one JSON line (also appended to --out);
the end prints Markdown tables for docs/performance.md: median (min-max) per
configuration, and ratios taken per round (2 vs 1 worker, Celery vs local).

Figures and helpers come from ../shared/bench where they fit (percentiles, the
median (min-max) format, machine ticks and session members from its bench/run.py).
Every wait is bounded (--max-seconds for the whole run); every process started here is
stopped, and every temp folder removed, also on error or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import importlib.util
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.pool_worker import WORKER_NICENESS
from app.processors.checksums import ALGORITHMS, CHUNK_BYTES
from app.serving import uvicorn_argv

SHARED_RUN = ROOT.parent / "shared" / "bench" / "bench" / "run.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def _load_shared() -> ModuleType:
    """The shared harness's helpers (it is a script, not a package: loaded by path)."""
    if not SHARED_RUN.exists():
        raise SystemExit(f"{SHARED_RUN} not found: this bench reuses ../shared/bench")
    spec = importlib.util.spec_from_file_location("shared_bench_run", SHARED_RUN)
    assert spec is not None and spec.loader is not None  # noqa: S101 - a file we just found
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shared = _load_shared()


@dataclass(frozen=True)
class Config:
    name: str
    backend: str  # "local" or "celery"
    workers: int


CONFIGS = [
    Config("celery1", "celery", 1),
    Config("celery2", "celery", 2),
    Config("local1", "local", 1),
    Config("local2", "local", 2),
    Config("limit1", "limit", 1),
    Config("limit2", "limit", 2),
]
RATIOS = [  # (numerator, denominator) of the per-round ratios printed at the end
    ("celery2", "celery1"),
    ("local2", "local1"),
    ("limit2", "limit1"),
    ("celery1", "local1"),
    ("celery2", "local2"),
]


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return self.at - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise TimeoutError(f"--max-seconds reached while {what}")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---------------------------------------------------------------- processes


@dataclass
class Proc:
    """A child in its own session: stopping it stops everything it started."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, name: str, cmd: list[str], env: dict[str, str], folder: Path) -> Proc:
        log_path = folder / f"{name}.log"
        with log_path.open("wb") as out:
            popen = subprocess.Popen(  # noqa: S603 - our own commands, no shell
                cmd,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(name, popen, log_path)

    @property
    def sid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, size: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_bytes()[-size:].decode(errors="replace")
        return ""

    def stop(self) -> None:
        """SIGTERM to the session, SIGKILL to whatever is left of it after a while."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.sid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(STOP_TIMEOUT_S)
        for pid in shared.session_members(self.sid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(STOP_TIMEOUT_S)


@dataclass(frozen=True)
class ProcStat:
    pid: int
    nice: int
    cpu_s: float


def session_stats(sid: int) -> list[ProcStat]:
    """user+system CPU and niceness of every live process in a session."""
    stats = []
    for pid in shared.session_members(sid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
            stats.append(ProcStat(pid, int(fields[16]), cpu))  # field 19: nice
    return stats


def start_redis(folder: Path) -> tuple[Proc, str]:
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
    cmd += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
    proc = Proc.start("redis", cmd, dict(os.environ), folder)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = Deadline(READY_TIMEOUT_S)
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
            s.sendall(b"PING\r\n")
            if s.recv(64).startswith(b"+PONG"):
                return proc, url
        if not proc.alive() or deadline.left() <= 0:
            raise RuntimeError(f"redis-server did not start: {proc.tail()}")
        time.sleep(0.05)


# ---------------------------------------------------------------- one run


@dataclass
class Service:
    """The API (and, with Celery, its worker) of one configuration, in a fresh data dir."""

    config: Config
    folder: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    api: Proc | None = None
    worker: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, deadline: Deadline) -> None:
        cmd = uvicorn_argv("127.0.0.1", self.port, float(self.env["HOPPER_SHUTDOWN_GRACE"]), [])
        self.api = Proc.start("api", cmd, self.env, self.folder)
        if self.config.backend == "celery":
            cmd = [sys.executable, "-m", "celery", "-A", "app.worker", "worker"]
            cmd += ["-Q", self.env["HOPPER_QUEUE"], "-c", str(self.config.workers)]
            cmd += ["-n", f"{self.env['HOPPER_QUEUE']}@127.0.0.1"]
            cmd += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
            self.worker = Proc.start("worker", cmd, self.env, self.folder)
        self._wait_ready(deadline)

    def _wait_ready(self, deadline: Deadline) -> None:
        limit = Deadline(min(READY_TIMEOUT_S, deadline.left()))
        while limit.left() > 0:
            for proc in self.procs():
                if not proc.alive():
                    raise RuntimeError(f"{proc.name} exited: {proc.tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException), Http(self.port) as client:
                if client.request("GET", "/readyz")[0] == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the API was not ready in time: {self.api.tail() if self.api else ''}")

    def procs(self) -> list[Proc]:
        return [p for p in (self.api, self.worker) if p is not None]

    def stop(self) -> None:
        for proc in self.procs():
            proc.stop()


def service_env(
    config: Config, folder: Path, redis_url: str, a: argparse.Namespace
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPPER_")}
    env |= {
        "HOPPER_DATA_DIR": str(folder / "data"),
        "HOPPER_BACKEND": config.backend,
        "HOPPER_WORKERS": str(config.workers),
        "HOPPER_LOG_LEVEL": "WARNING",  # keep logging cheap: this measures jobs
        "HOPPER_MIN_FREE_BYTES": str(64 << 20),
        "HOPPER_SHUTDOWN_GRACE": "3",
        "HOPPER_REDIS_URL": redis_url,
        "HOPPER_QUEUE": f"scale-{config.name}-{os.getpid()}-{free_port()}",
        "HASH_ROUNDS": str(a.hash_rounds),
        "TMPDIR": str(folder),
        "PYTHONUNBUFFERED": "1",
    }
    return env


class Http:
    """One keep-alive loopback connection (http.client: a fraction of httpx's CPU per
    request; the bench's own CPU competes with the workers on this machine)."""

    def __init__(self, port: int, timeout_s: float = 30.0) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)

    def __enter__(self) -> Http:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.close()

    def request(
        self, method: str, path: str, body: bytes | None = None, ctype: str = ""
    ) -> tuple[int, bytes]:
        headers = {"Content-Type": ctype} if ctype else {}
        self._conn.request(method, path, body=body, headers=headers)
        response = self._conn.getresponse()
        return response.status, response.read()

    def status(self, job_id: str) -> dict[str, Any]:
        code, body = self.request("GET", f"/status/{job_id}")
        if code != 200:
            raise RuntimeError(f"GET /status answered {code}: {body[:300]!r}")
        job: dict[str, Any] = json.loads(body)
        return job


@dataclass(frozen=True)
class Upload:
    """A multipart body built once (the shared harness's), sent as is for every job."""

    body: bytes
    ctype: str

    @classmethod
    def of(cls, content: bytes) -> Upload:
        return cls(*shared.multipart_body("file", "job.bin", content))

    def send(self, client: Http) -> str:
        code, body = client.request("POST", UPLOAD_PATH, self.body, self.ctype)
        if code != 202:
            raise RuntimeError(f"upload answered {code}: {body[:300]!r}")
        job_id: str = json.loads(body)["id"]
        return job_id


UPLOAD_PATH = "/uploads?processors=checksums"
FINISHED = {"done", "failed", "cancelled"}


def wait_finished(client: Http, ids: list[str], deadline: Deadline) -> None:
    for job_id in ids:
        while client.status(job_id)["status"] not in FINISHED:
            deadline.check("waiting for the warm-up jobs")
            time.sleep(0.02)


@dataclass
class Poller:
    """GET /status of the oldest unfinished job every `every_s`; times each answer.
    Returns when every job of `ids` is finished and `uploads_done` is set."""

    port: int
    ids: list[str]  # appended to by the uploader
    uploads_done: threading.Event
    every_s: float
    deadline: Deadline
    samples: list[tuple[float, float, str]] = field(default_factory=list)  # (t, s, status)
    error: BaseException | None = None

    def run(self) -> None:
        try:
            with Http(self.port) as client:
                self._loop(client)
        except BaseException as exc:  # noqa: BLE001 - re-raised by run_batch
            self.error = exc

    def _loop(self, client: Http) -> None:
        index, tick = 0, time.monotonic()
        while not (self.uploads_done.is_set() and index >= len(self.ids)):
            self.deadline.check("polling")
            if index < len(self.ids):
                index += self._poll(client, self.ids[index])
            tick += self.every_s
            time.sleep(max(0.0, tick - time.monotonic()))

    def _poll(self, client: Http, job_id: str) -> int:
        sent, start = time.time(), time.perf_counter()
        status = client.status(job_id)["status"]
        self.samples.append((sent, time.perf_counter() - start, status))
        return 1 if status in FINISHED else 0


def timestamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def cpu_by_role(service: Service, redis: Proc) -> dict[str, float]:
    """CPU seconds so far: the API process (with its threads), job worker processes
    (the niced ones), Celery's main process, the local pool's forkserver, and Redis."""
    roles = {"api": 0.0, "jobs": 0.0, "celery_main": 0.0, "other": 0.0}
    for proc in service.procs():
        for stat in session_stats(proc.sid):
            if stat.nice > 0:
                role = "jobs"
            elif stat.pid == proc.sid:
                role = "api" if proc is service.api else "celery_main"
            else:
                role = "other"
            roles[role] += stat.cpu_s
    roles["redis"] = sum(s.cpu_s for s in session_stats(redis.sid))
    roles["bench"] = time.process_time()
    return roles


def worker_nice(service: Service) -> list[int]:
    return sorted({s.nice for p in service.procs() for s in session_stats(p.sid) if s.nice > 0})


@dataclass
class Batch:
    ids: list[str]
    first_upload: float
    uploads_s: float
    poller: Poller


def run_batch(service: Service, job: Upload, a: argparse.Namespace, deadline: Deadline) -> Batch:
    ids: list[str] = []
    done = threading.Event()
    poller = Poller(service.port, ids, done, a.poll_ms / 1000, deadline)
    thread = threading.Thread(target=poller.run, daemon=True)
    first = time.time()
    thread.start()
    try:
        with Http(service.port, timeout_s=60) as client:
            for _ in range(a.jobs):
                deadline.check("uploading")
                ids.append(job.send(client))
    finally:
        uploads_s = time.time() - first
        done.set()
        thread.join(max(1.0, deadline.left()))
    if poller.error is not None:
        raise poller.error
    if thread.is_alive():
        raise TimeoutError("the poller did not finish")
    return Batch(ids, first, uploads_s, poller)


def measure(
    service: Service, redis: Proc, content: bytes, a: argparse.Namespace, deadline: Deadline
) -> dict[str, Any]:
    with Http(service.port) as client:  # tiny jobs first, so every process is up
        warm_up = Upload.of(b"warm-up")
        warm = [warm_up.send(client) for _ in range(2 * service.config.workers)]
        wait_finished(client, warm, deadline)
    cpu0, ticks0, mono0 = cpu_by_role(service, redis), shared.cpu_ticks()[0], time.monotonic()
    batch = run_batch(service, Upload.of(content), a, deadline)
    cpu1, ticks1, wall = (
        cpu_by_role(service, redis),
        shared.cpu_ticks()[0],
        time.monotonic() - mono0,
    )
    with Http(service.port) as client:
        jobs = [client.status(job_id) for job_id in batch.ids]
    md5 = hashlib.md5(content).hexdigest()  # noqa: S324 - checked against the job's result
    figures = job_figures(jobs, batch, md5, service.config.workers)
    cpu = {role: round(cpu1[role] - cpu0[role], 3) for role in cpu1}
    figures |= {f"cpu_{role}_s": value for role, value in cpu.items()}
    busy, ours = (ticks1 - ticks0) / CLK_TCK / wall, sum(cpu.values()) / wall
    figures |= {"machine_busy_cores": round(busy, 2), "ours_cores": round(ours, 2)}
    figures["job_cores"] = round(cpu["jobs"] / figures["e2e_s"], 3)  # what the jobs got
    figures["others_cores"] = round(busy - ours, 2)  # the other tenants of this machine
    figures["busy_workers"] = round(figures.pop("_busy_s") / figures["window_s"], 2)
    figures |= {"worker_nice": worker_nice(service), "load1": round(os.getloadavg()[0], 2)}
    return figures


def job_figures(jobs: list[dict[str, Any]], batch: Batch, md5: str, workers: int) -> dict[str, Any]:
    bad = [j["id"] for j in jobs if j["status"] != "done" or j["result"]["checksums"]["md5"] != md5]
    if bad:
        raise RuntimeError(f"{len(bad)} jobs not done with the right checksum, e.g. {jobs[0]}")
    started = [timestamp(j["started_at"]) for j in jobs]
    finished = [timestamp(j["finished_at"]) for j in jobs]
    runs = [f - s for f, s in zip(finished, started, strict=True)]
    e2e_s = max(finished) - batch.first_upload
    window_s = max(finished) - min(started)
    gaps_ms = [g * 1000 for g in handoff_gaps(started, finished, workers)]
    return {
        "jobs": len(jobs),
        "uploads_s": round(batch.uploads_s, 3),
        "e2e_s": round(e2e_s, 3),
        "jobs_per_s": round(len(jobs) / e2e_s, 3),
        "window_s": round(window_s, 3),
        "window_jobs_per_s": round(len(jobs) / window_s, 3),
        "job_s_median": round(statistics.median(runs), 3),
        "_busy_s": sum(runs),  # over the window: how many workers were busy on average
        "gap_p50_ms": shared.r3(shared.pct(gaps_ms, 50)),
        "gap_max_ms": shared.r3(max(gaps_ms, default=0.0)),
        **status_figures(batch.poller, max(finished)),
    }


def handoff_gaps(started: list[float], finished: list[float], workers: int) -> list[float]:
    """From a job's finished_at to the start of the job its worker process takes next:
    the k-th start after the first `workers` follows the k-th end (the queue never
    empties, and a process starts a job only once it has ended one)."""
    return [s - e for s, e in zip(sorted(started)[workers:], sorted(finished), strict=False)]


def status_figures(poller: Poller, until: float) -> dict[str, Any]:
    ms = [s * 1000 for t, s, _ in poller.samples if t <= until]
    running = sum(1 for t, _, status in poller.samples if t <= until and status == "processing")
    return {
        "status_samples": len(ms),
        "status_on_running_job": running,
        "status_p50_ms": shared.r3(shared.pct(ms, 50)),
        "status_p99_ms": shared.r3(shared.pct(ms, 99)),
        "status_max_ms": shared.r3(max(ms) if ms else None),
    }


def run_one(
    config: Config,
    redis: tuple[Proc, str],
    content: bytes,
    a: argparse.Namespace,
    deadline: Deadline,
) -> dict[str, Any]:
    if config.backend == "limit":
        return {"config": config.name, **run_limit(config.workers, content, a, deadline)}
    folder = Path(tempfile.mkdtemp(prefix=f"hopper-scale-{config.name}-", dir=a.work_dir))
    service = Service(config, folder, service_env(config, folder, redis[1], a))
    try:
        service.start(deadline)
        return {"config": config.name, **measure(service, redis[0], content, a, deadline)}
    except Exception as exc:  # noqa: BLE001 - recorded, and the other runs go on
        tails = " | ".join(f"{p.name}: {p.tail(600)}" for p in service.procs())
        return {"config": config.name, "error": f"{exc!r} | {tails}"}
    finally:
        service.stop()
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- the machine's own ceiling


def _limit_init() -> None:
    os.nice(WORKER_NICENESS)  # as a job worker runs


def _limit_task(content: bytes, rounds: int) -> float:
    """The `checksums` job's hashing, without Hopper: its CPU seconds."""
    start = time.process_time()
    for _ in range(rounds):
        hashers = [hashlib.new(name) for name in ALGORITHMS]
        for offset in range(0, len(content), CHUNK_BYTES):
            chunk = content[offset : offset + CHUNK_BYTES]
            for hasher in hashers:
                hasher.update(chunk)
    return time.process_time() - start


def run_limit(
    workers: int, content: bytes, a: argparse.Namespace, deadline: Deadline
) -> dict[str, Any]:
    """The same hashing in `workers` bare processes at the job workers' niceness: what
    this machine gives 1 and 2 CPU-bound processes right now, with no server at all."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_limit_init) as pool:
        pool.starmap(_limit_task, [(b"warm-up", 1)] * workers)
        ticks0, start = shared.cpu_ticks()[0], time.monotonic()
        tasks = [(content, a.hash_rounds)] * a.jobs  # one at a time, as a worker takes jobs
        pending = pool.starmap_async(_limit_task, tasks, chunksize=1)
        cpu = pending.get(timeout=max(1.0, deadline.left()))
        wall = time.monotonic() - start
        ticks1 = shared.cpu_ticks()[0]
    return {
        "jobs": a.jobs,
        "jobs_per_s": round(a.jobs / wall, 3),
        "window_jobs_per_s": round(a.jobs / wall, 3),
        "cpu_jobs_s": round(sum(cpu), 3),
        "ours_cores": round(sum(cpu) / wall, 2),
        "job_cores": round(sum(cpu) / wall, 3),
        "machine_busy_cores": round((ticks1 - ticks0) / CLK_TCK / wall, 2),
        "others_cores": round(((ticks1 - ticks0) / CLK_TCK - sum(cpu)) / wall, 2),
        "load1": round(os.getloadavg()[0], 2),
    }


# ---------------------------------------------------------------- summary

SUMMARY_METRICS = [
    "jobs_per_s",
    "window_jobs_per_s",
    "job_s_median",
    "gap_p50_ms",
    "gap_max_ms",
    "uploads_s",
    "status_p50_ms",
    "status_p99_ms",
    "status_max_ms",
    "cpu_jobs_s",
    "cpu_api_s",
    "cpu_celery_main_s",
    "cpu_redis_s",
    "busy_workers",
    "job_cores",
    "ours_cores",
    "others_cores",
    "machine_busy_cores",
]


QUIET_OTHERS_CORES = 0.25  # a run the other tenants left (nearly) the whole machine


def summarize(records: list[dict[str, Any]], names: list[str]) -> str:
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for r in records:
        if "error" not in r:
            runs.setdefault(r["config"], {})[r["round"]] = r
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for metric in SUMMARY_METRICS:
        cells = [shared.mmm([r.get(metric) for r in runs.get(n, {}).values()]) for n in names]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| ratio, per round | jobs_per_s | window_jobs_per_s | job_cores | jobs_per_s, rounds "
        f"with others_cores <= {QUIET_OTHERS_CORES} in both runs | each round: jobs_per_s "
        "(others_cores, the busier run) |",
    ]
    lines.append("|---|---|---|---|---|---|")
    for top, bottom in RATIOS:
        if top in runs and bottom in runs:
            lines.append(ratio_line(runs, top, bottom))
    lines += ["", "| 2-vs-1 scaling / the machine's (limit2 / limit1), per round | jobs_per_s |"]
    lines.append("|---|---|")
    for backend in ("celery", "local"):
        if {f"{backend}1", f"{backend}2", "limit1", "limit2"} <= set(runs):
            lines.append(scaling_line(runs, backend))
    errors = [r for r in records if "error" in r]
    lines += ["", f"runs with errors: {len(errors)}"]
    lines += [f"  {r['config']} round {r['round']}: {r['error'][:400]}" for r in errors]
    return "\n".join(lines)


def ratio_line(runs: dict[str, dict[int, dict[str, Any]]], top: str, bottom: str) -> str:
    rounds = sorted(set(runs[top]) & set(runs[bottom]))

    def ratios(metric: str) -> list[float]:
        return [runs[top][r][metric] / runs[bottom][r][metric] for r in rounds]

    def others(r: int) -> float:  # the busier of the pair's two runs
        return float(max(runs[name][r].get("others_cores", 0.0) for name in (top, bottom)))

    pairs = list(zip(ratios("jobs_per_s"), rounds, strict=True))
    each = ", ".join(f"{x:.2f} ({others(r):.2f})" for x, r in pairs)
    quiet = [x for x, r in pairs if others(r) <= QUIET_OTHERS_CORES]
    return (
        f"| {top} / {bottom} | {shared.mmm(ratios('jobs_per_s'))} | "
        f"{shared.mmm(ratios('window_jobs_per_s'))} | {shared.mmm(ratios('job_cores'))} | "
        f"{shared.mmm(quiet)}, {len(quiet)} of {len(pairs)} | {each} |"
    )


def scaling_line(runs: dict[str, dict[int, dict[str, Any]]], backend: str) -> str:
    one, two = runs[f"{backend}1"], runs[f"{backend}2"]
    rounds = sorted(set(one) & set(two) & set(runs["limit1"]) & set(runs["limit2"]))
    machine = [runs["limit2"][r]["jobs_per_s"] / runs["limit1"][r]["jobs_per_s"] for r in rounds]
    ours = [two[r]["jobs_per_s"] / one[r]["jobs_per_s"] for r in rounds]
    return f"| {backend} | {shared.mmm([o / m for o, m in zip(ours, machine, strict=True)])} |"


# ---------------------------------------------------------------- main


def _exit_on_sigterm(signum: int, frame: object) -> None:  # the finally blocks clean up
    raise SystemExit(128 + signum)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=32, help="CPU-heavy jobs per run")
    p.add_argument("--mib", type=int, default=2, help="size of each upload")
    p.add_argument("--hash-rounds", type=int, default=32, help="HASH_ROUNDS of `checksums`")
    p.add_argument("--poll-ms", type=float, default=50.0, help="status poll interval")
    p.add_argument("--configs", default=",".join(c.name for c in CONFIGS))
    p.add_argument("--max-seconds", type=float, default=1800.0, help="bound on the whole run")
    p.add_argument(
        "--quiet-below",
        type=float,
        default=0.0,
        help="before each pair of runs (1 and 2 workers), wait until the machine is busy "
        "below this many cores",
    )
    p.add_argument("--quiet-wait", type=float, default=300.0, help="longest such wait, s")
    p.add_argument("--work-dir", default=tempfile.gettempdir())
    p.add_argument("--out", default=None, help="append the JSON lines here too")
    p.add_argument("--summary-md", default=None, help="write the summary tables here too")
    p.add_argument(
        "--summarize", default=None, metavar="JSONL", help="only print the tables of a past run"
    )
    return p.parse_args()


@contextlib.contextmanager
def redis_server(a: argparse.Namespace) -> Iterator[tuple[Proc, str]]:
    folder = Path(tempfile.mkdtemp(prefix="hopper-scale-redis-", dir=a.work_dir))
    proc: Proc | None = None
    try:
        proc, url = start_redis(folder)
        yield proc, url
    finally:
        if proc is not None:
            proc.stop()
        shutil.rmtree(folder, ignore_errors=True)


def emit(record: dict[str, Any], out: IO[str] | None) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if out is not None:
        out.write(line + "\n")
        out.flush()


def wait_for_quiet(cores: float, wait_s: float) -> None:
    """Start a pair of runs once the machine's other tenants leave it nearly idle (busy cores
    over 2 s below `cores`), or after `wait_s` anyway: every run records its noise."""
    limit = Deadline(wait_s)
    while True:
        ticks0 = shared.cpu_ticks()[0]
        time.sleep(2.0)
        busy = (shared.cpu_ticks()[0] - ticks0) / CLK_TCK / 2.0
        if busy < cores or limit.left() <= 0:
            log(f"machine busy {busy:.2f} cores; going on")
            return


def run_rounds(a: argparse.Namespace, configs: list[Config], out: IO[str] | None) -> str:
    deadline = Deadline(a.max_seconds)
    content = os.urandom(a.mib << 20)
    records: list[dict[str, Any]] = []
    emit(
        {
            "meta": True,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": sys.argv[1:],
            "cpus": os.cpu_count(),
            "load1": os.getloadavg()[0],
        },
        out,
    )
    with redis_server(a) as redis:
        for rnd, config in schedule(a, configs, deadline):
            log(f"round {rnd + 1}/{a.rounds}: {config.name}")
            record = {"round": rnd, **run_one(config, redis, content, a, deadline)}
            emit(record, out)
            records.append(record)
    return summarize(records, [c.name for c in configs])


def schedule(
    a: argparse.Namespace, configs: list[Config], deadline: Deadline
) -> Iterator[tuple[int, Config]]:
    """Each round every configuration once, reversed on odd rounds; with --quiet-below,
    a wait for a quiet machine before each pair. Stops early at --max-seconds (the runs
    so far are summarised)."""
    for rnd in range(a.rounds):
        order = configs if rnd % 2 == 0 else configs[::-1]
        for n, config in enumerate(order):
            if a.quiet_below and (n == 0 or order[n - 1].backend != config.backend):
                # before each pair: the two runs of a ratio share one quiet stretch
                wait_for_quiet(a.quiet_below, min(a.quiet_wait, max(0.0, deadline.left())))
            if deadline.left() <= 0:
                log("--max-seconds reached: no more runs")
                return
            yield rnd, config


def with_job_cores(record: dict[str, Any]) -> dict[str, Any]:
    """Fill in job_cores for a run recorded before this bench reported it."""
    if "job_cores" not in record and "cpu_jobs_s" in record:
        record["job_cores"] = record["cpu_jobs_s"] * record["jobs_per_s"] / record["jobs"]
    return record


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    a = parse_args()
    by_name = {c.name: c for c in CONFIGS}
    configs = [by_name[n] for n in a.configs.split(",") if n]
    if a.summarize:
        lines = Path(a.summarize).read_text().splitlines()
        records = [with_job_cores(r) for r in map(json.loads, lines) if "config" in r]
        summary = summarize(records, [c.name for c in configs])
    else:
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(Path(a.out).open("a")) if a.out else None
            summary = run_rounds(a, configs, out)
    print("\n" + summary, flush=True)
    if a.summary_md:
        Path(a.summary_md).write_text(summary + "\n")


if __name__ == "__main__":
    main()
