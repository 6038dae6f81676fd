"""Webhook URLs and signed deliveries.

Each delivery carries ``X-Scaiecho-Signature: t=<unix time>,v1=<hex HMAC-SHA256>`` over
``"<t>.<body>"`` with the tenant's webhook secret, and ``X-Scaiecho-Delivery`` with the job id
(deliveries are at least once: a receiver dedupes on it).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import socket
import time
from urllib.parse import urlsplit

from django.conf import settings

from common.errors import ServiceError

SIGNATURE_HEADER = "X-Scaiecho-Signature"
DELIVERY_HEADER = "X-Scaiecho-Delivery"


class WebhookNotAllowed(ServiceError):
    code = "webhook_not_allowed"


class DeliveryFailed(Exception):
    pass


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_LOCAL_USE_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: never global
# IPv6 forms that stand for the IPv4 address in their last 32 bits (RFC 4291, RFC 6052).
_EMBEDS_IPV4_LOW_BITS = [
    ipaddress.IPv6Network("::ffff:0:0/96"),  # IPv4-mapped
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible (also holds :: and ::1)
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64, well-known prefix
]


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, in the forms a router translates."""
    if any(ip in network for network in _EMBEDS_IPV4_LOW_BITS):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour  # 2002::/16 (6to4) carries it in bits 16 to 48


def is_plain_global_unicast(ip: IPAddress) -> bool:
    """A public unicast address, judged by the IPv4 address it embeds where it embeds one.

    Python 3.11's ``is_global`` alone calls ``::127.0.0.1``, ``64:ff9b::a9fe:a9fe`` (NAT64 of
    the cloud metadata address), ``2002:7f00:1::`` (6to4 of loopback) and multicast global.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _LOCAL_USE_NAT64:
            return False
        embedded = embedded_ipv4(ip)
        if embedded is not None:
            return is_plain_global_unicast(embedded)
        return ip in _GLOBAL_UNICAST_V6 and ip.is_global
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def check_webhook_url(url: str) -> str:
    """Refuses URLs that are not http(s) or that point into private networks (SSRF).

    Returns the address to connect to: the delivery goes to the address checked here, so a
    DNS answer that changes in between (rebinding) cannot redirect it.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookNotAllowed("The webhook must be an http:// or https:// URL with a host.")
    try:
        addresses = [info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port or 443)]
    except (OSError, UnicodeError, ValueError) as exc:
        raise WebhookNotAllowed(f"The webhook host {parts.hostname!r} does not resolve.") from exc
    ips = [ipaddress.ip_address(str(address).split("%")[0]) for address in addresses]
    if not settings.WEBHOOK_ALLOW_PRIVATE_HOSTS and not all(map(is_plain_global_unicast, ips)):
        raise WebhookNotAllowed(
            f"The webhook host {parts.hostname!r} resolves to an address that is not public "
            "unicast (private, loopback, link-local, multicast, reserved or one embedding them)."
        )
    return str(ips[0])


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, body: bytes, header: str, tolerance_s: float = 300.0) -> bool:
    """What a receiver does with the signature header (used by the tests and documented)."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def post(url: str, body: bytes, secret: str, delivery_id: str) -> int:
    """POSTs once to the checked address; returns the status, raises DeliveryFailed on
    anything but 2xx. Redirects are not followed (they could lead anywhere) and no proxy
    from the environment is used."""
    address = check_webhook_url(url)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = _PinnedHTTPSConnection(parts.hostname or "", port, address)
    else:
        connection = http.client.HTTPConnection(address, port, timeout=settings.WEBHOOK_TIMEOUT_S)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    headers = {
        "Host": parts.netloc.rsplit("@", 1)[-1],
        "Content-Type": "application/json",
        "User-Agent": "scaiecho-webhooks/1",
        SIGNATURE_HEADER: sign(secret, body, int(time.time())),
        DELIVERY_HEADER: delivery_id,
    }
    try:
        connection.request("POST", path, body=body, headers=headers)
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryFailed(str(exc) or type(exc).__name__) from exc
    finally:
        connection.close()
    if not 200 <= status < 300:
        raise DeliveryFailed(f"HTTP {status}")
    return status


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to the address that was checked, with the URL's host name for SNI and the cert."""

    def __init__(self, host: str, port: int, address: str):
        super().__init__(host, port, timeout=settings.WEBHOOK_TIMEOUT_S)
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]
