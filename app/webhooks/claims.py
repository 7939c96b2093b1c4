"""Which process delivers a job's webhook: a lease (app.locks.Leases) on byte 1 of the
job's stored file.

Like the dispatcher's lease on byte 0, it is held through a whole delivery round, backoff
included, and freed by the kernel when its process dies: a sweep can tell a round nobody
delivers any more (its process was killed) from one under way in another live process,
and take only the first over. No new files: the job's file is there for as long as the
job.
"""

from __future__ import annotations

from pathlib import Path

from app.locks import Leases, lease_if_free

CLAIM_BYTE = 1  # byte 0 (app.locks.LEASE_BYTE) is the job's lease; they never overlap


def claims() -> Leases:
    """The claims this process holds; take() never waits."""
    return Leases(byte=CLAIM_BYTE)


def is_free(path: Path) -> bool:
    """No process (this one included) holds the job's delivery claim."""
    with lease_if_free(path, byte=CLAIM_BYTE) as free:
        return free
