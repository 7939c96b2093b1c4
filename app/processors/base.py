"""The processor interface: what a built-in or plugged-in processor implements."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from app.artifacts import Artifacts
from app.models import ErrorCode


@dataclass(frozen=True)
class Context:
    """What a processor gets: the file (read it, never change it), facts about it, a
    progress callback (0..1), and an artifact writer. It writes nowhere else."""

    job_id: str
    path: Path
    filename: str
    size: int
    sha256: str
    detected_type: str
    declared_type: str
    progress: Callable[[float], None]
    artifacts: Artifacts
    options: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class Processor(Protocol):
    name: str
    description: str  # one line, shown by GET /processors
    version: str
    in_auto: bool  # part of the `auto` pipeline when it accepts the file

    def accepts(self, detected_type: str) -> bool: ...

    def run(self, ctx: Context) -> dict[str, Any]: ...


class ProcessorError(Exception):
    """A failure a processor can explain: the job ends `failed` with this code and message."""

    def __init__(self, code: ErrorCode, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.transient = transient
