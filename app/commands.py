"""The `hopper` command's client side: upload, status, watch, ls, rm, and serve.

The target is HOPPER_URL (default http://127.0.0.1:8000) with the key in HOPPER_KEY.
Progress bars (rich) go to standard error on a terminal; standard output has only what a
script reads: job ids, or the job documents with --json.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from app.client import (
    DEFAULT_URL,
    RESUMABLE_MIN_BYTES,
    ApiError,
    Client,
    Job,
    TimedOut,
    is_finished,
)
from app.resumes import Resumes, default_dir
from app.serving import DEFAULT_HOST, DEFAULT_PORT, uvicorn_argv


class Exit(IntEnum):
    DONE = 0
    FAILED = 1
    ERROR = 2  # a usage error (as typer's own), or the server refused or was unreachable
    CANCELLED = 3
    TIMED_OUT = 4


EXIT_CODES_HELP = (
    "Exit codes: 0 every job done (or uploaded, without --wait); 1 a job failed; "
    "2 usage error, or the server refused or could not be reached; 3 a job was "
    "cancelled; 4 --timeout passed before the jobs finished. With several files, the "
    "first file whose job did not end done decides."
)
_OUTCOMES = {"done": Exit.DONE, "failed": Exit.FAILED, "cancelled": Exit.CANCELLED}

Url = Annotated[str, typer.Option(envvar="HOPPER_URL", help="The Hopper server.")]
Key = Annotated[
    str | None,
    typer.Option(envvar="HOPPER_KEY", show_default=False, help="API key (HOPPER_AUTH=keys)."),
]
Timeout = Annotated[
    float | None,
    typer.Option(min=0, help="Seconds to wait for the jobs to finish; then exit 4."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print job documents, one a line.")]

_stderr = Console(stderr=True, soft_wrap=True)  # a long reason stays one line


def upload(
    files: Annotated[
        list[Path], typer.Argument(exists=True, dir_okay=False, readable=True, metavar="FILE")
    ],
    processors: Annotated[
        str | None, typer.Option(help="Comma-separated processors (default: the server's).")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the jobs to finish.")] = False,
    follow: Annotated[
        bool, typer.Option(help="Wait, showing each job's progress as it changes.")
    ] = False,
    download: Annotated[
        Path | None,
        typer.Option(
            file_okay=False,
            help="Wait, then save job.json and the artifacts of each done job into DIR/<id>/.",
            metavar="DIR",
        ),
    ] = None,
    as_json: AsJson = False,
    timeout: Timeout = None,
    resumable_min_bytes: Annotated[
        int,
        typer.Option(
            envvar="HOPPER_RESUMABLE_MIN_BYTES",
            min=0,
            help="Files this large or larger go as resumable (tus) uploads where the server "
            "offers them; a run that is stopped is taken up by the next run for the file.",
        ),
    ] = RESUMABLE_MIN_BYTES,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Upload files, one job each; print each job's id as it is made."""
    with _client(url, key, Resumes(default_dir()), resumable_min_bytes) as client:
        jobs = [_send(client, path, processors, as_json) for path in files]
        if wait or follow or download is not None:
            jobs, code = _wait(client, jobs, timeout, follow)
            if download is not None:
                _download(client, jobs, download)
        else:
            code = Exit.DONE
        _print_jobs(jobs, as_json)
    raise typer.Exit(code)


def status(job_id: str, url: Url = DEFAULT_URL, key: Key = None) -> None:
    """Print a job's document."""
    with _client(url, key) as client:
        typer.echo(json.dumps(client.status(job_id), indent=2, ensure_ascii=False))


def watch(
    job_ids: Annotated[list[str], typer.Argument(metavar="ID...")],
    as_json: AsJson = False,
    timeout: Timeout = None,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Follow jobs until they finish; the exit code says how they ended (see upload)."""
    with _client(url, key) as client:
        jobs, code = _wait(client, [client.status(i) for i in job_ids], timeout, follow=True)
        _print_jobs(jobs, as_json)
    raise typer.Exit(code)


def ls(
    page: Annotated[int, typer.Option(min=1, help="50 jobs a page, newest first.")] = 1,
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """List recent jobs (those the key sees)."""
    with _client(url, key) as client:
        listing = client.jobs(page)
    jobs: list[Job] = listing.get("jobs", [])
    if as_json:
        _print_jobs(jobs, True)
    else:
        rows = [("ID", "STATUS", "SIZE", "CREATED", "FILENAME")]
        rows += [
            (j["id"], j["status"], f"{j['size']:,}", j["created_at"][:19], j["filename"])
            for j in jobs
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if listing.get("has_next"):
        _stderr.print(f"More: hopper ls --page {page + 1}")


def rm(
    job_ids: Annotated[list[str], typer.Argument(metavar="ID...")],
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Delete jobs: file, artifacts and record (a running job is stopped first)."""
    with _client(url, key) as client:
        for job_id in job_ids:
            done = client.delete(job_id)
            typer.echo(f"Deleted {job_id}." if done else f"Deleting {job_id} once it stops.")


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(envvar="HOST", help="Address to listen on.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(envvar="PORT", help="Port to listen on.")] = DEFAULT_PORT,
) -> NoReturn:
    """Serve Hopper with uvicorn as scripts/serve does; more options go to uvicorn."""
    from app.config import get_settings  # the server's settings: only this command needs them

    argv = uvicorn_argv(host, port, get_settings().shutdown_grace, list(ctx.args))
    sys.stdout.flush()
    os.execv(argv[0], argv)  # noqa: S606 - the same Python, running uvicorn in its place


def worker(ctx: typer.Context) -> NoReturn:
    """Run a Celery worker (HOPPER_BACKEND=celery) on HOPPER_QUEUE with HOPPER_WORKERS
    processes; more options go to `celery worker`."""
    from app.config import get_settings

    settings = get_settings()
    argv = [sys.executable, "-m", "celery", "-A", "app.worker", "worker"]
    argv += ["-Q", settings.queue, "-c", str(settings.workers), *ctx.args]
    sys.stdout.flush()
    os.execv(argv[0], argv)  # noqa: S606 - the same Python, running celery in its place


SERVE_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True}


@contextmanager
def _client(
    url: str,
    key: str | None,
    resumes: Resumes | None = None,
    resumable_min_bytes: int = RESUMABLE_MIN_BYTES,
) -> Iterator[Client]:
    client = Client(url, key, resumes, resumable_min_bytes)
    try:
        yield client
    except ApiError as exc:
        _fail(str(exc))
    finally:
        client.close()


def _fail(message: str) -> NoReturn:
    _stderr.print(f"hopper: {message}", markup=False, highlight=False)
    raise typer.Exit(Exit.ERROR)


def _bars(*, transfer: bool) -> Progress:
    columns = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn()]
    if transfer:
        columns += [DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=_stderr, disable=not _stderr.is_terminal)


def _send(client: Client, path: Path, processors: str | None, as_json: bool) -> Job:
    with _bars(transfer=True) as bars:
        task = bars.add_task(path.name, total=path.stat().st_size)
        job = client.upload(
            path, processors, lambda n: bars.advance(task, n), lambda at: _resumed(path, at)
        )
    if not as_json:
        typer.echo(job["id"])  # at once, so a script (or a person) may act on it
    return job


def _resumed(path: Path, offset: int) -> None:
    size = path.stat().st_size
    _stderr.print(
        f"{path.name}: resuming at {offset} of {size} bytes", markup=False, highlight=False
    )


def _wait(
    client: Client, jobs: list[Job], timeout_s: float | None, follow: bool
) -> tuple[list[Job], Exit]:
    """Follow the jobs to their end; the latest documents and the exit code."""
    latest = {job["id"]: job for job in jobs}
    with _bars(transfer=False) as bars:
        tasks = (
            {i: bars.add_task(_label(j), total=1.0) for i, j in latest.items()} if follow else {}
        )
        try:
            for job in client.follow(list(latest), timeout_s):
                latest[job["id"]] = job
                if follow:
                    _show(bars, tasks[job["id"]], job)
        except TimedOut:
            _stderr.print(f"hopper: gave up waiting after {timeout_s:g} s", highlight=False)
    for job in latest.values():
        _report(job)
    codes = [_OUTCOMES.get(j["status"], Exit.TIMED_OUT) for j in latest.values()]
    return list(latest.values()), next((c for c in codes if c != Exit.DONE), Exit.DONE)


def _show(bars: Progress, task: TaskID, job: Job) -> None:
    if bars.disable and not is_finished(job):  # not a terminal: a line per change
        percent = f" {job.get('progress', 0.0):.0%}" if job["status"] == "processing" else ""
        _stderr.print(f"{job['id']} {job['status']}{percent}", highlight=False)
    done = 1.0 if is_finished(job) else float(job.get("progress") or 0.0)
    bars.update(task, description=_label(job), completed=done)


def _label(job: Job) -> str:
    return f"{job['filename']} {job['status']}"


def _report(job: Job) -> None:
    error = job.get("error") or {}
    reason = f": {error.get('code')}: {error.get('message')}" if error else ""
    if job.get("duplicate_of"):  # HOPPER_DEDUPE: done at once with an earlier job's results
        reason += f" (duplicate of {job['duplicate_of']})"
    _stderr.print(f"{job['id']} {job['status']}{reason}", markup=False, highlight=False)


def _download(client: Client, jobs: list[Job], folder: Path) -> None:
    for job in jobs:
        if job["status"] == "done":
            for path in client.download(job, folder / job["id"]):
                _stderr.print(f"saved {path}", markup=False, highlight=False)


def _print_jobs(jobs: list[Job], as_json: bool) -> None:
    if as_json:
        for job in jobs:
            typer.echo(json.dumps(job, ensure_ascii=False))
