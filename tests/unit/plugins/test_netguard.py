"""The address guard of network plugins."""

from __future__ import annotations

import ipaddress

import pytest

from plugins.netguard import AddressNotAllowed, Allowlist, is_public, vetted_addresses


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", True),
    ],
)
def test_is_public(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


def test_allowlist_takes_hosts_addresses_and_networks() -> None:
    allow = Allowlist.parse(["127.0.0.1", " 10.0.0.0/8 ", "", "API.Internal."])
    assert allow.allows_host("api.internal")
    assert not allow.allows_host("other.internal")
    assert allow.allows_address(ipaddress.ip_address("10.2.3.4"))
    assert allow.allows_address(ipaddress.ip_address("127.0.0.1"))
    assert not allow.allows_address(ipaddress.ip_address("127.0.0.2"))


def test_every_resolved_address_is_checked() -> None:
    # "localhost" may resolve to 127.0.0.1 and ::1: allowing one address is not enough.
    with pytest.raises(AddressNotAllowed):
        vetted_addresses("localhost", 80, Allowlist.parse([]))
    assert vetted_addresses("localhost", 80, Allowlist.parse(["localhost"]))
    allowed = vetted_addresses("127.0.0.1", 80, Allowlist.parse(["127.0.0.1"]))
    assert allowed == [ipaddress.ip_address("127.0.0.1")]
