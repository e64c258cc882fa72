"""Keep network plugins off private addresses: an SSRF guard at connection time.

A job's URL is user input that a worker inside the network will fetch. Every connection
(the first request, each redirect, each next page) resolves its host, and every address
the name resolves to must be public unless the allow-list (`ORC_HTTP_ALLOWLIST`: host
names, addresses, CIDRs) names the host or covers the address. The connection then goes to
a vetted address, so a DNS answer that changes between check and use (rebinding) gains
nothing.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from common.errors import PermanentError, TransientError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressNotAllowed(PermanentError):
    """The host resolves to a private, loopback, link-local or otherwise internal address."""


@dataclass(frozen=True)
class Allowlist:
    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowlist:
        """From `["127.0.0.1", "10.0.0.0/8", "api.internal"]`."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


def is_public(address: IPAddress) -> bool:
    """Global unicast: not private, loopback, link-local, shared, reserved or multicast."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def vetted_addresses(host: str, port: int, allowlist: Allowlist) -> list[IPAddress]:
    """Every address `host` resolves to, once all of them passed the check."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TransientError(f"cannot resolve {host}: {exc}") from exc
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if allowlist.allows_host(host):
        return addresses
    for address in addresses:
        if not is_public(address) and not allowlist.allows_address(address):
            raise AddressNotAllowed(
                f"{host} resolves to {address}, a private, loopback or link-local address; "
                "add the host or address to ORC_HTTP_ALLOWLIST to allow it"
            )
    return addresses


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, connecting only to vetted addresses."""

    def __init__(self, allowlist: Allowlist) -> None:
        self._allowlist = allowlist
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        error: Exception | None = None
        for address in vetted_addresses(host, port, self._allowlist):
            try:
                # TLS still checks the certificate against `host` (httpcore passes the
                # request's host name as server_hostname).
                return self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None  # getaddrinfo never answers an empty list
        raise error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise AddressNotAllowed("unix sockets are not reachable from job configs")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """An httpx transport whose every connection goes through `GuardedBackend`.

    Proxies from the environment are ignored: through a proxy the guard would vet the proxy,
    not the destination.
    """

    def __init__(self, allowlist: Allowlist) -> None:
        context = _tls_context()
        super().__init__(verify=context, trust_env=False)
        # httpx does not expose httpcore's network backend: swap the pool it built for one
        # with ours (same TLS settings).
        self._pool.close()
        self._pool = httpcore.ConnectionPool(
            ssl_context=context, network_backend=GuardedBackend(allowlist)
        )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the CA bundle takes a while; one context serves every client of the process.
    return httpx.create_ssl_context()
