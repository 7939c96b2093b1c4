"""The Hopper-Signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256>`, Stripe's scheme.

The MAC covers `f"{t}."` and then the body, so a captured delivery cannot be replayed
later with a new timestamp; receivers refuse a `t` far from their clock (docs/webhooks.md).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from app.config import Settings

HEADER = "Hopper-Signature"
TOLERANCE_S = 300  # what docs/webhooks.md tells receivers to accept


def secret_of(settings: Settings) -> bytes | None:
    """HOPPER_WEBHOOK_SECRET as bytes; None when unset or empty (then nothing is sent)."""
    secret = settings.webhook_secret
    value = "" if secret is None else secret.get_secret_value()
    return value.encode() if value else None


def sign(secret: bytes, body: bytes, timestamp: int | None = None) -> str:
    """The header's value for `body`, signed now (or at `timestamp`)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_mac(secret, t, body)}"


def verify(secret: bytes, body: bytes, header: str, tolerance_s: float = TOLERANCE_S) -> bool:
    """What a receiver does: a fresh timestamp and a matching v1 (any of several)."""
    fields = [part.partition("=") for part in header.split(",")]
    stamps = [value for key, _, value in fields if key.strip() == "t"]
    macs = [value.strip() for key, _, value in fields if key.strip() == "v1"]
    if len(stamps) != 1 or not stamps[0].strip().isdigit():
        return False
    t = int(stamps[0])
    if abs(time.time() - t) > tolerance_s:
        return False
    expected = _mac(secret, t, body)
    return any(hmac.compare_digest(expected, mac) for mac in macs)


def _mac(secret: bytes, t: int, body: bytes) -> str:
    return hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
