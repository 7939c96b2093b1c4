"""Webhook targets (what may be called), signatures, and the timer heap, as pure code."""

from __future__ import annotations

import ipaddress
import threading

import pytest

from app.config import Settings
from app.webhooks.schedule import Timers
from app.webhooks.signature import secret_of, sign, verify
from app.webhooks.targets import CallbackRefused, TargetPolicy, accept_callback, is_public
from tests.webhook_receiver import documented_verifier


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",  # noqa: S104 - an address to refuse, not to bind
        "255.255.255.255",
        "224.0.1.1",  # multicast, though "global"
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "2002:7f00:1::",  # 6to4 around 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 around 10.0.0.1
        "2001:db8::1",  # documentation
        "::7f00:1",  # IPv4-compatible (::/96) around 127.0.0.1
        "::808:808",  # IPv4-compatible, deprecated whatever it carries
        "64:ff9b:1::7f00:1",  # local-use NAT64 (64:ff9b:1::/48) around 127.0.0.1
        "64:ff9b:1::a9fe:a9fe",  # local-use NAT64 around 169.254.169.254
        "fec0::1",  # site-local (deprecated, still routed inside some sites)
        "4000::1",  # reserved: outside 2000::/3, nothing global lives there
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "2001:4860:4860::8888", "64:ff9b::808:808", "64:ff9b:1::808:808", "::ffff:8.8.8.8"],
)
def test_public_addresses_pass(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_the_allow_list_names_hosts_or_host_and_port() -> None:
    policy = TargetPolicy(" hooks.internal , 127.0.0.1:9000,[::1]:8443 ")
    assert policy.parse("https://HOOKS.internal:1234/x?y=1").allowed
    assert policy.parse("http://127.0.0.1:9000/").path == "/"
    assert policy.parse("https://[::1]:8443/h").host_header == "[::1]:8443"
    with pytest.raises(CallbackRefused, match="not in HOPPER_WEBHOOK_ALLOWED_HOSTS"):
        policy.parse("http://127.0.0.1:9001/")
    with pytest.raises(CallbackRefused, match="not in HOPPER_WEBHOOK_ALLOWED_HOSTS"):
        policy.parse("http://example.com/")


@pytest.mark.parametrize("entry", ["http://x", "a:b", "user@host", "host/path"])
def test_a_malformed_allow_list_entry_stops_the_start(entry: str) -> None:
    with pytest.raises(ValueError, match="HOPPER_WEBHOOK_ALLOWED_HOSTS"):
        TargetPolicy(entry)


def test_an_allowed_host_may_be_private_and_is_called_at_its_checked_address() -> None:
    policy = TargetPolicy("localhost:8080")
    target = policy.parse("http://localhost:8080/hook?a=1")
    address = policy.resolve(target)
    assert address.is_loopback
    assert target.url_for(address).endswith(f"{address}:8080/hook?a=1".replace("::1", "[::1]"))
    assert target.host_header == "localhost:8080"
    with pytest.raises(CallbackRefused, match="private, loopback or reserved"):
        TargetPolicy("").check("http://localhost:8080/hook")


def test_no_secret_no_callbacks() -> None:
    assert secret_of(Settings(webhook_secret=None)) is None
    assert secret_of(Settings(webhook_secret="")) is None  # an empty variable: unset
    with pytest.raises(CallbackRefused, match="HOPPER_WEBHOOK_SECRET is not set"):
        accept_callback("https://example.com/", Settings())


def test_the_signature_is_stripe_style_and_the_documented_check_accepts_it() -> None:
    body = b'{"id":"x"}'
    header = sign(b"s3cret", body, timestamp=1_700_000_000)
    t, v1 = header.split(",")
    assert t == "t=1700000000" and v1.startswith("v1=") and len(v1) == 3 + 64
    fresh = sign(b"s3cret", body)
    assert verify(b"s3cret", body, fresh)
    assert documented_verifier()(b"s3cret", body, fresh)
    assert not verify(b"s3cret", body + b"\n", fresh)
    assert not verify(b"s3cret", body, header)  # 2023: far outside the tolerance
    assert not verify(b"s3cret", body, "v1=" + v1[3:])


def test_timers_fire_in_due_order_on_one_thread() -> None:
    fired: list[str] = []
    done = threading.Event()

    def run(key: str) -> None:
        fired.append(key)
        if len(fired) == 3:
            done.set()

    timers = Timers(run, name="test-timers")
    timers.start()
    try:
        timers.after(0.2, "late")
        timers.after(0.0, "now")
        timers.after(0.1, "soon")
        assert done.wait(5)
        assert fired == ["now", "soon", "late"]
    finally:
        timers.stop()
