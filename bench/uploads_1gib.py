"""A 1 GiB file uploaded to one real Hopper server in each way a user has: MB/s and peak
memory of both ends, the ways interleaved over rounds on this shared machine.

    .venv/bin/python bench/uploads_1gib.py [--rounds 3] [--mib 1024] [--out FILE.jsonl]

Ways: `curl -F` (multipart POST /uploads), `curl -T` (PUT /uploads/raw), `hopper upload`
(the CLI, which sends a file of 64 MiB or more by tus), tuspy (the Python tus client,
--tus-chunk-mib a PATCH) and tus by curl (POST /files/, then the whole file in one PATCH:
the server's tus path without a Python client). The server runs as scripts/serve runs it
(`hopper serve`: uvloop, app.protocols:HttpToolsProtocol) from this checkout, on
127.0.0.1, with a fresh data dir in --work-dir and HOPPER_DEFAULT_PROCESSORS=inspect (a
cheap job: the upload is what is measured). Each round is multipart, then every other
way followed by multipart again (the others rotated by one each round), and an upload's
ratio is its MB/s over the mean of the multipart uploads just before and after it: the
machine's other load, which changes by the minute, falls on both sides of a ratio alike.

Per upload: MB/s = bytes / the seconds the client counts (curl's time_total, that of the
PATCH for tus by curl; tuspy's upload() call, its imports not included; for the CLI the
wall time of the whole process, start-up included, as a user waits for it), and wall_MBps
from each client process's wall time. The client's peak RSS and CPU come from GNU time
(/usr/bin/time); the server's peak over the upload from VmHWM (reset beforehand through
/proc/<pid>/clear_refs) of the server process and summed over its process tree (its job
workers), with the largest VmRSS polled every 10 ms as a cross-check; its CPU from
/proc/<pid>/stat of the tree. Then the job must end done with the source's SHA-256; it is
deleted and the disk synced before the next upload. MB = 10^6 bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WAYS = ("multipart", "raw_put", "cli_tus", "tuspy", "tus_curl")
CURL_WAYS = ("multipart", "raw_put")
BASELINE = "multipart"
TUSPY = """
import sys, time
from tusclient.client import TusClient
url, path, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
start = time.perf_counter()
uploader = TusClient(url + "/files/").uploader(
    path, chunk_size=chunk, metadata={"filename": "big.bin"}, retries=0
)
uploader.upload()
print(uploader.url.rstrip("/").rsplit("/", 1)[1], time.perf_counter() - start)
"""
# tus by curl: the server's tus path without a Python client (POST, then one PATCH, timed).
TUS_CURL = """
set -e
c() { curl -sS --noproxy '*' -H Tus-Resumable:1.0.0 -H Expect: "$@"; }
loc=$(c -X POST -H "Upload-Length: $(stat -c %s "$2")" -o /dev/null \\
  -w "%header{location}" "$1/files/")
t=$(c -X PATCH -H Upload-Offset:0 -H Content-Type:application/offset+octet-stream \\
  -T "$2" -o /dev/null -w "%{time_total}" "$1$loc")
echo "${loc##*/} $t"
"""


@dataclass
class Server:
    """`hopper serve` on a free port with its own data dir."""

    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log: Path) -> None:
        env = {**os.environ, "HOPPER_DATA_DIR": str(self.data_dir), "PORT": str(self.port)}
        env |= {"HOPPER_DEFAULT_PROCESSORS": "inspect", "HOPPER_WORKERS": "1"}
        with log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - this checkout's own command
                [str(BIN / "hopper"), "serve", "--log-level", "warning"],
                env=env,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the server did not get ready within 60 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pid: int) -> float:
    """user + system CPU seconds of the process tree (its threads included)."""
    ticks = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def reset_peaks(pid: int) -> bool:
    """VmHWM back to VmRSS for the tree (Linux >= 4.0); False if not allowed."""
    try:
        for p in tree(pid):
            Path(f"/proc/{p}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssPoller(threading.Thread):
    """The largest VmRSS of the server process, and of its tree summed, every 10 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.stop_event = pid, threading.Event()
        self.own_kib = self.tree_kib = 0

    def run(self) -> None:
        while not self.stop_event.wait(0.01):
            self.own_kib = max(self.own_kib, status_kib(self.pid, "VmRSS"))
            self.tree_kib = max(self.tree_kib, sum(status_kib(p, "VmRSS") for p in tree(self.pid)))


def run_client(cmd: list[str], env: dict[str, str], out: Path, timeout_s: float) -> dict[str, Any]:
    """Wall seconds and peak RSS of one client process. GNU time reports the RSS: the
    rusage of a child of this process would count the copy of this one it was forked as."""
    rss = out.with_suffix(".rss")
    start = time.perf_counter()
    done = subprocess.run(  # noqa: S603 - the commands below, with paths we made
        ["/usr/bin/time", "-f", "%M %U %S", "-o", str(rss), *cmd],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    wall_s = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {done.returncode}: {done.stderr[-800:]}")
    kib, user_s, sys_s = rss.read_text().splitlines()[-1].split()
    cpu_s = float(user_s) + float(sys_s)
    return {"wall_s": wall_s, "rss_kib": int(kib), "cpu_s": cpu_s, "stdout": done.stdout}


def parse(way: str, stdout: str, answer: Path) -> tuple[str, float | None]:
    """The upload's id, and the seconds the client itself counts for it (curl's
    time_total, tuspy's upload() call; none for the CLI: its whole run counts)."""
    if way in CURL_WAYS:
        return str(json.loads(answer.read_text())["id"]), float(stdout)
    if way in ("tuspy", "tus_curl"):
        upload_id, seconds = stdout.split()
        return upload_id, float(seconds)
    return str(json.loads(stdout.splitlines()[0])["id"]), None


def commands(a: argparse.Namespace, url: str, src: Path, work: Path) -> dict[str, list[str]]:
    cli = [str(BIN / "hopper"), "upload", str(src), "--json"]
    variants = {  # the same command with another checkout's app/ first on the path
        f"cli_{name}": ["env", f"PYTHONPATH={checkout}", *cli]
        for name, checkout in (v.split("=", 1) for v in a.cli_variant)
    }
    curl = ["curl", "-sS", "--noproxy", "*", "--max-time", str(a.max_seconds), "-H", "Expect:"]
    curl += ["-o", str(work / "answer.json"), "-w", "%{time_total}"]
    return {
        "multipart": [*curl, "-F", f"file=@{src};type=application/octet-stream", f"{url}/uploads"],
        "raw_put": [
            *curl,
            "-H",
            "Content-Type: application/octet-stream",
            "-T",
            str(src),
            f"{url}/uploads/raw?filename=big.bin",
        ],
        "cli_tus": cli,
        "tuspy": [sys.executable, "-c", TUSPY, url, str(src), str(a.tus_chunk_mib << 20)],
        "tus_curl": ["sh", "-c", TUS_CURL, "tus_curl", url, str(src)],
        **variants,
    }


def upload_once(
    a: argparse.Namespace, srv: Server, way: str, src: Path, sha: str, work: Path
) -> dict[str, Any]:
    if srv.proc is None:
        raise RuntimeError("the server is not running")
    pid, answer = srv.proc.pid, work / "answer.json"
    env = {**os.environ, "HOPPER_URL": srv.url, "HOPPER_CACHE_DIR": str(work / "cli-cache")}
    exact, before_kib = reset_peaks(pid), status_kib(pid, "VmRSS")
    poller = RssPoller(pid)
    poller.start()
    load1, server_cpu = os.getloadavg()[0], cpu_s(pid)
    try:
        done = run_client(commands(a, srv.url, src, work)[way], env, work / way, a.max_seconds)
    finally:
        poller.stop_event.set()
        poller.join()
    own_hwm, tree_hwm = status_kib(pid, "VmHWM"), sum(status_kib(p, "VmHWM") for p in tree(pid))
    server_cpu = cpu_s(pid) - server_cpu
    upload_id, counted_s = parse(way, done["stdout"], answer)
    job = finish(srv, upload_id, a.max_seconds)
    size = src.stat().st_size
    if job["sha256"] != sha or job["size"] != size:
        raise RuntimeError(f"{way}: the job has {job['size']} bytes, sha256 {job['sha256']}")
    seconds = counted_s or done["wall_s"]
    return {
        "way": way,
        "bytes": size,
        "wall_s": round(done["wall_s"], 3),
        "upload_s": round(seconds, 3),
        "MBps": round(size / seconds / 1e6, 1),
        "wall_MBps": round(size / done["wall_s"] / 1e6, 1),
        "client_cpu_s": round(done["cpu_s"], 2),
        "server_cpu_s": round(server_cpu, 2),
        "client_peak_MiB": round(done["rss_kib"] / 1024, 1),
        "server_rss_before_MiB": round(before_kib / 1024, 1),
        "server_peak_MiB": round(own_hwm / 1024, 1) if exact else None,
        "server_tree_peak_MiB": round(tree_hwm / 1024, 1) if exact else None,
        "server_polled_rss_MiB": round(poller.own_kib / 1024, 1),
        "server_tree_polled_rss_MiB": round(poller.tree_kib / 1024, 1),
        "load1": load1,
    }


def finish(srv: Server, upload_id: str, timeout_s: float) -> dict[str, Any]:
    """The job once done; then deleted, and the disk synced, so the next upload starts
    from the same state."""
    deadline = time.monotonic() + timeout_s
    while True:
        job: dict[str, Any] = httpx.get(f"{srv.url}/status/{upload_id}", timeout=10).json()
        if job["status"] in ("done", "failed", "cancelled"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {upload_id} still {job['status']} after {timeout_s} s")
        time.sleep(0.05)
    if job["status"] != "done":
        raise RuntimeError(f"job {upload_id} ended {job['status']}: {job.get('error')}")
    httpx.delete(f"{srv.url}/jobs/{upload_id}", timeout=30).raise_for_status()
    os.sync()
    return job


def random_file(path: Path, mib: int) -> str:
    """MIB MiB of random bytes (once; kept in the page cache); its SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(mib):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            f.write(chunk)
    return digest.hexdigest()


def mmm(values: list[float]) -> str:
    return f"{min(values):.3g} - {statistics.median(values):.3g} - {max(values):.3g}"


def table(runs: list[dict[str, Any]], ways: list[str]) -> str:
    lines = [
        "| way | MB/s min - median - max | ratio to the multipart uploads either side | "
        "server peak MiB: process (+ over its RSS before) / tree | client peak MiB | "
        "CPU s client / server (median) |",
        "|---|---|---|---|---|---|",
    ]
    for way in ways:
        mine = [r for r in runs if r["way"] == way]
        ratios = [r["ratio"] for r in mine if r.get("ratio") is not None]
        cpu = [r["client_cpu_s"] for r in mine], [r["server_cpu_s"] for r in mine]
        own = [r["server_peak_MiB"] or r["server_polled_rss_MiB"] for r in mine]
        growth = [
            (r["server_peak_MiB"] or r["server_polled_rss_MiB"]) - r["server_rss_before_MiB"]
            for r in mine
        ]
        whole = [r["server_tree_peak_MiB"] or r["server_tree_polled_rss_MiB"] for r in mine]
        lines.append(
            f"| {way} | {mmm([r['MBps'] for r in mine])} | {mmm(ratios) if ratios else '-'} | "
            f"{max(own):.0f} (+{max(growth):.1f}) / {max(whole):.0f} | "
            f"{max(r['client_peak_MiB'] for r in mine):.0f} | "
            f"{statistics.median(cpu[0]):.2f} / {statistics.median(cpu[1]):.2f} |"
        )
    return "\n".join(lines)


def round_order(ways: list[str], rnd: int) -> list[str]:
    """Multipart, then each other way followed by multipart again, the others rotated by
    one each round: every upload is compared with the two multipart ones either side."""
    others = [w for w in ways if w != BASELINE]
    order = [BASELINE]
    for way in rotate(others, rnd):
        order += [way, BASELINE]
    return order


def rotate(ways: list[str], by: int) -> list[str]:
    by %= len(ways)
    return ways[by:] + ways[:by]


def run(a: argparse.Namespace, work: Path, emit: Callable[[dict[str, Any]], None]) -> None:
    src = work / "big.bin"
    print(f"generating {a.mib} MiB of random bytes in {src}", file=sys.stderr)
    sha = random_file(src, a.mib)
    srv = Server(work / "data", _free_port())
    srv.start(work / "server.log")
    ways: list[str] = a.ways + [f"cli_{v.split('=', 1)[0]}" for v in a.cli_variant]
    runs: list[dict[str, Any]] = []
    try:
        for way in ways[: len(ways) if a.warmup else 0]:  # imports, page cache, first requests
            upload_once(a, srv, way, src, sha, work)
        for rnd in range(a.rounds):
            before: dict[str, Any] | None = None  # the last multipart upload's record
            for way in round_order(ways, rnd):
                record = {"round": rnd, **upload_once(a, srv, way, src, sha, work)}
                if way == BASELINE and before is not None and runs[-1]["way"] != BASELINE:
                    beside = (before["MBps"] + record["MBps"]) / 2
                    runs[-1]["ratio"] = round(runs[-1]["MBps"] / beside, 3)
                    emit(runs[-1])
                runs.append(record)
                if way == BASELINE:
                    record["ratio"], before = 1.0, record
                    emit(record)
    finally:
        srv.stop()
    print(table(runs, ways))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mib", type=int, default=1024, help="the file's size in MiB")
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    parser.add_argument(
        "--cli-variant",
        action="append",
        default=[],
        metavar="NAME=CHECKOUT",
        help="also run `hopper upload` with CHECKOUT (a patched worktree) first on "
        "PYTHONPATH, as way cli_NAME",
    )
    parser.add_argument("--tus-chunk-mib", type=int, default=32, help="tuspy's bytes a PATCH")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="bound of each step")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, help="also write each upload's figures here")
    a = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` cleans up
    work = Path(tempfile.mkdtemp(prefix="hopper-uploads-", dir=a.work_dir))
    out = a.out.open("a") if a.out else None

    def emit(record: dict[str, Any]) -> None:
        line = json.dumps(record)
        print(line, file=sys.stderr, flush=True)
        if out is not None:
            out.write(line + "\n")
            out.flush()

    try:
        run(a, work, emit)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the 1 GiB source and what the server kept
        if out is not None:
            out.close()


if __name__ == "__main__":
    main()
