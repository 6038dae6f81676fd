"""Webhook targets: only plain public unicast, whatever IPv6 form wraps an IPv4 address.

The resolver is replaced, so each case is the address a webhook host's DNS answers with.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

from diarization import webhooks


@pytest.fixture
def resolves_to(monkeypatch):
    """Makes every host name resolve to the given addresses."""

    def answer(*addresses: str) -> None:
        def getaddrinfo(host, port, *args, **kwargs):
            return [
                (
                    socket.AF_INET6 if ":" in a else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (a, port),
                )
                for a in addresses
            ]

        monkeypatch.setattr(webhooks.socket, "getaddrinfo", getaddrinfo)

    return answer


@pytest.fixture(autouse=True)
def private_hosts_refused(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = False


REFUSED = {
    # IPv4-mapped (::ffff:0:0/96)
    "::ffff:127.0.0.1": "mapped loopback",
    "::ffff:10.1.2.3": "mapped private",
    "::ffff:169.254.169.254": "mapped metadata",
    "::ffff:224.0.0.1": "mapped multicast",
    # IPv4-compatible (::/96), which Python 3.11 calls global
    "::127.0.0.1": "compatible loopback",
    "::a9fe:a9fe": "compatible metadata",
    "::c0a8:101": "compatible private",
    # NAT64, well-known prefix (64:ff9b::/96)
    "64:ff9b::a9fe:a9fe": "NAT64 of the metadata address",
    "64:ff9b::7f00:1": "NAT64 of loopback",
    "64:ff9b::a00:1": "NAT64 of a private address",
    "64:ff9b::e000:1": "NAT64 of multicast",
    # NAT64, local-use prefix (64:ff9b:1::/48): never global, whatever it embeds
    "64:ff9b:1::a9fe:a9fe": "local-use NAT64 of the metadata address",
    "64:ff9b:1:808:8:800::": "local-use NAT64 of a public address",
    # 6to4 (2002::/16)
    "2002:7f00:1::": "6to4 of loopback",
    "2002:a9fe:a9fe::1": "6to4 of the metadata address",
    "2002:c0a8:101::1": "6to4 of a private address",
    # multicast, reserved, unspecified
    "224.0.0.1": "IPv4 multicast",
    "239.255.255.250": "IPv4 site multicast",
    "ff02::1": "IPv6 link multicast",
    "ff0e::1": "IPv6 global-scope multicast",
    "240.0.0.1": "IPv4 reserved",
    "255.255.255.255": "IPv4 broadcast",
    "4000::1": "IPv6 outside global unicast (2000::/3)",
    "0.0.0.0": "IPv4 unspecified",
    "::": "IPv6 unspecified",
    # the plain private forms
    "127.0.0.1": "loopback",
    "10.0.0.1": "private",
    "100.64.0.1": "carrier-grade NAT",
    "169.254.169.254": "link-local metadata",
    "::1": "IPv6 loopback",
    "fe80::1": "IPv6 link-local",
    "fc00::1": "IPv6 unique local",
    "2001:db8::1": "IPv6 documentation",
    "2001::1": "Teredo",
}

ACCEPTED = {
    "93.184.215.14": "public IPv4",
    "2606:4700:4700::1111": "public IPv6",
    "::ffff:93.184.215.14": "mapped public",
    "::5db8:d70e": "compatible public",
    "64:ff9b::5db8:d70e": "NAT64 of a public address",
    "2002:5db8:d70e::1": "6to4 of a public address",
}


@pytest.mark.parametrize("address", REFUSED, ids=list(REFUSED.values()))
def test_an_address_that_is_not_plain_public_unicast_is_refused(resolves_to, address):
    resolves_to(address)

    with pytest.raises(webhooks.WebhookNotAllowed, match="not public unicast"):
        webhooks.check_webhook_url("https://hooks.example.com/x")


@pytest.mark.parametrize("address", ACCEPTED, ids=list(ACCEPTED.values()))
def test_a_public_address_in_any_form_is_accepted(resolves_to, address):
    resolves_to(address)

    checked = webhooks.check_webhook_url("https://hooks.example.com/x")
    assert ipaddress.ip_address(checked) == ipaddress.ip_address(address)


def test_one_private_answer_among_public_ones_refuses_the_host(resolves_to):
    resolves_to("93.184.215.14", "64:ff9b::a9fe:a9fe")

    with pytest.raises(webhooks.WebhookNotAllowed):
        webhooks.check_webhook_url("http://hooks.example.com/x")


def test_allow_private_hosts_lets_a_wrapped_private_address_through(resolves_to, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = True
    resolves_to("::127.0.0.1")

    assert webhooks.check_webhook_url("http://hooks.example.com/x") == "::7f00:1"


def test_a_delivery_rechecks_and_never_connects_to_a_wrapped_private_address(
    resolves_to, monkeypatch
):
    """The host passed at submission; at delivery its DNS answers with 6to4 of loopback."""
    connections = []
    monkeypatch.setattr(webhooks.socket, "create_connection", lambda *a, **k: connections.append(a))
    resolves_to("2002:7f00:1::")

    with pytest.raises(webhooks.WebhookNotAllowed):
        webhooks.post("http://hooks.example.com/x", b"{}", "whsec_x", "delivery-1")
    assert connections == []
