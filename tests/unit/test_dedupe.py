"""Dedupe entries: what names a job's results, when one is reused, and what removes one."""

from __future__ import annotations

import os
import time
from pathlib import Path

from app.cleanup import purge
from app.dedupe import Dedupe, entry_of, remember, remove_dangling, variant
from app.layout import DataDir
from app.models import Artifact, Job, JobStatus
from app.processors.registry import builtin_registry
from app.store import JsonJobStore
from tests.helpers import make_job

THUMB = "thumbnail.webp"


def _dedupe(tmp_path: Path) -> Dedupe:
    layout = DataDir(tmp_path)
    layout.create()
    return Dedupe(layout, JsonJobStore(layout), builtin_registry())


def _done_original(d: Dedupe) -> Job:
    """A finished `inspect` job with one artifact, its URL in the result too."""
    job = make_job(JobStatus.DONE, attempts=1)
    job.sha256, job.processors = os.urandom(32).hex(), ["inspect"]
    job.versions = {"inspect": d.registry.get("inspect").version}
    url = f"/jobs/{job.id}/artifacts/{THUMB}"
    job.artifacts = [Artifact(name=THUMB, content_type="image/webp", size=4, url=url)]
    job.result = {"inspect": {"preview": url, "nested": [url, "other"]}}
    d.layout.upload(job.id).write_bytes(b"x")
    d.layout.artifacts(job.id).mkdir()
    (d.layout.artifacts(job.id) / THUMB).write_bytes(b"webp")
    remember(d.layout, job)
    d.store.save(job)
    return job


def _new(d: Dedupe, original: Job, processors: list[str] | None = None) -> Job:
    job = make_job()
    job.sha256, job.owner = original.sha256, original.owner
    job.processors = processors or ["inspect"]
    d.layout.upload(job.id).write_bytes(b"x")
    return job


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_the_variant_tells_pipelines_and_owners_apart() -> None:
    assert variant(["inspect"], None) == variant(["inspect"], None)
    names = {variant(["inspect"], None), variant(["inspect", "text"], None)}
    names |= {variant(["inspect"], "key1"), variant(["text", "inspect"], None)}
    assert len(names) == 4


def test_a_duplicate_gets_the_results_with_its_own_urls_and_linked_artifacts(
    tmp_path: Path,
) -> None:
    d = _dedupe(tmp_path)
    original = _done_original(d)
    job = _new(d, original)
    dup = d.reuse(job, d.layout.upload(job.id))
    assert (dup.status, dup.duplicate_of, dup.attempts) == (JobStatus.DONE, original.id, 0)
    url = f"/jobs/{job.id}/artifacts/{THUMB}"
    assert dup.result == {"inspect": {"preview": url, "nested": [url, "other"]}}
    assert [a.url for a in dup.artifacts] == [url]
    mine, theirs = (d.layout.artifacts(j) / THUMB for j in (job.id, original.id))
    assert mine.stat().st_ino == theirs.stat().st_ino  # a hard link: no second copy


def test_no_reuse_for_other_processors_versions_status_or_a_gone_artifact(
    tmp_path: Path,
) -> None:
    d = _dedupe(tmp_path)
    original = _done_original(d)
    other = _new(d, original, ["inspect", "checksums"])
    assert d.reuse(other, d.layout.upload(other.id)) is other
    original.versions["inspect"] = "0.0.0-older"
    d.store.save(original)
    job = _new(d, original)
    assert d.reuse(job, d.layout.upload(job.id)) is job
    original.versions = {"inspect": d.registry.get("inspect").version}
    original.status = JobStatus.FAILED
    d.store.save(original)
    assert d.reuse(job, d.layout.upload(job.id)) is job
    original.status = JobStatus.DONE
    d.store.save(original)
    (d.layout.artifacts(original.id) / THUMB).unlink()  # deleted as it is being reused
    assert d.reuse(job, d.layout.upload(job.id)) is job
    assert not d.layout.artifacts(job.id).exists()  # the half-made links went


def test_a_purge_removes_the_entry_only_if_it_names_the_job(tmp_path: Path) -> None:
    d = _dedupe(tmp_path)
    older = _done_original(d)
    newer = make_job(JobStatus.DONE)
    newer.sha256, newer.processors = older.sha256, older.processors
    d.store.save(newer)
    remember(d.layout, newer)  # the newest job done for those bytes is named
    purge(d.layout, d.store, older.id)
    assert entry_of(d.layout, newer).read_text() == newer.id
    purge(d.layout, d.store, newer.id)
    assert list(d.layout.digests.iterdir()) == []


def test_the_sweep_removes_entries_of_deleted_jobs_old_temp_files_and_empty_folders(
    tmp_path: Path,
) -> None:
    d = _dedupe(tmp_path)
    kept, gone = _done_original(d), _done_original(d)
    d.store.delete(gone.id)  # a purge cut off after the record went
    folder = entry_of(d.layout, kept).parent
    temp, young = folder / ".left.123.456.tmp", folder / ".young.tmp"
    temp.write_text("x")
    young.write_text("x")
    for path in (entry_of(d.layout, kept), entry_of(d.layout, gone), temp):
        _age(path, 60)
    assert remove_dangling(d.layout, d.store) == 2
    assert sorted(p.name for p in folder.iterdir()) == [young.name, entry_of(d.layout, kept).name]
    assert [p.name for p in d.layout.digests.iterdir()] == [folder.name]  # the empty one went
