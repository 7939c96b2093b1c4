"""Files a processor writes for a job (thumbnails, extracted text): stored under the job's
own folder, named by the processor from a safe alphabet, listed in the job document."""

from __future__ import annotations

import re
from pathlib import Path

from app.models import Artifact

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_ARTIFACT_BYTES = 64 * 1024 * 1024


def is_artifact_name(name: str) -> bool:
    return _NAME_RE.fullmatch(name) is not None and ".." not in name


class Artifacts:
    """The artifact writer a processor gets in its context."""

    def __init__(self, job_id: str, folder: Path) -> None:
        self._job_id = job_id
        self._folder = folder
        self.written: dict[str, Artifact] = {}

    def write(self, name: str, data: bytes, content_type: str) -> None:
        """Store `data` as artifact `name`; writing a name again replaces it (jobs rerun)."""
        if not is_artifact_name(name):
            raise ValueError(f"artifact name {name!r} must match {_NAME_RE.pattern}")
        if len(data) > MAX_ARTIFACT_BYTES:
            raise ValueError(f"artifact {name!r} is over {MAX_ARTIFACT_BYTES} bytes")
        self._folder.mkdir(parents=True, exist_ok=True)
        tmp = self._folder / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(self._folder / name)
        self.written[name] = Artifact(
            name=name,
            content_type=content_type,
            size=len(data),
            url=f"/jobs/{self._job_id}/artifacts/{name}",
        )
