"""Run locks and leases on a job's file: independent, exclusive between owners, and let
go of when their holder goes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.locks import Leases, job_lock, lease_if_free

HOLD_LEASE = """
import sys, time
from pathlib import Path
from app.locks import Leases
leases = Leases()
assert leases.take("job", Path(sys.argv[1]))
print("held", flush=True)
time.sleep(60)
"""


def _job_file(tmp_path: Path) -> Path:
    path = tmp_path / "job"
    path.write_bytes(b"x")
    return path


def test_a_lease_has_one_owner_until_released(tmp_path: Path) -> None:
    path = _job_file(tmp_path)
    first, second = Leases(), Leases()
    assert first.take("job", path)
    assert first.take("job", path)  # its own: at once
    assert not second.take("job", path)
    with lease_if_free(path) as free:
        assert not free
    first.release("job")
    assert second.take("job", path) and second.holds("job")
    second.release_all()
    with lease_if_free(path) as free:
        assert free


def test_the_lease_and_the_run_lock_are_independent(tmp_path: Path) -> None:
    path = _job_file(tmp_path)
    owner = Leases()
    assert owner.take("job", path)
    with job_lock(path) as running:
        assert running  # the owner's worker runs the job while its owner holds the lease
        assert not Leases().take("job", path)
    owner.release("job")


def test_leases_on_different_bytes_are_independent(tmp_path: Path) -> None:
    """The dispatcher's lease is byte 0 of the job's file, a webhook claim byte 1."""
    path = _job_file(tmp_path)
    owner, claimer = Leases(), Leases(byte=1)
    assert owner.take("job", path)
    assert claimer.take("job", path)  # another byte: no conflict with the owner
    assert not Leases(byte=1).take("job", path)  # but one claim at a time
    with lease_if_free(path, byte=1) as free:
        assert not free
    claimer.release("job")
    with lease_if_free(path, byte=1) as free:
        assert free
    with lease_if_free(path) as free:
        assert not free  # byte 0 still the owner's
    owner.release_all()


def test_a_missing_file_has_nothing_to_own(tmp_path: Path) -> None:
    assert Leases().take("job", tmp_path / "gone")
    with lease_if_free(tmp_path / "gone") as free:
        assert not free


def test_a_dead_owner_s_lease_is_free(tmp_path: Path) -> None:
    path = _job_file(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_LEASE, str(path)], stdout=subprocess.PIPE, env=env
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
            assert not Leases().take("job", path)  # another live process owns it
        finally:
            holder.kill()
    assert Leases().take("job", path, wait_s=5)
