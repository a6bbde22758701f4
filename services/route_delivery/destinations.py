"""Which addresses webhooks may be sent to, decided where the connection is made.

A webhook URL is customer data: without a guard, route_delivery would POST to the cloud's
metadata service, to pod and Service IPs, or to itself. The guard sits in the HTTP client's
connector, not in front of it:

- `GuardedResolver` resolves a host name once, checks every address of the answer, and hands
  the connector exactly those addresses; any denied address refuses the whole answer. The
  connector connects to what the resolver returned (numeric addresses, never resolved
  again), so a DNS answer that changes between a check and the connection (rebinding) has
  nothing to slip through.
- `socket_factory` checks every address right before its socket connects: the one path
  that also sees IP literals in URLs (aiohttp does not ask the resolver about them), and a
  second check on resolved addresses.

Rules: the most specific matching network decides (longest prefix); on equal prefixes an
allow entry wins. The deny list is DEFAULT_DENY plus WEBHOOK_DENY_CIDRS; WEBHOOK_ALLOW_CIDRS
punches holes in it. IPv4 addresses written in IPv6 (mapped ::ffff:a.b.c.d, NAT64
64:ff9b::a.b.c.d, 6to4 2002:aabb:ccdd::) are judged as the IPv4 address they reach.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult

from services.common.config import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Denied unless WEBHOOK_ALLOW_CIDRS allows them (see README: Security model, Webhooks).
DEFAULT_DENY: tuple[str, ...] = (
    "0.0.0.0/8",        # "this network", incl. the unspecified 0.0.0.0
    "10.0.0.0/8",       # RFC 1918 private
    "100.64.0.0/10",    # CGNAT (RFC 6598)
    "127.0.0.0/8",      # loopback
    "169.254.0.0/16",   # link-local, incl. the metadata service 169.254.169.254
    "172.16.0.0/12",    # RFC 1918 private
    "192.168.0.0/16",   # RFC 1918 private
    "224.0.0.0/4",      # multicast
    "240.0.0.0/4",      # reserved, incl. broadcast 255.255.255.255
    "::/96",            # unspecified ::, loopback ::1, IPv4-compatible ::a.b.c.d
    "fc00::/7",         # unique local (RFC 4193), incl. fd00:ec2::254 (AWS metadata)
    "fe80::/10",        # link-local
    "fec0::/10",        # site-local (deprecated, still routed by some stacks)
    "ff00::/8",         # multicast
)
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
DENIED = "destination_denied"


class DestinationDeniedError(OSError):
    """A webhook destination the guard refuses. An OSError, so aiohttp carries it as the
    `os_error` of the connector error it raises; `denial_reason` finds it again."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{DENIED}: {reason}")
        self.reason = reason


def effective_address(address: IPAddress) -> IPAddress:
    """The address a packet really goes to: IPv4 written in IPv6 is judged as IPv4."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
    return address


def _networks(variable: str, values: Iterable[str]) -> tuple[IPNetwork, ...]:
    networks: list[IPNetwork] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ConfigError(variable, f"{value!r} is not an IP network (CIDR such as "
                                        "10.0.0.0/8 or fd00::/8, or a single address)") from None
    return tuple(networks)


def _split(raw: str) -> list[str]:
    return [item.strip() for item in raw.replace("\n", ",").split(",") if item.strip()]


def _host_patterns(variable: str, values: Iterable[str]) -> tuple[str, ...]:
    patterns: list[str] = []
    for value in values:
        pattern = value.lower().rstrip(".")
        name = pattern[2:] if pattern.startswith("*.") else pattern
        if not name or "*" in name or "/" in name or ":" in name:
            raise ConfigError(variable, f"{value!r} is not a host name or *.domain pattern")
        patterns.append(pattern)
    return tuple(patterns)


@dataclass(frozen=True)
class DestinationGuard:
    deny: tuple[IPNetwork, ...]
    allow: tuple[IPNetwork, ...] = ()
    # Empty: any host name. Else only these names (exact, or "*.example.com" for subdomains).
    allow_hosts: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, *, allow_cidrs: str | None, deny_cidrs: str | None,
                      allow_hosts: str | None) -> DestinationGuard:
        """From the comma-separated WEBHOOK_* values (config.py reads them); an error names
        the variable."""
        return cls(
            deny=_networks("DEFAULT_DENY", DEFAULT_DENY)
            + _networks("WEBHOOK_DENY_CIDRS", _split(deny_cidrs or "")),
            allow=_networks("WEBHOOK_ALLOW_CIDRS", _split(allow_cidrs or "")),
            allow_hosts=_host_patterns("WEBHOOK_ALLOW_HOSTS", _split(allow_hosts or "")))

    def check_address(self, text: str) -> None:
        """Raise DestinationDeniedError unless the address may be connected to."""
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
        except ValueError:
            raise DestinationDeniedError(f"{text!r} is not an IP address") from None
        judged = effective_address(address)
        best: tuple[int, bool] | None = None  # (prefix length, allowed)
        for allowed, networks in ((False, self.deny), (True, self.allow)):
            for network in networks:
                if network.version == judged.version and judged in network:
                    candidate = (network.prefixlen, allowed)
                    if best is None or candidate > best:  # longer prefix; allow wins ties
                        best = candidate
        if best is not None and not best[1]:
            shown = text if judged == address else f"{text} (IPv4 {judged})"
            raise DestinationDeniedError(f"address {shown} is in a denied range")

    def check_host(self, host: str) -> None:
        """Raise DestinationDeniedError when WEBHOOK_ALLOW_HOSTS is set and `host` is not in it.
        IP literals are judged by address only."""
        if not self.allow_hosts:
            return
        name = host.lower().rstrip(".")
        try:
            ipaddress.ip_address(name.strip("[]").split("%", 1)[0])
            return
        except ValueError:
            pass
        for pattern in self.allow_hosts:
            if name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])):
                return
        raise DestinationDeniedError(f"host {host!r} is not in WEBHOOK_ALLOW_HOSTS")

    def socket_factory(self, addr_info: AddrInfoType) -> socket.socket:
        """The connector's last step before connect(): every address is checked here."""
        family, type_, proto, _, sockaddr = addr_info
        self.check_address(str(sockaddr[0]))
        sock = socket.socket(family=family, type=type_, proto=proto)
        sock.setblocking(False)
        return sock


class GuardedResolver(AbstractResolver):
    """Resolves once, refuses the answer if any address in it is denied, and returns exactly
    the checked addresses for the connector to use."""

    def __init__(self, guard: DestinationGuard, resolver: AbstractResolver | None = None):
        self._guard = guard
        # ThreadedResolver: getaddrinfo, as the operating system resolves (incl. /etc/hosts).
        self._resolver = resolver if resolver is not None else aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self._guard.check_host(host)
        answers = await self._resolver.resolve(host, port, family)
        for answer in answers:
            try:
                self._guard.check_address(answer["host"])
            except DestinationDeniedError as denied:
                raise DestinationDeniedError(f"{host} resolves to {answer['host']}, "
                                        "which is in a denied range") from denied
        return answers

    async def close(self) -> None:
        await self._resolver.close()


def guarded_connector(guard: DestinationGuard, *, limit: int,
                      resolver: AbstractResolver | None = None,
                      **options: Any) -> aiohttp.TCPConnector:
    """The only connector route_delivery sends webhooks through. `resolver` is the DNS seam
    (tests answer from a script there; production uses the system resolver)."""
    return aiohttp.TCPConnector(limit=limit, resolver=GuardedResolver(guard, resolver),
                                socket_factory=guard.socket_factory, **options)


def denial_reason(error: BaseException) -> str | None:
    """The guard's reason when `error` (as aiohttp raised it) is a refused destination."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DestinationDeniedError):
            return f"{DENIED}: {current.reason}"
        os_error = getattr(current, "os_error", None)
        if isinstance(os_error, DestinationDeniedError):
            return f"{DENIED}: {os_error.reason}"
        current = current.__cause__ or current.__context__
    return None
