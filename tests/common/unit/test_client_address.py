"""The client address every limit and record uses: the connection's peer unless a configured
proxy header says otherwise, and then only as far as the trusted proxies vouch for it."""

from __future__ import annotations

import pytest

from common.client_address import client_address, client_address_of_scope, limit_subject


def meta(peer: str | None = "203.0.113.9", forwarded: str | None = None) -> dict[str, str]:
    values = {}
    if peer is not None:
        values["REMOTE_ADDR"] = peer
    if forwarded is not None:
        values["HTTP_X_FORWARDED_FOR"] = forwarded
    return values


@pytest.fixture
def behind_proxy(settings):
    settings.TRUSTED_PROXY_HEADER = "X-Forwarded-For"
    settings.TRUSTED_PROXY_COUNT = 1
    settings.TRUSTED_PROXIES = []
    return settings


def test_without_a_configured_header_a_forwarded_address_is_ignored(settings):
    settings.TRUSTED_PROXY_HEADER = ""
    assert client_address(meta(forwarded="198.51.100.7")) == "203.0.113.9"


def test_the_peer_is_the_client_by_default():
    assert client_address(meta()) == "203.0.113.9"
    assert client_address(meta(peer=None)) is None
    assert client_address(meta(peer="not an address")) is None


@pytest.mark.usefixtures("behind_proxy")
def test_one_trusted_proxy_names_the_client_in_the_last_entry():
    # Whatever the client wrote itself stays to the left of what the proxy appended.
    assert client_address(meta(forwarded="192.0.2.66, 198.51.100.7")) == "198.51.100.7"
    assert client_address(meta(forwarded="198.51.100.7")) == "198.51.100.7"


def test_two_trusted_proxies_name_the_client_two_hops_back(behind_proxy):
    behind_proxy.TRUSTED_PROXY_COUNT = 2
    assert client_address(meta(forwarded="192.0.2.66, 198.51.100.7, 10.0.0.2")) == "198.51.100.7"
    # Fewer hops than proxies: the request did not come through them all.
    assert client_address(meta(forwarded="198.51.100.7")) == "203.0.113.9"


@pytest.mark.usefixtures("behind_proxy")
@pytest.mark.parametrize("forwarded", ["", "unknown", "198.51.100.7, garbage", " , "])
def test_a_malformed_header_falls_back_to_the_peer(forwarded):
    assert client_address(meta(forwarded=forwarded)) == "203.0.113.9"


def test_the_header_counts_only_from_the_trusted_proxies(behind_proxy):
    behind_proxy.TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert client_address(meta(peer="10.1.2.3", forwarded="198.51.100.7")) == "198.51.100.7"
    # A client that reaches the service directly cannot name itself someone else.
    assert client_address(meta(peer="203.0.113.9", forwarded="198.51.100.7")) == "203.0.113.9"


@pytest.mark.usefixtures("behind_proxy")
@pytest.mark.parametrize(
    ("entry", "client"),
    [
        ("198.51.100.7:4711", "198.51.100.7"),
        ("[2001:db8::7]:443", "2001:db8::7"),
        ("2001:db8::7", "2001:db8::7"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
    ],
)
def test_ports_brackets_and_mapped_addresses_are_read(entry, client):
    assert client_address(meta(forwarded=entry)) == client


def test_a_websocket_scope_is_read_the_same_way(behind_proxy):
    scope = {
        "client": ("203.0.113.9", 5555),
        "headers": [(b"x-forwarded-for", b"192.0.2.66"), (b"x-forwarded-for", b"198.51.100.7")],
    }
    assert client_address_of_scope(scope) == "198.51.100.7"
    behind_proxy.TRUSTED_PROXY_HEADER = ""
    assert client_address_of_scope(scope) == "203.0.113.9"
    assert client_address_of_scope({"headers": []}) is None


def test_limits_count_an_ipv6_client_by_its_64():
    assert limit_subject("2001:db8:1:2:aaaa::1") == limit_subject("2001:db8:1:2:bbbb::2")
    assert limit_subject("2001:db8:1:2::1") != limit_subject("2001:db8:1:3::1")
    assert limit_subject("198.51.100.7") == "198.51.100.7"
    assert limit_subject(None) == "unknown"
