"""The `hopper` command's record of unfinished tus uploads: one entry per file as it is,
edited in place, never in the way of an upload."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from app.resumes import CACHE_DIR_ENV, KEEP_S, ResumeKey, Resumes, default_dir

SERVER = "http://127.0.0.1:8000"


def _file(tmp_path: Path, name: str = "big.bin", data: bytes = b"x" * 100) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_an_upload_is_found_until_forgotten(tmp_path: Path) -> None:
    resumes = Resumes(tmp_path / "cache")
    a, b = _file(tmp_path, "a.bin"), _file(tmp_path, "b.bin")
    key_a, key_b = ResumeKey.of(SERVER, a, None), ResumeKey.of(SERVER + "/", b, "inspect")
    assert resumes.find(key_a) is None
    resumes.remember(key_a, "/files/A")
    resumes.remember(key_b, "/files/B")
    resumes.remember(key_a, "/files/A2")  # the newer upload replaces the older
    assert (resumes.find(key_a), resumes.find(key_b)) == ("/files/A2", "/files/B")
    assert resumes.find(ResumeKey.of(SERVER, b, None)) is None  # other processors
    assert resumes.find(ResumeKey.of("http://other:8000", a, None)) is None
    resumes.forget(key_a)
    assert (resumes.find(key_a), resumes.find(key_b)) == (None, "/files/B")
    assert len(json.loads(resumes.path.read_text())) == 1
    assert stat.S_IMODE(resumes.path.stat().st_mode) == 0o600  # upload URLs are capabilities


def test_a_changed_file_is_another_upload(tmp_path: Path) -> None:
    resumes = Resumes(tmp_path / "cache")
    path = _file(tmp_path)
    resumes.remember(ResumeKey.of(SERVER, path, None), "/files/A")
    later = time.time_ns() + 5 * 10**9
    os.utime(path, ns=(later, later))  # same size, new mtime
    assert resumes.find(ResumeKey.of(SERVER, path, None)) is None
    path.write_bytes(b"y" * 101)
    assert resumes.find(ResumeKey.of(SERVER, path, None)) is None


def test_stale_entries_go_at_the_next_edit(tmp_path: Path) -> None:
    resumes = Resumes(tmp_path / "cache")
    old, new = _file(tmp_path, "old.bin"), _file(tmp_path, "new.bin")
    resumes.remember(ResumeKey.of(SERVER, old, None), "/files/OLD")
    entries = json.loads(resumes.path.read_text())
    entries[0]["saved_at"] = time.time() - KEEP_S - 1
    resumes.path.write_text(json.dumps(entries))
    resumes.remember(ResumeKey.of(SERVER, new, None), "/files/NEW")
    assert [e["location"] for e in json.loads(resumes.path.read_text())] == ["/files/NEW"]


def test_a_torn_or_foreign_file_is_read_as_empty(tmp_path: Path) -> None:
    resumes = Resumes(tmp_path / "cache")
    key = ResumeKey.of(SERVER, _file(tmp_path), None)
    resumes.folder.mkdir()
    for text in ("[{", '{"not": "a list"}', '[1, "two", {"location": 3}]'):
        resumes.path.write_text(text)
        assert resumes.find(key) is None
    resumes.remember(key, "/files/A")
    assert resumes.find(key) == "/files/A"


def test_a_folder_that_cannot_be_written_costs_only_the_resuming(tmp_path: Path) -> None:
    in_the_way = _file(tmp_path, "cache")  # a file where the folder should be
    resumes = Resumes(in_the_way)
    key = ResumeKey.of(SERVER, _file(tmp_path), None)
    resumes.remember(key, "/files/A")
    resumes.forget(key)
    assert resumes.find(key) is None
    assert in_the_way.read_bytes() == b"x" * 100


def test_the_folder_is_the_env_var_else_the_xdg_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "mine"))
    assert default_dir() == tmp_path / "mine"
    monkeypatch.delenv(CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_dir() == tmp_path / "xdg" / "hopper"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")  # as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_dir() == tmp_path / "home" / ".cache" / "hopper"
