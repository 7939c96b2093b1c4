"""HOPPER_AUTH=keys on a real server: every route in the OpenAPI spec with no key, a wrong
key, another owner's key and the right one; scopes; revoke; the key file; curl."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.layout import new_job_id
from tests import samples
from tests.helpers import Server, curl_upload, wait_until
from tests.keys import bearer, hopper, make_key

OPEN, UPLOAD, READ, ADMIN = "open", "upload", "read", "admin"
# What each route needs. A route in the spec that is missing here fails the suite: a new
# route must say who may call it.
RULES: dict[tuple[str, str], str] = {
    ("POST", "/uploads"): UPLOAD,
    ("PUT", "/uploads/raw"): UPLOAD,
    ("POST", "/uploads/raw"): UPLOAD,
    ("GET", "/status/{job_id}"): READ,
    ("GET", "/status/{job_id}/events"): READ,
    ("GET", "/status/events"): READ,
    ("GET", "/processors"): READ,
    ("GET", "/jobs/{job_id}/artifacts/{name}"): READ,
    ("GET", "/jobs/{job_id}/file"): READ,
    ("POST", "/jobs/{job_id}/cancel"): UPLOAD,
    ("DELETE", "/jobs/{job_id}"): UPLOAD,
    ("POST", "/jobs/{job_id}/webhook/redeliver"): UPLOAD,
    ("GET", "/"): READ,
    ("GET", "/jobs/{job_id}"): READ,
    ("GET", "/jobs"): READ,
    ("GET", "/healthz"): OPEN,
    ("GET", "/readyz"): OPEN,
    ("GET", "/metrics"): ADMIN,
    ("GET", "/login"): OPEN,
    ("POST", "/login"): OPEN,
    ("POST", "/logout"): OPEN,
    ("OPTIONS", "/files/"): OPEN,  # tus discovery: what the server offers
    ("POST", "/files/"): UPLOAD,
    ("HEAD", "/files/{job_id}"): UPLOAD,
    ("PATCH", "/files/{job_id}"): UPLOAD,
    ("DELETE", "/files/{job_id}"): UPLOAD,
}
TUS = {"Tus-Resumable": "1.0.0"}
WRONG_KEY = "hop_AAAAAAAAAA_" + "x" * 43


@dataclass(frozen=True)
class Keys:
    owner: str
    other: str
    admin: str
    reader: str
    uploader: str


@dataclass(frozen=True)
class Setup:
    server: Server
    keys: Keys
    job: dict[str, Any]  # the owner's finished image job, with a thumbnail
    doomed: str  # the owner's job the DELETE row removes


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("keys")
    data = root / "data"
    keys = Keys(
        owner=make_key(data, "owner"),
        other=make_key(data, "other"),
        admin=make_key(data, "ops", "admin"),
        reader=make_key(data, "reader", "read"),
        uploader=make_key(data, "uploader", "upload"),
    )
    server = Server(data_dir=data, env={"HOPPER_AUTH": "keys"}).start()
    try:
        image = samples.png(root / "photo.png", size=(64, 48))
        job = _finished(server, keys.owner, _upload(server, keys.owner, image.read_bytes()))
        doomed = _upload(server, keys.owner, b"delete me")
        _finished(server, keys.owner, doomed)
        yield Setup(server, keys, job, doomed)
    finally:
        server.stop()


def _upload(server: Server, key: str, data: bytes, **headers: str) -> str:
    response = httpx.post(
        f"{server.url}/uploads",
        files={"file": ("f.bin", data)},
        headers={**bearer(key), **headers},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def _finished(server: Server, key: str, job_id: str) -> dict[str, Any]:
    def fetch() -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(
            f"{server.url}/status/{job_id}", headers=bearer(key), timeout=10
        ).json()
        return body

    return wait_until(fetch, lambda j: j.get("status") in ("done", "failed"), timeout_s=60)


def _spec_routes(server: Server) -> set[tuple[str, str]]:
    spec = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    return {(m.upper(), path) for path, item in spec["paths"].items() for m in item}


def _call(s: Setup, method: str, path: str, key: str | None) -> httpx.Response:
    job_id = s.doomed if method == "DELETE" else s.job["id"]
    if path == "/files/{job_id}" and method == "DELETE":  # an unfinished upload to terminate
        job_id = _tus_upload(s, s.keys.owner)
    url = s.server.url + path.replace("{job_id}", job_id).replace("{name}", "thumbnail.webp")
    kwargs: dict[str, Any] = {}
    if path == "/uploads/raw":
        kwargs["content"] = b"raw table"
    if path == "/uploads":
        kwargs["files"] = {"file": ("t.txt", b"table", "text/plain")}
    elif path == "/login" and method == "POST":
        kwargs["data"] = {"key": s.keys.owner, "next": "/jobs"}
    elif path == "/status/events":
        kwargs["params"] = {"ids": job_id}
    headers = {"Accept": "application/json", **(bearer(key) if key else {})}
    if path.startswith("/files/"):  # tus: PATCH a finished upload at its end, which is a no-op
        headers |= {**TUS, "Upload-Length": "5", "Upload-Offset": str(s.job["size"])}
        headers["Content-Type"] = "application/offset+octet-stream"
    return httpx.request(method, url, headers=headers, timeout=20, **kwargs)


def _tus_upload(s: Setup, key: str) -> str:
    response = httpx.post(
        f"{s.server.url}/files/", headers={**TUS, "Upload-Length": "5", **bearer(key)}
    )
    assert response.status_code == 201, response.text
    upload_id: str = response.headers["location"].rsplit("/", 1)[1]
    return upload_id


def _ok(path: str, response: httpx.Response) -> bool:
    if path.endswith("/cancel") and response.status_code == 409:
        return True  # the right key, but the job has already finished
    if path.endswith("/redeliver") and response.status_code == 409:
        return True  # the right key, but the job has no callback_url (no secret either)
    return 200 <= response.status_code < 400


def test_every_route_in_the_openapi_spec_has_an_access_rule(setup: Setup) -> None:
    routes = _spec_routes(setup.server)
    assert routes - RULES.keys() == set(), "routes with no rule in RULES: say who may call them"
    assert RULES.keys() - routes == set(), "rules for routes the spec no longer has"


@pytest.mark.parametrize(("method", "path"), sorted(RULES))
def test_route_answers_no_key_wrong_key_other_owner_and_right_key(
    setup: Setup, method: str, path: str
) -> None:
    rule = RULES[(method, path)]
    right = setup.keys.admin if rule == ADMIN else setup.keys.owner
    unknown = httpx.get(
        f"{setup.server.url}/status/{new_job_id()}", headers=bearer(setup.keys.owner)
    ).json()
    answers = {
        who: _call(setup, method, path, key)
        for who, key in (
            ("none", None),
            ("wrong", WRONG_KEY),
            ("other", setup.keys.other),
            ("right", right),
        )
    }
    if rule == OPEN:
        for who, response in answers.items():
            assert _ok(path, response), (who, response.status_code, response.text)
        return
    for who in ("none", "wrong"):
        response = answers[who]
        assert response.status_code == 401, (who, response.status_code, response.text)
        assert response.headers["www-authenticate"] == 'Bearer realm="hopper"'
        if method != "HEAD":  # a HEAD answer has no body
            assert "API key" in response.json()["detail"]
    other = answers["other"]
    if rule == ADMIN:
        assert other.status_code == 403, other.text
    elif path == "/status/events":  # another owner's id is reported as missing
        assert other.status_code == 200 and "event: missing" in other.text, other.text
        assert setup.job["sha256"] not in other.text
    elif "{job_id}" in path:
        assert other.status_code == 404, other.text
        if method != "HEAD":
            assert other.json() == unknown  # exactly like an id that does not exist
    else:
        assert _ok(path, other), (other.status_code, other.text)
    assert _ok(path, answers["right"]), (answers["right"].status_code, answers["right"].text)


def test_a_key_without_the_scope_gets_403(setup: Setup) -> None:
    url, job_id, keys = setup.server.url, setup.job["id"], setup.keys
    refused = [
        httpx.post(f"{url}/uploads", files={"file": ("a", b"a")}, headers=bearer(keys.reader)),
        httpx.put(f"{url}/uploads/raw", content=b"a", headers=bearer(keys.reader)),
        httpx.post(f"{url}/jobs/{job_id}/cancel", headers=bearer(keys.reader)),
        httpx.post(f"{url}/jobs/{job_id}/webhook/redeliver", headers=bearer(keys.reader)),
        httpx.get(f"{url}/status/{job_id}", headers=bearer(keys.uploader)),
        httpx.get(f"{url}/jobs", headers=bearer(keys.uploader)),
        httpx.get(f"{url}/metrics", headers=bearer(keys.owner)),
    ]
    for response in refused:
        assert response.status_code == 403, response.text
        assert "scope" in response.json()["detail"]
    # Read-only still reads: an admin sees every owner's job, a reader none of them.
    assert httpx.get(f"{url}/status/{job_id}", headers=bearer(keys.admin)).status_code == 200
    assert httpx.get(f"{url}/status/{job_id}", headers=bearer(keys.reader)).status_code == 404


def test_x_api_key_header_and_curl_with_a_bearer_key(setup: Setup, sample: Path) -> None:
    url, keys = setup.server.url, setup.keys
    got = httpx.get(f"{url}/status/{setup.job['id']}", headers={"X-API-Key": keys.owner})
    assert got.status_code == 200 and got.json()["owner"] == _key_id(keys.owner)
    auth = f"Authorization: Bearer {keys.other}"
    code, _, job = curl_upload(f"{url}/uploads", sample, "-H", auth)
    assert code == 202 and job["owner"] == _key_id(keys.other)
    code, headers, _ = curl_upload(f"{url}/uploads", sample)
    assert code == 401 and headers["www-authenticate"] == 'Bearer realm="hopper"'


def test_the_job_list_and_multi_job_events_show_only_the_callers_jobs(setup: Setup) -> None:
    url, keys = setup.server.url, setup.keys
    mine = _upload(setup.server, keys.other, b"mine")
    _finished(setup.server, keys.other, mine)

    def listed(key: str) -> set[str]:
        body = httpx.get(f"{url}/jobs", headers={**bearer(key), "Accept": "application/json"})
        return {j["id"] for j in body.json()["jobs"]}

    assert mine in listed(keys.other) and setup.job["id"] not in listed(keys.other)
    assert {mine, setup.job["id"]} <= listed(keys.admin)
    ids = f"{mine},{setup.job['id']}"
    stream = httpx.get(f"{url}/status/events", params={"ids": ids}, headers=bearer(keys.other))
    assert f"id: {mine}" in stream.text
    assert f'event: missing\ndata: {{"id": "{setup.job["id"]}"}}' in stream.text


def test_an_idempotency_key_never_replays_another_owners_job(setup: Setup) -> None:
    first = _upload(setup.server, setup.keys.owner, b"one", **{"Idempotency-Key": "same-key"})
    again = _upload(setup.server, setup.keys.owner, b"one", **{"Idempotency-Key": "same-key"})
    theirs = _upload(setup.server, setup.keys.other, b"two", **{"Idempotency-Key": "same-key"})
    assert first == again and theirs != first


def test_revoke_takes_effect_at_the_next_request(setup: Setup) -> None:
    url, data_dir = setup.server.url, setup.server.data_dir
    key = make_key(data_dir, "short-lived", "read")
    assert httpx.get(f"{url}/processors", headers=bearer(key)).status_code == 200
    done = hopper(data_dir, "keys", "revoke", "short-lived")
    assert done.returncode == 0, done.stderr
    refused = httpx.get(f"{url}/processors", headers=bearer(key))  # no restart, no wait
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    listing = hopper(data_dir, "keys", "list").stdout
    line = next(row for row in listing.splitlines() if "short-lived" in row)
    assert line.rstrip().endswith("UTC") and line.count("UTC") == 2  # created and revoked


def test_the_key_file_holds_digests_never_a_key(setup: Setup) -> None:
    path = setup.server.data_dir / "apikeys.json"
    text = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for key in (setup.keys.owner, setup.keys.admin):
        secret = key[len("hop_") + 11 :]
        grep = subprocess.run(["grep", "-rF", secret, str(setup.server.data_dir)], check=False)
        assert grep.returncode == 1  # not in the key file, nor anywhere in the data dir
        assert hashlib.sha256(key.encode()).hexdigest() in text
    listing = hopper(setup.server.data_dir, "keys", "list").stdout
    assert "sha256" not in listing and not any(len(w) == 64 for w in listing.split())
    stored = json.loads(text)["keys"]
    assert {k["name"] for k in stored} >= {"owner", "other", "ops", "reader", "uploader"}


def test_docs_static_and_health_need_no_key(setup: Setup) -> None:
    for path in ("/docs", "/openapi.json", "/static/hopper.css", "/healthz", "/login"):
        assert httpx.get(f"{setup.server.url}{path}").status_code == 200, path


def test_with_auth_off_jobs_have_no_owner_and_no_key_is_asked(server: Server) -> None:
    response = httpx.post(f"{server.url}/uploads", files={"file": ("a.txt", b"a")})
    assert response.status_code == 202 and response.json()["owner"] is None
    assert httpx.get(f"{server.url}/metrics").status_code == 200


def _key_id(key: str) -> str:
    return key[len("hop_") : len("hop_") + 10]


def test_request_log_lines_name_the_key_by_id_never_the_key(setup: Setup) -> None:
    httpx.get(f"{setup.server.url}/processors", headers=bearer(setup.keys.reader))
    lines = [json.loads(line) for line in setup.server.log().splitlines() if line.startswith("{")]
    assert any(line.get("key_id") == _key_id(setup.keys.reader) for line in lines)
    for key in (setup.keys.owner, setup.keys.reader, setup.keys.admin):
        assert key[len("hop_") + 11 :] not in setup.server.log()
