"""Live status for programs: Server-Sent Events per job and for many jobs, and /jobs."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from app.web.pages import JOBS_PER_PAGE
from tests import samples
from tests.helpers import Server, curl_upload


def _events(url: str, timeout_s: float = 60) -> list[tuple[str, dict[str, object]]]:
    """Read a whole event stream (it ends by itself) into (event, data) pairs."""
    events: list[tuple[str, dict[str, object]]] = []
    with httpx.stream("GET", url, timeout=timeout_s) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    return events


def _upload(server: Server, path: Path, processors: str = "inspect") -> str:
    status, _, body = curl_upload(f"{server.url}/uploads?processors={processors}", path)
    assert status == 202
    return str(body["id"])


def test_job_events_stream_every_change_and_end_when_finished(
    server: Server, tmp_path: Path
) -> None:
    path = tmp_path / "heavy.bin"
    path.write_bytes(b"\x05" * (32 << 20))
    job_id = _upload(server, path, "checksums,checksums")
    events = _events(f"{server.url}/status/{job_id}/events")
    statuses = [e[1]["status"] for e in events]
    assert statuses[-1] == "done"
    assert all(name == "job" for name, _ in events)
    progress = [float(str(e[1]["progress"])) for e in events]
    assert progress == sorted(progress)  # never goes back


def test_one_stream_follows_many_jobs_and_names_unknown_ones(
    server: Server, tmp_path: Path
) -> None:
    ids = [_upload(server, samples.png(tmp_path / f"{i}.png")) for i in range(3)]
    unknown = "AAAAAAAAAAAAAAAAAAAAAA"
    events = _events(f"{server.url}/status/events?ids={','.join([*ids, unknown])}")
    finished = {str(d["id"]) for name, d in events if name == "job" and d["status"] == "done"}
    assert finished == set(ids)
    assert ("missing", {"id": unknown}) in events


def test_events_refuse_bad_ids(server: Server) -> None:
    assert httpx.get(f"{server.url}/status/events?ids=../x").status_code == 400
    assert httpx.get(f"{server.url}/status/AAAAAAAAAAAAAAAAAAAAAA/events").status_code == 404


def test_jobs_list_is_newest_first_as_html_and_json(server: Server, tmp_path: Path) -> None:
    first = _upload(server, samples.csv_file(tmp_path / "first.csv", "a\n1\n"))
    second = _upload(server, samples.csv_file(tmp_path / "second.csv", "a\n2\n"))
    listed = httpx.get(f"{server.url}/jobs", headers={"Accept": "application/json"}).json()
    ids = [job["id"] for job in listed["jobs"]]
    assert ids.index(second) < ids.index(first)
    page = httpx.get(f"{server.url}/jobs", headers={"Accept": "text/html"})
    assert page.text.index("second.csv") < page.text.index("first.csv")


def test_the_jobs_list_as_json_is_paged_for_hopper_ls(tmp_path: Path) -> None:
    srv = Server(data_dir=tmp_path / "data").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            made = set()
            for n in range(JOBS_PER_PAGE + 1):
                files = {"file": (f"{n}.txt", f"job {n}\n".encode())}
                response = client.post("/uploads?processors=inspect", files=files)
                assert response.status_code == 202, response.text
                made.add(response.json()["id"])
            json_please = {"Accept": "application/json"}
            pages = [client.get(f"/jobs?page={n}", headers=json_please) for n in (1, 2, 3)]
            bad = client.get("/jobs?page=0", headers=json_please)
    finally:
        srv.stop()
    bodies = [page.json() for page in pages]
    assert [b["page"] for b in bodies] == [1, 2, 3]
    assert [len(b["jobs"]) for b in bodies] == [JOBS_PER_PAGE, 1, 0]
    assert [b["has_next"] for b in bodies] == [True, False, False]
    listed = [job["id"] for b in bodies for job in b["jobs"]]
    assert len(listed) == len(set(listed)) and set(listed) == made  # each once, none lost
    assert bad.status_code == 400 and "page" in bad.json()["detail"]


def test_static_files_are_cached_and_scripts_are_modules(server: Server) -> None:
    response = httpx.get(f"{server.url}/static/upload.js")
    assert response.headers["cache-control"].startswith("public")
    assert "javascript" in response.headers["content-type"]


def test_many_open_streams_cost_no_thread_each_and_do_not_block_uploads(
    tmp_path: Path, sample: Path
) -> None:
    heavy = tmp_path / "heavy.bin"
    heavy.write_bytes(b"\x04" * (16 << 20))
    srv = Server(data_dir=tmp_path / "data", env={"HASH_ROUNDS": "40"}).start()
    try:
        job_id = _upload(srv, heavy, "checksums")  # runs for a while: streams stay open
        assert srv.proc is not None
        threads_before = _threads(srv.proc.pid)
        with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=300)) as client:
            streams = [
                client.stream("GET", f"{srv.url}/status/{job_id}/events") for _ in range(200)
            ]
            opened = [s.__enter__() for s in streams]
            try:
                assert all(r.status_code == 200 for r in opened)
                assert _threads(srv.proc.pid) < threads_before + 10
                status, _, body = curl_upload(f"{srv.url}/uploads?processors=inspect", sample)
                assert status == 202
                assert srv.wait_finished(body["id"], timeout_s=30)["status"] == "done"
            finally:
                for stream in streams:
                    stream.__exit__(None, None, None)
    finally:
        srv.stop()


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")
