"""Webhook URLs and signed deliveries.

Each delivery carries ``X-Scaiecho-Signature: t=<unix time>,v1=<hex HMAC-SHA256>`` over
``"<t>.<body>"`` with the tenant's webhook secret, and ``X-Scaiecho-Delivery`` with the job id
(deliveries are at least once: a receiver dedupes on it).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from django.conf import settings

from enrollment.errors import ServiceError

SIGNATURE_HEADER = "X-Scaiecho-Signature"
DELIVERY_HEADER = "X-Scaiecho-Delivery"


class WebhookNotAllowed(ServiceError):
    code = "webhook_not_allowed"


class DeliveryFailed(Exception):
    pass


def check_webhook_url(url: str) -> None:
    """Refuses URLs that are not http(s) or that point into private networks (SSRF)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookNotAllowed("The webhook must be an http:// or https:// URL with a host.")
    if settings.WEBHOOK_ALLOW_PRIVATE_HOSTS:
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, None)}
    except socket.gaierror as exc:
        raise WebhookNotAllowed(f"The webhook host {parts.hostname!r} does not resolve.") from exc
    for address in addresses:
        ip = ipaddress.ip_address(str(address).split("%")[0])
        if not ip.is_global:
            raise WebhookNotAllowed(
                f"The webhook host {parts.hostname!r} is a private or local address ({ip})."
            )


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
    """POSTs once; returns the HTTP status, raises DeliveryFailed on anything but 2xx."""
    check_webhook_url(url)
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "scaiecho-webhooks/1",
            SIGNATURE_HEADER: sign(secret, body, int(time.time())),
            DELIVERY_HEADER: delivery_id,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=settings.WEBHOOK_TIMEOUT_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise DeliveryFailed(f"HTTP {exc.code}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise DeliveryFailed(str(getattr(exc, "reason", exc))) from exc
