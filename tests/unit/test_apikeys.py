"""API keys: the format, the digest-only file, verification in constant time, reloads."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app import apikeys
from app.api.access import owner_of
from app.apikeys import KeyRefused, KeyRing, Scope, create_key, key_id_of, revoke_key
from app.quotas import parse_size, seconds_to_midnight
from app.web.login import local_path
from tests.helpers import make_job


def test_a_key_is_hop_id_secret_and_only_its_digest_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "apikeys.json"
    record, key = create_key(path, "ci", [Scope.UPLOAD, Scope.READ])
    assert key.startswith(f"hop_{record.id}_") and len(record.id) == 10
    assert len(key) == len("hop_") + 10 + 1 + 43  # 32 random bytes, base64url
    assert key_id_of(key) == record.id
    text = path.read_text()
    assert key not in text and key[15:] not in text
    assert record.sha256 == hashlib.sha256(key.encode()).hexdigest() and record.sha256 in text


def test_verify_compares_digests_with_compare_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record, key = create_key(tmp_path / "apikeys.json", "ci", [Scope.READ])
    seen: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the function app.apikeys calls
    ring = KeyRing(tmp_path / "apikeys.json")
    assert ring.verify(key) == record
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert ring.verify(wrong) is None
    assert ring.verify("hop_unknown123_secret") is None  # unknown id: compared all the same
    assert len(seen) == 3 and all(len(a) == len(b) == 64 for a, b in seen)


def test_revoke_is_seen_by_a_ring_at_its_next_lookup(tmp_path: Path) -> None:
    path = tmp_path / "apikeys.json"
    _, key = create_key(path, "ci", [Scope.READ])
    ring = KeyRing(path)
    assert ring.verify(key) is not None
    revoked = revoke_key(path, "ci")
    assert revoked.revoked_at is not None
    assert ring.verify(key) is None
    with pytest.raises(KeyRefused):
        revoke_key(path, "ci")  # no live key of that name is left
    _, again = create_key(path, "ci", [Scope.READ])  # the name is free again
    assert ring.verify(again) is not None


def test_names_of_live_keys_are_unique_and_a_key_needs_a_scope(tmp_path: Path) -> None:
    path = tmp_path / "apikeys.json"
    create_key(path, "ci", [Scope.READ])
    with pytest.raises(KeyRefused):
        create_key(path, "ci", [Scope.UPLOAD])
    with pytest.raises(KeyRefused):
        create_key(path, "empty", [])


def test_an_admin_key_allows_every_scope() -> None:
    key = apikeys.ApiKey(id="a" * 10, name="ops", scopes=[Scope.ADMIN], sha256="0" * 64)
    assert all(key.allows(scope) for scope in Scope)


def test_the_owner_is_found_in_the_first_bytes_of_a_record() -> None:
    job = make_job()
    assert owner_of(job.model_dump_json().encode()) is None
    job.owner = "Abc123xyz0"
    job.result = {"x": "y" * 10_000}
    assert owner_of(job.model_dump_json().encode()) == "Abc123xyz0"


@pytest.mark.parametrize(
    ("text", "size"),
    [("10G", 10**10), ("500MB", 500 * 10**6), ("2GiB", 2 << 30), ("1234", 1234), ("1.5k", 1500)],
)
def test_sizes_parse(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_a_size_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size("ten gigs")


def test_seconds_to_midnight_utc() -> None:
    assert seconds_to_midnight(datetime(2026, 1, 1, 23, 0, tzinfo=UTC)) == 3601


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        ("/jobs/abc?page=2", "/jobs/abc?page=2"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("jobs", "/"),
        ("/a\r\nSet-Cookie: x", "/"),
    ],
)
def test_login_only_redirects_to_local_paths(target: str, safe: str) -> None:
    assert local_path(target) == safe
