"""Which callback URLs Hopper calls: http(s), no userinfo, allowed hosts, public addresses.

A callback URL is checked when it is uploaded, and its host is resolved and checked again
before every attempt, which then connects to the address just checked: a name that was
public at upload time and points at 127.0.0.1 now (DNS rebinding) is not called, and
neither is a redirect (attempts never follow one).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.config import Settings
from app.errors import HopperError
from app.webhooks.signature import secret_of

MAX_URL_CHARS = 2048
SCHEMES = {"http": 80, "https": 443}
ALLOWED_HOSTS_SETTING = "HOPPER_WEBHOOK_ALLOWED_HOSTS"
# IPv6 prefixes that carry an IPv4 address, in their last 32 bits, that a gateway would
# forward to: NAT64's well-known prefix (RFC 6052) and its local-use range (RFC 8215).
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
# IPv4-compatible addresses (::a.b.c.d, deprecated): some stacks still reach the IPv4 one.
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CallbackRefused(HopperError):
    """A callback_url Hopper will not call; at upload time, a 400."""

    status_code = 400


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str  # lower case; an IPv6 literal without its brackets
    port: int
    path: str  # path and query, as the request line sends them
    allowed: bool  # named in HOPPER_WEBHOOK_ALLOWED_HOSTS: private addresses are fine

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if SCHEMES[self.scheme] == self.port else f"{host}:{self.port}"

    def url_for(self, address: IPAddress) -> str:
        """The URL with the checked address in place of the name, so nothing resolves
        the name again between the check and the connection."""
        shown = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{shown}:{self.port}{self.path}"


class TargetPolicy:
    """HOPPER_WEBHOOK_ALLOWED_HOSTS: `host` (any port) or `host:port`, comma-separated."""

    def __init__(self, allowed_hosts: str) -> None:
        self._allowed: set[tuple[str, int | None]] = set()
        for entry in filter(None, (e.strip() for e in allowed_hosts.split(","))):
            self._allowed.add(_host_and_port(entry))

    def check(self, url: str) -> Target:
        """parse() and resolve(): what an upload's callback_url must pass."""
        target = self.parse(url)
        self.resolve(target)
        return target

    def parse(self, url: str) -> Target:
        if len(url) > MAX_URL_CHARS:
            raise CallbackRefused(f"callback_url is longer than {MAX_URL_CHARS} characters.")
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            raise CallbackRefused("callback_url is not a valid URL.") from None
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise CallbackRefused("callback_url must be an http:// or https:// URL.")
        if parts.username is not None or parts.password is not None:
            raise CallbackRefused(
                "callback_url must not carry a user name or password; the signature "
                "(Hopper-Signature) proves the call is Hopper's."
            )
        host = parts.hostname
        if not host:
            raise CallbackRefused("callback_url has no host.")
        port = port or SCHEMES[scheme]
        allowed = (host, None) in self._allowed or (host, port) in self._allowed
        if self._allowed and not allowed:
            raise CallbackRefused(
                f"This server does not call {host}:{port}: it is not in {ALLOWED_HOSTS_SETTING}."
            )
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return Target(url.strip(), scheme, host, port, path, allowed)

    def resolve(self, target: Target) -> IPAddress:
        """The address to connect to: the host's first, once all of them are checked.
        Blocks for the DNS lookup."""
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise CallbackRefused(
                f"callback_url's host {target.host} could not be resolved; check the name."
            ) from None
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        if not target.allowed and not all(map(is_public, addresses)):
            # The address itself is not named: the answer must not map the private network.
            raise CallbackRefused(
                f"callback_url's host {target.host} has a private, loopback or reserved "
                f"address; this server calls only public hosts, or those in "
                f"{ALLOWED_HOSTS_SETTING}."
            )
        return addresses[0]


def accept_callback(url: str, settings: Settings) -> str:
    """An upload's callback_url, once Hopper can sign for it and may call it; blocks for
    the DNS lookup. CallbackRefused (400) otherwise."""
    if secret_of(settings) is None:
        raise CallbackRefused(
            "This server sends no webhooks: HOPPER_WEBHOOK_SECRET is not set. Upload "
            "without callback_url, or ask its operator to set one."
        )
    return TargetPolicy(settings.webhook_allowed_hosts).check(url).url


def is_public(address: IPAddress) -> bool:
    """Globally routable unicast, including any IPv4 address an IPv6 one carries."""
    if isinstance(address, ipaddress.IPv6Address):
        # An address that carries an IPv4 one is what that one is (NAT64 prefixes sit in
        # ::/8, which is reserved: the check comes first).
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and any(address in prefix for prefix in _NAT64):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(embedded)
        if address in _IPV4_COMPATIBLE or address.is_site_local:
            return False
    return address.is_global and not (address.is_multicast or address.is_reserved)


def _host_and_port(entry: str) -> tuple[str, int | None]:
    problem = ValueError(f"{ALLOWED_HOSTS_SETTING}: {entry!r} is not a host or host:port.")
    try:
        parts = urlsplit(f"//{entry}")
        host, port = parts.hostname, parts.port
    except ValueError:
        raise problem from None
    if not host or parts.path or parts.username is not None:
        raise problem
    return host, port
