"""For operators, on a real server: /healthz, /readyz turning 503 with the failing check
named, /metrics in Prometheus format with counters that move, and JSON log lines that
carry the request id sent back in X-Request-ID."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ROOT, Server, running, wait_until

HOSTILE_ID = "a b;<script>" * 10  # spaces, markup, too long: not an id to log or echo


def _samples(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{server.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_healthz_and_readyz_answer_on_a_healthy_server(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {
        "data_dir": "ok",
        "disk": "ok",
        "store": "ok",
        "workers": "ok",
    }
    assert server.leftovers() == []  # the write probe leaves nothing


def test_readyz_names_a_disk_under_the_reserve(tmp_path: Path) -> None:
    huge = str(1 << 60)  # more free space than any disk has
    with running(tmp_path / "data", HOPPER_MIN_FREE_BYTES=huge) as server:
        ready = httpx.get(f"{server.url}/readyz")
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # alive, not ready
    assert ready.status_code == 503
    assert ready.headers["retry-after"]
    body = ready.json()
    assert body["checks"]["disk"] != "ok" and body["checks"]["data_dir"] == "ok"
    assert "disk:" in body["detail"] and "HOPPER_MIN_FREE_BYTES" in body["detail"]


@contextlib.contextmanager
def _immutable(folder: Path) -> Iterator[None]:
    """No new entries in `folder`, even for root (which ignores permission bits)."""
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this file system")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_readyz_names_a_read_only_data_dir(tmp_path: Path) -> None:
    with running(tmp_path / "data") as server:
        with _immutable(server.data_dir):
            ready = httpx.get(f"{server.url}/readyz")
        again = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["data_dir"].startswith("cannot create a file")
    assert "data_dir:" in ready.json()["detail"]
    assert again.status_code == 200  # ready again by itself


def test_metrics_count_uploads_bytes_jobs_and_responses(server: Server) -> None:
    before = _samples(server)
    data = b"m" * 5000
    response = httpx.post(f"{server.url}/uploads", files={"file": ("m.bin", data)})
    assert response.status_code == 202
    server.wait_finished(response.json()["id"])
    refused = httpx.post(f"{server.url}/uploads", content=b"x", headers={"content-type": "a/b"})
    assert refused.status_code == 415
    assert httpx.get(f"{server.url}/status/{'A' * 22}").status_code == 404
    done = ("hopper_jobs_finished_total", (("status", "done"),))
    # The job is counted just after its record says done (with celery, by its worker).
    after = wait_until(lambda: _samples(server), lambda s: s.get(done, 0) > before.get(done, 0))

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("hopper_uploads_total", code="202") == 1
    assert moved("hopper_uploads_total", code="415") == 1
    assert moved("hopper_upload_bytes_total") == len(data)
    assert moved("hopper_upload_duration_seconds_count") == 2
    assert moved("hopper_jobs_finished_total", status="done") == 1
    assert moved("hopper_job_duration_seconds_count", processor="inspect") == 1
    assert moved("hopper_job_duration_seconds_bucket", processor="inspect", le="+Inf") == 1
    assert moved("hopper_job_duration_seconds_sum", processor="inspect") > 0
    assert moved("hopper_http_responses_total", route="/uploads", code="415") == 1, after
    assert moved("hopper_http_responses_total", route="/status/{job_id}", code="404") == 1
    assert after[("hopper_disk_free_bytes", ())] > 0
    assert ("hopper_queue_depth", ()) in after


def test_each_request_has_an_id_and_one_json_log_line(tmp_path: Path) -> None:
    with running(tmp_path / "data") as server:
        mine = httpx.get(f"{server.url}/healthz", headers={"X-Request-ID": "trace-42"})
        made = httpx.get(f"{server.url}/healthz")
        hostile = httpx.get(f"{server.url}/healthz", headers={"X-Request-ID": HOSTILE_ID})
        upload = httpx.post(f"{server.url}/uploads", files={"file": ("l.txt", b"secret")})
        job_id = upload.json()["id"]
        server.wait_finished(job_id)
        log = server.log() + server.worker_log()  # with celery, the job's lines are a worker's
    assert mine.headers["x-request-id"] == "trace-42"
    assert len(made.headers["x-request-id"]) == 16
    assert len(hostile.headers["x-request-id"]) == 16  # replaced, never echoed
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["message"] == "request"]
    assert {"request_id": "trace-42", "path": "/healthz", "status": 200}.items() <= next(
        line for line in requests if line["request_id"] == "trace-42"
    ).items()
    upload_line = next(line for line in requests if line.get("job_id") == job_id)
    assert upload_line["request_id"] == upload.headers["x-request-id"]
    job_lines = [line for line in lines if line.get("job_id") == job_id]
    assert any(line["message"] == "job finished" for line in job_lines), job_lines
    assert "secret" not in log  # file contents are never logged


_SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}


def test_the_grafana_dashboard_plots_only_metrics_that_exist(server: Server) -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    plotted = {name for expr in exprs for name in re.findall(r"hopper_[a-z_]+", expr)}
    text = httpx.get(f"{server.url}/metrics").text
    exposed = {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in _SUFFIXES[family.type]
    }
    assert plotted and plotted <= exposed, plotted - exposed


def test_an_unexpected_error_is_a_json_500_with_its_request_id_in_the_log(tmp_path: Path) -> None:
    with running(tmp_path / "data") as server:
        upload = httpx.post(f"{server.url}/uploads", files={"file": ("c.txt", b"corrupt me")})
        job_id = upload.json()["id"]
        server.wait_finished(job_id)
        server.set_record(job_id, '{"status":"done","id":' + json.dumps(job_id) + ', "nonsense": [')
        broken = httpx.get(f"{server.url}/jobs/{job_id}", headers={"X-Request-ID": "oops-1"})
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # still serving
        server.set_record(job_id, None)  # the test made this record; leave nothing odd
        log = server.log()
    assert broken.status_code == 500
    assert broken.headers["x-request-id"] == "oops-1"
    assert broken.json() == {"detail": "Internal error; the server log has details."}
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    error = next(line for line in lines if line["level"] == "ERROR")
    assert error["request_id"] == "oops-1" and "Traceback" in error["exception"]
