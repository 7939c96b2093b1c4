"""Structured logs: one JSON object per line on stderr, each carrying the request id of
the request it belongs to and, where there is one, the job id: an upload's request line
names its job, and the job id finds every step it went through.

Keys and file contents are never logged: request lines name the method, the path
without its query, the status and the time; job lines name the job and the processor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any, NamedTuple

request_id: ContextVar[str | None] = ContextVar("hopper_request_id", default=None)

# Loggers whose lines are ours to format: the app's, and uvicorn's start/stop/errors.
# uvicorn's access log is off in scripts/serve: each request's own line replaces it.
LOGGERS = ("hopper", "uvicorn.error")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# What every LogRecord has; anything else on a record came in `extra` and is logged.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_DROPPED = frozenset({"color_message"})  # uvicorn's copy of the message with colours


class JsonLines(logging.Formatter):
    """A record as one JSON object: time, level, logger, message, then its `extra`
    fields. Written here rather than taken from python-json-logger, which costs 40 us a
    line against 8 here: a fifth of a status poll, and every request writes a line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in _DROPPED:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class RequestLine(NamedTuple):
    method: str
    path: str
    route: str
    status: int
    seconds: float
    request_id: str
    ids: dict[str, str] | None  # job_id, key_id


@dataclass
class _RequestLines:
    """Where the per-request line goes: straight to the log handler's stream, the lines
    of one event-loop turn in one write. The whole logging path (a LogRecord, filters, a
    formatter, a write each) cost a fifth of a status poll. The line is the one JsonLines
    would write. Only the event loop's thread calls write()."""

    handler: logging.StreamHandler[Any] | None = None
    as_json: bool = True
    _second: int = -1
    _second_text: str = ""
    _pending: list[str] = field(default_factory=list)

    def write(self, line: RequestLine) -> None:
        if self.handler is None:  # not configured, or the level is above INFO
            return
        text = self._as_json(line) if self.as_json else self._as_text(line)
        if not self._pending:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop: write it now
                self._pending.append(text)
                self.flush()
                return
        self._pending.append(text)

    def _as_json(self, line: RequestLine) -> str:
        # Formatted by hand: json.dumps of a dict costs as much as the rest of the line.
        # Only the path can hold anything; the other strings are the server's own.
        text = (
            f'{{"time": "{self._timestamp()}", {_REQUEST_HEAD}, "method": "{line.method}", '
            f'"path": {encode_basestring_ascii(line.path)}, "route": "{line.route}", '
            f'"status": {line.status}, "duration_ms": {line.seconds * 1000:.3f}, '
            f'"request_id": "{line.request_id}"'
        )
        for name, value in (line.ids or {}).items():
            text += f', "{name}": "{value}"'
        return text + "}"

    def _as_text(self, line: RequestLine) -> str:
        # The path quoted and escaped: a %0A in it must not start a forged line.
        ids = "".join(f" {name}={value}" for name, value in (line.ids or {}).items())
        return (
            f"{self._timestamp()} INFO {REQUEST_LOGGER} request method={line.method} "
            f"path={encode_basestring_ascii(line.path)} route={line.route} status={line.status} "
            f"duration_ms={line.seconds * 1000:.3f} request_id={line.request_id}{ids}"
        )

    def flush(self) -> None:
        handler, lines = self.handler, self._pending
        self._pending = []
        if handler is None or not lines:
            return
        with handler.lock or _NO_LOCK:
            handler.stream.write("\n".join(lines) + "\n")
            handler.flush()

    def _timestamp(self) -> str:
        """ISO 8601 in UTC to the microsecond, like JsonLines; the date and time of day
        are formatted once a second."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((now - second) * 1e6):06d}+00:00"


REQUEST_LOGGER = "hopper.http"
_REQUEST_HEAD = f'"level": "INFO", "logger": "{REQUEST_LOGGER}", "message": "request"'
_NO_LOCK = threading.Lock()
request_lines = _RequestLines()


class _WithRequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        return True


def configure_logging(fmt: str, level: str = "INFO") -> None:
    """`fmt` is `json` (one object per line) or `text` (for a person at a terminal)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_WithRequestId())
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False
    on = logging.getLogger(REQUEST_LOGGER).isEnabledFor(logging.INFO)
    request_lines.handler = handler if on else None
    request_lines.as_json = fmt == "json"
    # Nobody reads these: not computing them makes every record cheaper.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
