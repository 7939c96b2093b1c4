"""The watch folder (HOPPER_WATCH_DIR): each file that settles there becomes a job, through
the same commit step as an upload, or goes to rejected/ with a reason file.

A file is copied into the data directory through `accept_upload` as a raw upload's body
(so the same size limit, free-space reserve, queue limit, SHA-256, record and lease), then
removed from the folder once its record is saved; then its job is queued. A copy rather than
a rename: the bytes must be hashed anyway, and the folder may be on another filesystem.
A full queue or disk is temporary: the file stays and is tried again. A file that can
never be taken (too large, unreadable, not a regular file) goes to rejected/.

One server process at a time watches: of those sharing a data directory, the one holding an
flock on watch.lock. If it dies the kernel frees the lock and another takes over within
LOCK_RETRY_S. Change notification (watchfiles: inotify) only makes the watcher look sooner;
it also looks every RESCAN_S, which finds files present at start-up and any event missed
(a network filesystem sends none for other machines' writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import os
import stat
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from watchfiles import awatch

from app.errors import BadUpload, HopperError, InsufficientStorage, ServiceBusy
from app.filenames import from_filesystem, sanitize_filename
from app.locks import ProcessLock
from app.metrics import Metrics
from app.models import Job
from app.rejects import reject
from app.settle import Settler, Signature, candidates
from app.uploads import UploadEnv, UploadRequest, accept_upload

log = logging.getLogger("hopper.watch")

RESCAN_S = 5.0  # a look without an event: missed events, network filesystems
LOCK_RETRY_S = 1.0  # how soon another process takes over from one that died
RETRY_S = 5.0  # a full queue or disk: the files wait this long before the next try
NOTIFY_RETRY_S = 0.05  # doubled for each failure of change notification in a row
NOTIFY_FAILURES_LOGGED = 3
CHUNK_BYTES = 1024 * 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK  # never a link; a FIFO cannot block


class Unreadable(HopperError):
    """The file cannot be taken as it is: rejected."""

    status_code = 400


class Changed(Exception):
    """The file changed while it was read: it settles again, nothing is stored."""


@dataclass(frozen=True)
class _Source:
    name: str  # the folder's entry
    display: str  # the job's filename: sanitised, valid UTF-8
    fd: int
    signature: Signature


class WatchFolder:
    def __init__(
        self,
        env: UploadEnv,
        submit: Callable[[str], None],
        metrics: Metrics,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        folder = env.settings.watch_dir
        assert folder is not None  # noqa: S101 - built only when HOPPER_WATCH_DIR is set
        self._dir, self._env, self._submit, self._metrics = folder, env, submit, metrics
        self._stopping = stopping  # SIGTERM arrived: take no more files
        self._processors = env.settings.watch_processors.strip() or None
        self._settler = Settler(env.settings.watch_settle)
        self._lock = ProcessLock(env.layout.watch_lock)
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy_until = 0.0
        self._busy_detail: str | None = None  # logged once while it lasts

    def start(self) -> None:
        """Check the pipeline, make the folder, and watch from a task on the running loop."""
        try:
            self._env.registry.parse_pipeline(self._processors or "auto")
        except BadUpload as exc:
            raise ValueError(f"HOPPER_WATCH_PROCESSORS: {exc.detail}") from None
        self._dir.mkdir(parents=True, exist_ok=True)
        self._lock.hold()  # at once: of processes started one after another, the first watches
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, timeout_s: float) -> None:
        """Let a file being taken finish (up to `timeout_s`), then let go of the lock."""
        self._done.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        self._lock.release()

    def _over(self) -> bool:
        return self._done.is_set() or self._stopping()

    async def _run(self) -> None:
        while not self._over():
            if self._lock.hold():
                await self._watch()  # until the watcher stops
            else:
                await self._sleep(LOCK_RETRY_S)

    async def _watch(self) -> None:
        log.info("watch folder: watching %s", self._dir)
        changed = asyncio.Event()
        notifier = asyncio.create_task(self._notify(changed))
        try:
            while not self._over():
                changed.clear()  # events during the pass call for another one
                delay = await self._pass()
                await self._sleep(delay, changed)
        finally:
            notifier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await notifier

    async def _notify(self, changed: asyncio.Event) -> None:
        """Set `changed` on every batch of events in the folder (not its sub-folders)."""
        failures = 0  # in a row, with no event reported between them
        while True:
            try:
                async for _ in awatch(self._dir, watch_filter=None, recursive=False):
                    changed.set()
                    failures = 0
            except (OSError, RuntimeError, ExceptionGroup) as exc:  # in a task group's group
                # An event it cannot report (a name that is not UTF-8) is an event all the
                # same; one that fails at once again (no inotify watches left) backs off
                # to the rescans' pace.
                changed.set()
                failures += 1
                if failures == NOTIFY_FAILURES_LOGGED:
                    log.warning(
                        "watch folder: change notification keeps failing (%s); looking every %g s",
                        _cause(exc),
                        RESCAN_S,
                    )
            await asyncio.sleep(min(NOTIFY_RETRY_S * 2**failures, RESCAN_S))

    async def _sleep(self, seconds: float, wake: asyncio.Event | None = None) -> None:
        """Until `seconds` pass, `wake` is set or the watcher stops."""
        waits = [asyncio.create_task(self._done.wait())]
        if wake is not None:
            waits.append(asyncio.create_task(wake.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def _pass(self) -> float:
        """Look at the folder, take what is ready; return the seconds until the next look."""
        try:
            files = await asyncio.to_thread(_scan, self._dir)
        except OSError as exc:
            log.warning("watch folder: cannot list %s: %s", self._dir, exc.strerror)
            return RESCAN_S
        now = time.monotonic()
        ready = self._settler.observe(files, now)
        if now < self._busy_until:
            return self._busy_until - now
        for name in ready:
            if self._over():
                break
            if not await self._take_or_wait(name, files[name]):
                self._busy_until = time.monotonic() + RETRY_S
                return RETRY_S
        wait = self._settler.next_ready_in(time.monotonic())
        return RESCAN_S if wait is None else min(wait, RESCAN_S)

    async def _take_or_wait(self, name: str, signature: Signature) -> bool:
        """Take one file; False if the server is busy (the file waits)."""
        try:
            await self._take(name, signature)
        except (ServiceBusy, InsufficientStorage) as exc:
            if exc.detail != self._busy_detail:
                log.warning("watch folder: files wait: %s", exc.detail)
            self._busy_detail = exc.detail
            return False
        except Changed:
            pass  # the next look sees its new signature: it settles again
        except Exception:  # the data disk failing, say: this file waits its turn again
            log.exception("watch folder: could not take a file; trying again later")
            self._settler.postpone(name, time.monotonic() + RETRY_S)
        self._busy_detail = None
        return True

    async def _take(self, name: str, signature: Signature) -> None:
        try:
            source = await asyncio.to_thread(_open, self._dir / name, name, signature)
        except FileNotFoundError:
            return  # gone since the look
        except Unreadable as exc:
            await self._reject(name, exc)
            return
        try:
            accepted = await accept_upload(self._request(source), self._env)
        except (ServiceBusy, InsufficientStorage, Changed):
            raise
        except HopperError as exc:  # what the HTTP API answers with a 4xx
            await self._reject(name, exc)
            return
        finally:
            os.close(source.fd)
        # Shielded: once the record is saved, the file goes and the job is queued even if
        # the server is stopping (a stopped dispatcher leaves the job for the next start).
        if not await asyncio.shield(asyncio.to_thread(self._hand_over, accepted.job, source)):
            self._settler.postpone(name)  # this process does not take it again

    def _request(self, source: _Source) -> UploadRequest:
        content_type = mimetypes.guess_type(source.display, strict=False)[0]
        return UploadRequest(
            chunks=_chunks(source.fd, source.signature),
            content_type=content_type or DEFAULT_CONTENT_TYPE,
            content_length=source.signature.size,  # a file over the limit: 413 unread
            processors=self._processors,
            raw_filename=source.display,
        )

    def _hand_over(self, job: Job, source: _Source) -> bool:
        """The record is saved: remove the file, then queue the job. False if the file
        is there still and cannot be removed."""
        path = self._dir / source.name
        removed = True
        try:
            if Signature.of(path.lstat()) == source.signature:
                path.unlink()
            else:  # written again after it was read: it is taken again, as a new file
                log.warning("watch folder: %s changed after it was taken", source.display)
        except FileNotFoundError:
            pass
        except OSError as exc:
            removed = False
            log.error(
                "watch folder: %s was taken as job %s but cannot be removed (%s); remove "
                "it, or it is taken again after a restart",
                source.display,
                job.id,
                exc.strerror,
            )
        self._submit(job.id)
        self._metrics.watch_file("taken")
        extra = {"job_id": job.id, "file": source.display, "size": job.size}
        log.info("watch file taken", extra=extra)
        return removed

    async def _reject(self, name: str, exc: HopperError) -> None:
        try:
            moved = await asyncio.to_thread(reject, self._dir, name, exc.status_code, exc.detail)
        except OSError as error:
            self._settler.postpone(name, time.monotonic() + RETRY_S)
            log.error("watch folder: could not move a file to rejected/: %s", error.strerror)
            return
        if moved is not None:
            self._metrics.watch_file("rejected")
            extra = {"file": moved, "status": exc.status_code, "detail": exc.detail}
            log.warning("watch file rejected", extra=extra)


def _cause(exc: BaseException) -> str:
    """awatch raises its thread's error inside an anyio task group's ExceptionGroup."""
    while isinstance(exc, ExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return str(exc)


def _scan(folder: Path) -> dict[str, Signature]:
    try:
        return candidates(folder)
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)  # removed under us: watch it again
        return {}


def _open(path: Path, name: str, expected: Signature) -> _Source:
    """Open the file the look saw (blocks: run it in a thread)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise Unreadable(_unreadable(path, exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unreadable("It is not a regular file; put the file itself in the folder.")
        if Signature.of(st) != expected:
            raise Changed
    except BaseException:
        os.close(fd)
        raise
    display = sanitize_filename(from_filesystem(name))
    return _Source(name, display, fd, expected)


def _unreadable(path: Path, exc: OSError) -> str:
    if path.is_symlink():
        return "It is a symbolic link; put the file itself in the folder."
    return f"The file could not be read ({exc.strerror or exc})."


async def _chunks(fd: int, expected: Signature) -> AsyncIterator[bytes]:
    """The file's bytes; at the end, a check that nothing changed while they were read."""
    while chunk := await asyncio.to_thread(_read, fd):
        yield chunk
    if Signature.of(await asyncio.to_thread(os.fstat, fd)) != expected:
        raise Changed


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, CHUNK_BYTES)
    except OSError as exc:
        raise Unreadable(f"The file could not be read ({exc.strerror or exc}).") from None
