"""Completion webhooks on a real server, delivered to a real receiver on 127.0.0.1 that
checks every signature with the code docs/webhooks.md gives."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.layout import new_job_id
from app.webhooks.deliveries import SENDER_THREADS
from app.webhooks.sender import Sender
from app.webhooks.targets import TargetPolicy
from tests.helpers import Server, free_port, wait_until
from tests.webhook_receiver import DrippingReceiver, Receiver, documented_verifier

SECRET = "whsec-test-4f9a"  # noqa: S105 - a test server's, made up
BACKOFF_S = 0.5
MAX_ATTEMPTS = 4


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver(SECRET.encode()).start()
    yield rec
    rec.stop()


def _env(receiver_port: int, **more: str) -> dict[str, str]:
    return {
        "HOPPER_WEBHOOK_SECRET": SECRET,
        "HOPPER_WEBHOOK_ALLOWED_HOSTS": f"127.0.0.1:{receiver_port}",
        "HOPPER_WEBHOOK_BACKOFF": str(BACKOFF_S),
        "HOPPER_WEBHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        **more,
    }


@pytest.fixture(scope="module")
def hooked(
    tmp_path_factory: pytest.TempPathFactory, backend: str, receiver: Receiver, plugins_path: Path
) -> Iterator[Server]:
    """A server that may call the receiver (and only it), with the slow test plugins and
    one job worker, so a second job waits in the queue behind a running one."""
    env = _env(receiver.port, PYTHONPATH=str(plugins_path), HOPPER_WORKERS="1")
    srv = Server(data_dir=tmp_path_factory.mktemp("hooks") / "data", env=env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def open_policy(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    """A server with a secret and no allow-list: any public host, nothing private."""
    env = {"HOPPER_WEBHOOK_SECRET": SECRET}
    srv = Server(data_dir=tmp_path_factory.mktemp("open") / "data", env=env).start()
    yield srv
    srv.stop()


def _upload(
    server: Server,
    callback: str | None,
    *,
    as_query: bool = False,
    data: bytes = b"hello webhooks\n",
    processors: str = "inspect",
) -> httpx.Response:
    params = {"processors": processors}
    form = {}
    if callback is not None and as_query:
        params["callback_url"] = callback
    elif callback is not None:
        form["callback_url"] = callback
    return httpx.post(
        f"{server.url}/uploads",
        params=params,
        data=form,
        files={"file": ("w.txt", data, "text/plain")},
        timeout=30,
    )


def _job_with_hook(server: Server, callback: str, **kwargs: Any) -> str:
    response = _upload(server, callback, **kwargs)
    assert response.status_code == 202, response.text
    assert response.json()["webhook"] == {
        "state": "pending",
        "url": callback,
        "round": 1,
        "attempts": [],
    }
    job_id: str = response.json()["id"]
    return job_id


def _settled(server: Server, job_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """The job once its webhook round has ended."""
    return wait_until(
        lambda: server.status(job_id),
        lambda j: j["webhook"] is not None and j["webhook"]["state"] != "pending",
        timeout_s=timeout_s,
    )


def _at(attempt: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(attempt["at"])


def test_a_receiver_failing_twice_gets_the_third_delivery_signed_and_recorded(
    hooked: Server, receiver: Receiver
) -> None:
    receiver.script("/flaky", [500, 500])
    job_id = _job_with_hook(hooked, receiver.url("/flaky"))
    job = _settled(hooked, job_id)
    hook = job["webhook"]
    assert hook["state"] == "delivered"
    assert [a["status"] for a in hook["attempts"]] == [500, 500, 200]
    assert [a["error"] is None for a in hook["attempts"]] == [False, False, True]
    assert "HTTP 500" in hook["attempts"][0]["error"]
    # Backoff: 0.5 s after the first failure, then 1 s after the second.
    first, second, third = map(_at, hook["attempts"])
    assert (second - first).total_seconds() >= BACKOFF_S
    assert (third - second).total_seconds() >= 2 * BACKOFF_S
    got = receiver.deliveries("/flaky")
    assert len(got) == 3
    assert all(d.verified for d in got), "every delivery carries a valid signature"
    assert [d.headers["hopper-delivery"] for d in got] == [f"{job_id}-{n}" for n in (1, 2, 3)]
    assert got[0].headers["content-type"] == "application/json"
    assert got[0].headers["user-agent"].startswith("Hopper/")
    assert got[0].headers["host"] == f"127.0.0.1:{receiver.port}"
    sent = json.loads(got[-1].body)
    assert sent["id"] == job_id and sent["status"] == "done"
    assert sent["result"]["inspect"]["size"] == len(b"hello webhooks\n")
    assert len(sent["webhook"]["attempts"]) == 2  # the record as stored when it was sent


def test_a_tampered_body_or_foreign_secret_fails_the_documented_check(
    hooked: Server, receiver: Receiver
) -> None:
    job_id = _job_with_hook(hooked, receiver.url("/check"), as_query=True)
    assert _settled(hooked, job_id)["webhook"]["state"] == "delivered"
    (delivery,) = receiver.deliveries("/check")
    verify, signature = documented_verifier(), delivery.headers["hopper-signature"]
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", signature)
    assert verify(SECRET.encode(), delivery.body, signature)
    assert not verify(SECRET.encode(), delivery.body + b" ", signature)
    assert not verify(b"another secret", delivery.body, signature)
    stale = re.sub(r"t=(\d+)", lambda m: f"t={int(m[1]) - 600}", signature)
    assert not verify(SECRET.encode(), delivery.body, stale)


def test_redeliver_starts_a_new_round_that_is_recorded(hooked: Server, receiver: Receiver) -> None:
    job_id = _job_with_hook(hooked, receiver.url("/again"))
    assert _settled(hooked, job_id)["webhook"]["state"] == "delivered"
    receiver.script("/again", [503])  # the new round needs a retry too
    response = httpx.post(f"{hooked.url}/jobs/{job_id}/webhook/redeliver", timeout=10)
    assert response.status_code == 202, response.text
    assert response.json()["webhook"]["state"] == "pending"
    assert response.json()["webhook"]["round"] == 2
    hook = _settled(hooked, job_id)["webhook"]
    assert hook["state"] == "delivered"
    assert [(a["round"], a["status"]) for a in hook["attempts"]] == [(1, 200), (2, 503), (2, 200)]
    got = receiver.deliveries("/again")
    assert [d.headers["hopper-delivery"] for d in got] == [f"{job_id}-{n}" for n in (1, 2, 3)]
    assert all(d.verified for d in got)


def test_redeliver_refuses_jobs_without_a_webhook_and_unknown_ids(hooked: Server) -> None:
    plain = _upload(hooked, None).json()["id"]
    hooked.wait_finished(plain)
    response = httpx.post(f"{hooked.url}/jobs/{plain}/webhook/redeliver", timeout=10)
    assert response.status_code == 409
    assert "without a callback_url" in response.json()["detail"]
    unknown = httpx.post(f"{hooked.url}/jobs/{new_job_id()}/webhook/redeliver", timeout=10)
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    ("processor", "code"),
    [("image", "invalid_input"), ("crasher", "crashed")],  # a failure; a dead worker
)
def test_a_failed_job_sends_its_webhook_too(
    hooked: Server, receiver: Receiver, processor: str, code: str
) -> None:
    path = f"/failed-{processor}"
    job_id = _job_with_hook(hooked, receiver.url(path), data=b"not an image", processors=processor)
    assert _settled(hooked, job_id)["webhook"]["state"] == "delivered"
    (delivery,) = receiver.deliveries(path)
    sent = json.loads(delivery.body)
    assert sent["status"] == "failed" and sent["error"]["code"] == code


def test_a_cancelled_job_sends_its_webhook_and_cannot_be_redelivered_while_running(
    hooked: Server, receiver: Receiver
) -> None:
    job_id = _job_with_hook(hooked, receiver.url("/cancelled"), data=b"60", processors="ticker")
    wait_until(lambda: hooked.status(job_id), lambda j: j["status"] == "processing")
    early = httpx.post(f"{hooked.url}/jobs/{job_id}/webhook/redeliver", timeout=10)
    assert early.status_code == 409
    assert "when it finishes" in early.json()["detail"]
    assert httpx.post(f"{hooked.url}/jobs/{job_id}/cancel", timeout=10).status_code == 202
    assert _settled(hooked, job_id)["webhook"]["state"] == "delivered"
    (delivery,) = receiver.deliveries("/cancelled")
    assert json.loads(delivery.body)["status"] == "cancelled"


def test_a_job_cancelled_while_queued_sends_its_webhook_at_once(
    hooked: Server, receiver: Receiver
) -> None:
    """No worker ends this job (the only one is busy for a minute): the cancel does."""
    busy = _upload(hooked, None, data=b"60", processors="ticker").json()["id"]
    wait_until(lambda: hooked.status(busy), lambda j: j["status"] == "processing")
    queued = _job_with_hook(hooked, receiver.url("/queued"), data=b"60", processors="ticker")
    try:
        response = httpx.post(f"{hooked.url}/jobs/{queued}/cancel", timeout=10)
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        assert _settled(hooked, queued, timeout_s=10)["webhook"]["state"] == "delivered"
        assert hooked.status(busy)["status"] == "processing"  # it was not the worker
        (delivery,) = receiver.deliveries("/queued")
        assert json.loads(delivery.body)["status"] == "cancelled"
    finally:
        httpx.post(f"{hooked.url}/jobs/{busy}/cancel", timeout=10)
        hooked.wait_finished(busy)


def test_a_receiver_that_never_succeeds_ends_failed_after_max_attempts(
    hooked: Server, receiver: Receiver
) -> None:
    receiver.script("/down", [500] * 10)
    job_id = _job_with_hook(hooked, receiver.url("/down"))
    hook = _settled(hooked, job_id)["webhook"]
    assert hook["state"] == "failed"
    assert [a["status"] for a in hook["attempts"]] == [500] * MAX_ATTEMPTS
    assert len(receiver.deliveries("/down")) == MAX_ATTEMPTS
    times = [_at(a) for a in hook["attempts"]]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert gaps == sorted(gaps) and gaps[-1] >= 4 * BACKOFF_S  # 0.5, 1, 2 s: doubling


def _nothing_stored(server: Server, before: set[Path]) -> None:
    after = {p for p in server.data_dir.rglob("*") if p.is_file()}
    assert after - before == set()
    assert server.leftovers() == []


def _refused(server: Server, url: str, as_query: bool) -> str:
    before = {p for p in server.data_dir.rglob("*") if p.is_file()}
    response = _upload(server, url, as_query=as_query)
    assert response.status_code == 400, (url, response.text)
    _nothing_stored(server, before)
    detail: str = response.json()["detail"]
    return detail


@pytest.mark.parametrize("as_query", [True, False], ids=["query", "form"])
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:1/hook", "not in HOPPER_WEBHOOK_ALLOWED_HOSTS"),  # another port
        ("http://hooks.example.com/hook", "not in HOPPER_WEBHOOK_ALLOWED_HOSTS"),
        ("ftp://127.0.0.1/hook", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("http://user:secret@127.0.0.1/hook", "user name or password"),
        ("http://127.0.0.1:99999/hook", "not a valid URL"),
    ],
)
def test_callback_urls_off_the_allow_list_get_400_and_leave_nothing(
    hooked: Server, receiver: Receiver, url: str, says: str, as_query: bool
) -> None:
    assert says in _refused(hooked, url, as_query)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8000/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://2130706433/hook",  # 127.0.0.1 as one number
        "http://0.0.0.0/hook",
        "https://224.0.0.1/hook",  # multicast
    ],
)
def test_private_and_reserved_addresses_are_refused_without_an_allow_list(
    open_policy: Server, url: str
) -> None:
    detail = _refused(open_policy, url, as_query=url.startswith("https"))
    assert "private, loopback or reserved" in detail
    if "localhost" in url:
        assert "127.0.0.1" not in detail  # what a name resolves to is not told


@pytest.mark.parametrize("as_query", [True, False], ids=["query", "form"])
def test_callback_url_without_a_secret_gets_400(server: Server, as_query: bool) -> None:
    detail = _refused(server, "https://hooks.example.com/x", as_query)
    assert "HOPPER_WEBHOOK_SECRET is not set" in detail


def test_a_delivery_cut_off_by_kill_9_is_made_after_the_restart(tmp_path: Path) -> None:
    """The receiver is down at first; the server is killed while the round waits out its
    backoff; after the restart the sweep takes the round over and delivers."""
    port = free_port()
    env = _env(port, HOPPER_WEBHOOK_BACKOFF="1", HOPPER_WEBHOOK_MAX_ATTEMPTS="20")
    env["HOPPER_SWEEP_INTERVAL"] = "0.5"
    first = Server(data_dir=tmp_path / "data", env=env).start()
    receiver = Receiver(SECRET.encode(), port=port)
    try:
        job_id = _job_with_hook(first, receiver.url("/late"))
        job = wait_until(lambda: first.status(job_id), lambda j: j["webhook"]["attempts"])
        assert job["status"] == "done"
        assert job["webhook"]["attempts"][0]["status"] is None
        assert "refused" in job["webhook"]["attempts"][0]["error"]
        first.kill()
        receiver.start()
        second = Server(data_dir=tmp_path / "data", env=env).start()
        try:
            restarted = datetime.now().astimezone()
            hook = _settled(second, job_id)["webhook"]
            assert hook["state"] == "delivered"
            assert hook["attempts"][-1]["status"] == 200
            assert _at(hook["attempts"][-1]) > restarted
            assert all(a["status"] is None for a in hook["attempts"][:-1])
            got = receiver.deliveries("/late")
            assert len(got) == 1 and got[0].verified
            assert got[0].headers["hopper-delivery"] == f"{job_id}-{len(hook['attempts'])}"
            assert second.leftovers() == []
        finally:
            second.stop()
    finally:
        first.stop()
        receiver.stop()


# --- receivers that drip their answer ----------------------------------------------------
#
# HOPPER_WEBHOOK_TIMEOUT bounds a whole attempt, not each read: a receiver that sends its
# answer a byte at a time neither stretches an attempt past it nor holds a sender thread
# (nor a shutdown) for as long as it likes.

ATTEMPT_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def dripping() -> Iterator[DrippingReceiver]:
    rec = DrippingReceiver().start()
    yield rec
    rec.stop()


@pytest.fixture(scope="module")
def slow_hooks(
    tmp_path_factory: pytest.TempPathFactory,
    backend: str,
    receiver: Receiver,
    dripping: DrippingReceiver,
) -> Iterator[Server]:
    """Webhooks with a 1 s timeout and one attempt a round, to the dripping receiver or
    the healthy one."""
    env = {
        **_env(receiver.port),
        "HOPPER_WEBHOOK_ALLOWED_HOSTS": f"127.0.0.1:{receiver.port},127.0.0.1:{dripping.port}",
        "HOPPER_WEBHOOK_TIMEOUT": str(ATTEMPT_TIMEOUT_S),
        "HOPPER_WEBHOOK_MAX_ATTEMPTS": "1",
    }
    srv = Server(data_dir=tmp_path_factory.mktemp("slow") / "data", env=env).start()
    yield srv
    srv.stop()


def test_a_dripping_receiver_cannot_stretch_one_send_past_the_timeout(
    dripping: DrippingReceiver,
) -> None:
    sender = Sender(TargetPolicy(f"127.0.0.1:{dripping.port}"), b"s", ATTEMPT_TIMEOUT_S)
    try:
        started = time.monotonic()
        outcome = sender.send(dripping.url("/direct"), b"{}", "direct-1")
        took_s = time.monotonic() - started
    finally:
        sender.close()
    assert not outcome.delivered and outcome.status is None
    assert outcome.error is not None and "timed out" in outcome.error, outcome
    assert ATTEMPT_TIMEOUT_S <= took_s < ATTEMPT_TIMEOUT_S + 1.0, took_s


def test_an_attempt_to_a_dripping_receiver_is_recorded_failed_at_the_timeout(
    slow_hooks: Server, dripping: DrippingReceiver
) -> None:
    job_id = _job_with_hook(slow_hooks, dripping.url("/drip-one"))
    hook = _settled(slow_hooks, job_id)["webhook"]
    (attempt,) = hook["attempts"]
    assert hook["state"] == "failed", hook
    assert attempt["status"] is None
    assert "timed out" in attempt["error"] and "HOPPER_WEBHOOK_TIMEOUT" in attempt["error"]
    assert ATTEMPT_TIMEOUT_S * 1000 <= attempt["duration_ms"] < (ATTEMPT_TIMEOUT_S + 1) * 1000


def test_dripping_receivers_do_not_hold_up_another_job_s_webhook(
    slow_hooks: Server, receiver: Receiver, dripping: DrippingReceiver
) -> None:
    before = len(dripping.arrived)
    drips = [_job_with_hook(slow_hooks, dripping.url(f"/drip-{n}")) for n in range(SENDER_THREADS)]
    # Every sender thread is (or was) on a dripping receiver; then a job with a healthy one.
    wait_until(lambda: len(dripping.arrived), lambda n: n >= before + SENDER_THREADS)
    uploaded = time.time()
    healthy = _job_with_hook(slow_hooks, receiver.url("/healthy"))
    assert _settled(slow_hooks, healthy)["webhook"]["state"] == "delivered"
    (delivery,) = receiver.deliveries("/healthy")
    waited_s = delivery.received_at - uploaded
    assert waited_s < ATTEMPT_TIMEOUT_S + 4, f"the healthy webhook waited {waited_s:.1f} s"
    for job_id in drips:
        assert "timed out" in _settled(slow_hooks, job_id)["webhook"]["attempts"][0]["error"]


@pytest.mark.local_only  # with celery the worker sends it: an API's SIGTERM cuts nothing
def test_sigterm_does_not_wait_for_a_dripping_receiver_and_the_round_resumes(
    tmp_path: Path,
) -> None:
    """The timeout is long (30 s): only the stop can cut this attempt. The attempt cut off
    is not recorded, the round stays pending, and the next server's sweep delivers it."""
    drip = DrippingReceiver().start()
    env = {
        **_env(drip.port),
        "HOPPER_WEBHOOK_TIMEOUT": "30",
        "HOPPER_SWEEP_INTERVAL": "0.5",
    }
    first = Server(data_dir=tmp_path / "data", env=env).start()
    try:
        job_id = _job_with_hook(first, drip.url("/cut"))
        wait_until(lambda: drip.open, lambda n: n == 1)
        assert first.proc is not None
        signalled = time.monotonic()
        first.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            first.proc.wait(30)
        exited_s = time.monotonic() - signalled
        assert first.proc.returncode is not None and exited_s < 6, f"exit took {exited_s:.1f} s"
        stored = first.record(job_id)
        assert stored["status"] == "done"
        assert stored["webhook"]["state"] == "pending"
        assert stored["webhook"]["attempts"] == []  # cut off by the stop: not an attempt
        drip.drip = False
        second = Server(data_dir=tmp_path / "data", env=env).start()
        try:
            hook = _settled(second, job_id)["webhook"]
            assert hook["state"] == "delivered"
            assert [a["status"] for a in hook["attempts"]] == [200]
            assert len(drip.arrived) == 2
        finally:
            second.stop()
    finally:
        first.stop()
        drip.stop()
