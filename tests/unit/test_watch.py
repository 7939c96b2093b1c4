"""The watch folder's pure parts: which names count, when a file has settled, and how a
rejected file is named beside its reason."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app.config import Settings
from app.rejects import reject
from app.settle import Settler, Signature, candidates, is_candidate

SETTLE_S = 2.0


def sig(size: int = 10, mtime_ns: int = 1, inode: int = 1) -> Signature:
    return Signature(device=1, inode=inode, size=size, mtime_ns=mtime_ns)


@pytest.mark.parametrize(
    ("name", "taken"),
    [
        ("report.pdf", True),
        ("archive.tar.gz", True),
        ("partial", True),  # only a suffix says a file is still being written
        (".hidden", False),
        (".report.pdf.a1b2c3", False),  # rsync's temp file
        ("movie.mp4.part", False),
        ("page.CRDOWNLOAD", False),
        ("upload.tmp", False),
        ("data.partial", False),
    ],
)
def test_candidate_names(name: str, taken: bool) -> None:
    assert is_candidate(name) is taken


def test_a_file_is_ready_once_unchanged_for_the_settle_time() -> None:
    settler = Settler(SETTLE_S)
    assert settler.observe({"a": sig()}, now=0.0) == []
    assert settler.next_ready_in(0.0) == SETTLE_S
    assert settler.observe({"a": sig()}, now=1.9) == []
    assert settler.observe({"a": sig()}, now=2.0) == ["a"]


def test_a_change_starts_the_settle_time_again() -> None:
    settler = Settler(SETTLE_S)
    settler.observe({"a": sig(size=10)}, now=0.0)
    assert settler.observe({"a": sig(size=20)}, now=1.5) == []  # grew
    assert settler.observe({"a": sig(size=20, mtime_ns=2)}, now=3.0) == []  # rewritten in place
    assert settler.observe({"a": sig(size=20, mtime_ns=2)}, now=4.9) == []
    assert settler.observe({"a": sig(size=20, mtime_ns=2)}, now=5.0) == ["a"]


def test_a_file_replaced_by_another_of_the_same_size_and_mtime_settles_again() -> None:
    settler = Settler(SETTLE_S)
    settler.observe({"a": sig(inode=1)}, now=0.0)
    assert settler.observe({"a": sig(inode=2)}, now=2.0) == []  # a new file, renamed over it
    assert settler.observe({"a": sig(inode=2)}, now=4.0) == ["a"]


def test_ready_names_come_longest_waiting_first_and_gone_ones_are_forgotten() -> None:
    settler = Settler(SETTLE_S)
    settler.observe({"third": sig()}, now=0.0)  # seen first, so ready first
    settler.observe({"third": sig(), "first": sig()}, now=0.5)
    files = {"third": sig(), "first": sig(), "second": sig()}
    settler.observe(files, now=1.0)
    assert settler.observe(files, now=10.0) == ["third", "first", "second"]
    assert settler.observe({"second": sig()}, now=10.0) == ["second"]
    assert settler.observe({}, now=10.0) == []
    assert settler.next_ready_in(10.0) is None
    assert settler.observe({"third": sig()}, now=11.0) == []  # back: as a new file


def test_a_postponed_file_waits_unless_it_changes() -> None:
    settler = Settler(SETTLE_S)
    settler.observe({"a": sig(), "b": sig()}, now=0.0)
    settler.postpone("a")  # never
    settler.postpone("b", until=7.0)
    assert settler.observe({"a": sig(), "b": sig()}, now=6.0) == []
    assert settler.next_ready_in(6.0) == 1.0
    assert settler.observe({"a": sig(), "b": sig()}, now=7.0) == ["b"]
    assert settler.observe({"a": sig(size=11), "b": sig()}, now=8.0) == ["b"]  # a changed
    assert settler.observe({"a": sig(size=11)}, now=10.0) == ["a"]


def test_candidates_leave_out_sub_folders_and_see_links_as_links(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"abc")
    (tmp_path / "rejected").mkdir()
    (tmp_path / "rejected" / "b.txt").write_bytes(b"b")
    (tmp_path / ".c.txt").write_bytes(b"c")
    (tmp_path / "link").symlink_to(tmp_path / "a.txt")
    found = candidates(tmp_path)
    assert sorted(found) == ["a.txt", "link"]
    assert found["a.txt"].size == 3
    assert found["link"].inode == (tmp_path / "link").lstat().st_ino


def test_a_rejected_file_moves_beside_its_reason_and_never_over_an_earlier_one(
    tmp_path: Path,
) -> None:
    for expected in ("big.iso", "big-1.iso", "big-2.iso"):
        (tmp_path / "big.iso").write_bytes(expected.encode())
        assert reject(tmp_path, "big.iso", 413, "Too large.") == expected
        assert (tmp_path / "rejected" / expected).read_bytes() == expected.encode()
        reason = json.loads((tmp_path / "rejected" / f"{expected}.reason.json").read_text())
        assert (reason["file"], reason["status"]) == ("big.iso", 413)
        assert reason["detail"] == "Too large."
        assert reason["rejected_at"].endswith("Z")
    assert not (tmp_path / "big.iso").exists()
    assert [p.name for p in (tmp_path / "rejected").iterdir() if p.name[0] == "."] == []


def test_a_rejected_name_is_made_displayable_and_short_enough(tmp_path: Path) -> None:
    name = os.fsdecode(b"\xff" * 10 + b"x" * 240 + b".bin")  # not UTF-8, 254 bytes
    (tmp_path / name).write_bytes(b"z")
    moved = reject(tmp_path, name, 400, "Unreadable.")
    assert moved is not None and moved.endswith(".bin") and len(moved.encode()) <= 200
    assert "\ufffd" in moved
    assert (tmp_path / "rejected" / f"{moved}.reason.json").exists()
    assert reject(tmp_path, "gone.txt", 400, "Unreadable.") is None  # nothing to move


def test_the_watch_dir_may_not_be_in_the_data_dir(tmp_path: Path) -> None:
    for inside in (tmp_path, tmp_path / "inbox"):
        with pytest.raises(ValueError, match="HOPPER_WATCH_DIR"):
            Settings(data_dir=tmp_path, watch_dir=inside)
    outside = Settings(data_dir=tmp_path / "data", watch_dir=tmp_path / "inbox")
    assert outside.watch_dir == (tmp_path / "inbox").resolve()
    assert Settings(watch_dir="").watch_dir is None
