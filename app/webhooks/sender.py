"""One delivery attempt: POST the signed job document to the checked address."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from app import __version__
from app.webhooks.signature import HEADER, sign
from app.webhooks.targets import CallbackRefused, TargetPolicy


@dataclass(frozen=True)
class Outcome:
    status: int | None  # the receiver's HTTP status; None if none came
    error: str | None
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.error is None


class Sender:
    def __init__(self, policy: TargetPolicy, secret: bytes, timeout_s: float) -> None:
        self._policy, self._secret, self._timeout_s = policy, secret, timeout_s
        # No proxy from the environment (it would connect, not us, to an unchecked
        # address), no redirects (to anywhere at all), and no kept-alive connections: a
        # TLS connection checked for one host name must not carry another's request.
        self._client = httpx.Client(
            timeout=timeout_s,
            trust_env=False,
            follow_redirects=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def send(self, url: str, body: bytes, delivery_id: str) -> Outcome:
        """Never raises for anything the network or the receiver does. Blocks."""
        started = time.perf_counter()
        status, error = None, None
        try:
            status = self._post(url, body, delivery_id)
            if not 200 <= status < 300:
                error = f"The receiver answered HTTP {status}."
        except CallbackRefused as exc:  # DNS changed since the upload
            error = exc.detail
        except httpx.TimeoutException:
            error = f"No answer within {self._timeout_s:g} s (HOPPER_WEBHOOK_TIMEOUT)."
        except httpx.HTTPError as exc:
            error = f"The request failed: {exc or type(exc).__name__}."
        duration_ms = round((time.perf_counter() - started) * 1000)
        return Outcome(status, error, duration_ms)

    def close(self) -> None:
        self._client.close()

    def _post(self, url: str, body: bytes, delivery_id: str) -> int:
        target = self._policy.parse(url)
        address = self._policy.resolve(target)
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json",
            "User-Agent": f"Hopper/{__version__}",
            "Hopper-Delivery": delivery_id,
            HEADER: sign(self._secret, body),
        }
        # The certificate is checked against the host name (SNI), not the address.
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        request = self._client.build_request(
            "POST", target.url_for(address), content=body, headers=headers, extensions=extensions
        )
        response = self._client.send(request, stream=True)  # the body is never read
        response.close()
        return response.status_code
