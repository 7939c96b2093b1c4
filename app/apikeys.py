"""API keys: made at random, kept only as SHA-256 digests in DATA_DIR/apikeys.json.

A key is `hop_<id>_<secret>`: the id (10 URL-safe characters) is public and names the key
in listings, job records and logs; the secret is 32 random bytes. The file is replaced
atomically (temp file in the same folder, then os.replace) and the server re-reads it
when its stat changes, so a revoke takes effect at the next request, in every process.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from app.atomic import locked, write_atomically
from app.models import utc_now

log = logging.getLogger("hopper.auth")

KEY_PREFIX = "hop_"
KEY_ID_CHARS = 10
SECRET_BYTES = 32
FILE_MODE = 0o600  # digests only, but nobody else needs to read them
# Letters and digits only (59 bits): an id never starts with `-`, so `keys revoke <id>`
# never reads as an option.
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# Compared against when a key's id is unknown, so that answer takes as long as a mismatch.
_NO_DIGEST = "0" * 64


class Scope(StrEnum):
    UPLOAD = "upload"
    READ = "read"
    ADMIN = "admin"


class ApiKey(BaseModel):
    id: str
    name: str
    scopes: list[Scope]
    sha256: str = Field(description="Of the whole key; the key itself is never stored.")
    bytes_per_day: int | None = None
    max_jobs: int | None = None
    created_at: datetime = Field(default_factory=utc_now)
    revoked_at: datetime | None = None

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes

    @property
    def admin(self) -> bool:
        return Scope.ADMIN in self.scopes


class KeyFile(BaseModel):
    keys: list[ApiKey] = Field(default_factory=list)


class KeyRefused(ValueError):
    """A key operation that cannot be done as asked (the CLI shows the sentence)."""


def digest(key: str) -> str:
    # Keys are 256 random bits, not passwords: nothing to brute-force, so a fast hash is
    # right (a slow KDF would only slow every request down).
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(presented: str) -> str | None:
    """The id part of `hop_<id>_<secret>`, by position: ids and secrets may hold `_`."""
    sep = len(KEY_PREFIX) + KEY_ID_CHARS
    if not presented.startswith(KEY_PREFIX) or presented[sep : sep + 1] != "_":
        return None
    return presented[len(KEY_PREFIX) : sep]


def new_key() -> tuple[str, str]:
    """A fresh (id, key)."""
    key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(KEY_ID_CHARS))
    secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=").decode()
    return key_id, f"{KEY_PREFIX}{key_id}_{secret}"


class KeyRing:
    """apikeys.json as the server sees it: one stat per lookup, a re-read on change."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._by_id: dict[str, ApiKey] = {}

    def verify(self, presented: str) -> ApiKey | None:
        """The live key `presented` is, or None (unknown, wrong secret or revoked)."""
        key_id = key_id_of(presented)
        found = self._current().get(key_id or "")
        expected = found.sha256 if found is not None else _NO_DIGEST
        if not hmac.compare_digest(digest(presented), expected) or found is None:
            return None
        return None if found.revoked_at is not None else found

    def empty(self) -> bool:
        return not self._current()

    def _current(self) -> dict[str, ApiKey]:
        try:
            st = self._path.stat()
        except FileNotFoundError:
            self._stamp, self._by_id = None, {}
            return self._by_id
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                keys = read_keys(self._path)
            except (OSError, ValidationError):
                log.exception("cannot read %s; keeping the keys read before", self._path)
                return self._by_id
            self._by_id = {k.id: k for k in keys}
            self._stamp = stamp
        return self._by_id


def read_keys(path: Path) -> list[ApiKey]:
    try:
        return KeyFile.model_validate_json(path.read_bytes()).keys
    except FileNotFoundError:
        return []


def create_key(
    path: Path,
    name: str,
    scopes: list[Scope],
    bytes_per_day: int | None = None,
    max_jobs: int | None = None,
) -> tuple[ApiKey, str]:
    """Add a key; returns its record and the key itself (the only time it exists)."""
    if not name.strip() or not scopes:
        raise KeyRefused("A key needs a name and at least one scope.")
    with _editing(path) as keys:
        if any(k.name == name and k.revoked_at is None for k in keys):
            raise KeyRefused(f"A live key is already named {name!r}; pick another name.")
        key_id, key = new_key()
        record = ApiKey(
            id=key_id,
            name=name,
            scopes=sorted(set(scopes)),
            sha256=digest(key),
            bytes_per_day=bytes_per_day,
            max_jobs=max_jobs,
        )
        keys.append(record)
    return record, key


def revoke_key(path: Path, id_or_name: str) -> ApiKey:
    """Mark a live key revoked (it stays listed); by id, or by the name of a live key."""
    with _editing(path) as keys:
        live = [k for k in keys if k.revoked_at is None]
        match = next((k for k in live if k.id == id_or_name), None) or next(
            (k for k in live if k.name == id_or_name), None
        )
        if match is None:
            raise KeyRefused(f"No live key has the id or name {id_or_name!r} (see `keys list`).")
        match.revoked_at = utc_now()
    return match


@contextlib.contextmanager
def _editing(path: Path) -> Iterator[list[ApiKey]]:
    """Read, change and atomically replace the file, one editor at a time (flock)."""
    with locked(path.with_name(f".{path.name}.lock"), FILE_MODE):
        keys = read_keys(path)
        yield keys
        data = KeyFile(keys=keys).model_dump_json(indent=2).encode()
        write_atomically(path, data, mode=FILE_MODE, fsync=True)  # a revoke survives a power loss
