"""Quotas against a data directory: what usage/<key-id>.json keeps, and whose upload slots
still count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.apikeys import ApiKey, Scope
from app.errors import QuotaExceeded
from app.layout import DataDir
from app.models import JobStatus
from app.quotas import Process, Quotas, alive, this_process
from app.store import JsonJobStore
from tests.helpers import make_job


@pytest.fixture
def layout(tmp_path: Path) -> DataDir:
    layout = DataDir(tmp_path)
    layout.create()
    return layout


def _key(**limits: int) -> ApiKey:
    return ApiKey(id="K" * 10, name="k", scopes=[Scope.UPLOAD], sha256="0" * 64, **limits)


def _usage(layout: DataDir, key: ApiKey) -> dict[str, object]:
    found: dict[str, object] = json.loads(layout.usage(key.id).read_bytes())
    return found


def test_a_bytes_only_key_keeps_no_list_of_jobs(layout: DataDir) -> None:
    store = JsonJobStore(layout)
    quotas, key = Quotas(layout, store), _key(bytes_per_day=10**9)
    for _ in range(5):
        slot = quotas.admit(key, 100)
        assert slot is not None
        job = make_job(JobStatus.DONE)
        store.save(job)
        quotas.stored(slot, job.id, 100)
    usage = _usage(layout, key)
    assert usage["bytes"] == 500  # bytes still count
    assert usage["jobs"] == [] and usage["uploads"] == {}  # nothing to grow without end


def test_a_slot_left_by_an_earlier_server_with_the_same_pid_holds_no_job(
    layout: DataDir,
) -> None:
    # PID 1 in a container, killed mid-upload and started again: the old slot names our pid.
    key = _key(max_jobs=1)
    path = layout.usage(key.id)
    path.parent.mkdir(exist_ok=True)
    ghost = Process(pid=os.getpid(), started="an-earlier-boot/1")
    for left in ({"ghost": os.getpid()}, {"ghost": ghost.model_dump()}):  # old and new form
        path.write_text(json.dumps({"day": None, "bytes": 0, "jobs": [], "uploads": left}))
        quotas = Quotas(layout, JsonJobStore(layout))
        slot = quotas.admit(key, 10)
        assert slot is not None
        with pytest.raises(QuotaExceeded):  # the live slot does count
            quotas.admit(key, 10)
        quotas.release(slot)


def test_the_current_process_is_alive() -> None:
    assert alive(this_process())


def test_the_right_pid_with_another_start_time_is_dead() -> None:
    me = this_process()
    assert me.started is not None  # Linux: /proc/<pid>/stat
    assert not alive(Process(pid=me.pid, started=me.started + "0"))
    assert not alive(Process(pid=me.pid, started="another-boot/" + me.started.split("/")[1]))


def test_a_process_that_has_exited_is_dead() -> None:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    gone = int(child.stdout)
    assert not alive(Process(pid=gone, started=this_process().started))
    assert not alive(Process(pid=gone, started=None))
