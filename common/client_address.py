"""Who a request comes from: the one place that reads a client's address.

By default that is the peer of the connection (``REMOTE_ADDR``, an ASGI scope's ``client``);
a header such as ``X-Forwarded-For`` is believed only when the operator names it
(``TRUSTED_PROXY_HEADER``), counted back ``TRUSTED_PROXY_COUNT`` hops from the right (each
trusted proxy appends the address it saw; whatever the client wrote itself stays further
left), and only from peers in ``TRUSTED_PROXIES`` when that list is set. Anything malformed
falls back to the peer, never to a client-chosen value.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings

# IPv6 hosts are usually given a whole /64: limits per address count that network.
IPV6_LIMIT_PREFIX = 64


def _parsed(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = value.strip()
    if text.startswith("["):  # "[2001:db8::1]:443"
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # "192.0.2.1:443"
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # "::ffff:192.0.2.1" is that IPv4 client
    return address


def _from_trusted_proxy(peer: str | None, forwarded: str | None) -> str | None:
    peer_address = _parsed(peer) if peer else None
    header = settings.TRUSTED_PROXY_HEADER
    if not header or not forwarded or peer_address is None:
        return None
    proxies = [ipaddress.ip_network(n, strict=False) for n in settings.TRUSTED_PROXIES]
    if proxies and not any(peer_address in network for network in proxies):
        return None
    hops = [hop for hop in forwarded.split(",") if hop.strip()]
    if len(hops) < settings.TRUSTED_PROXY_COUNT:
        return None
    client = _parsed(hops[-settings.TRUSTED_PROXY_COUNT])
    return str(client) if client is not None else None


def _resolve(peer: str | None, forwarded: str | None) -> str | None:
    trusted = _from_trusted_proxy(peer, forwarded)
    if trusted is not None:
        return trusted
    peer_address = _parsed(peer) if peer else None
    return str(peer_address) if peer_address is not None else None


def _meta_name(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


def client_address(meta: Mapping[str, Any]) -> str | None:
    """The client's IP address of a Django request (its ``META``); None when unknown."""
    header = settings.TRUSTED_PROXY_HEADER
    forwarded = meta.get(_meta_name(header)) if header else None
    return _resolve(meta.get("REMOTE_ADDR"), forwarded)


def client_address_of_scope(scope: Mapping[str, Any]) -> str | None:
    """The client's IP address of an ASGI connection (a WebSocket's scope)."""
    client = scope.get("client") or (None, 0)
    header = settings.TRUSTED_PROXY_HEADER.lower().encode("latin-1")
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers") or []
    # Repeated header lines read as one list, as Django joins them into META.
    values = [value.decode("latin-1") for name, value in headers if header and name == header]
    return _resolve(client[0], ",".join(values) if values else None)


def limit_subject(address: str | None) -> str:
    """What a per-address limit counts: the address, or its /64 for IPv6."""
    parsed = _parsed(address) if address else None
    if parsed is None:
        return "unknown"
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/{IPV6_LIMIT_PREFIX}", strict=False))
    return str(parsed)
