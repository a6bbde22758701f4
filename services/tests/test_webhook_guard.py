"""The webhook destination guard: refused addresses, host names resolving to them, DNS
rebinding, redirects, and how route_delivery records a refusal.

Real HTTP servers on loopback addresses and, end to end, the real route_delivery against
real NATS and PostgreSQL. The one stand-in is DNS: the rebinding tests answer name lookups
from a script, through the connector's resolver seam (`guarded_connector(resolver=...)`).
That replaces a DNS server, not the HTTP server or the guard, which are the real ones; a
real rebinding DNS server cannot be run here without the network.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from iot_tools.servers import free_port
from iot_tools.services import wait_until

from services.common.config import ConfigError, Env
from services.route_delivery.config import DeliveryConfig
from services.route_delivery.destinations import (
    DestinationDeniedError,
    DestinationGuard,
    denial_reason,
    guarded_connector,
)

from .conftest import service_env
from .test_route_delivery import Webhooks, add_route, publish


def guard_from(**env: str) -> DestinationGuard:
    """The guard as route_delivery builds it from its environment."""
    base = {"DATABASE_URL": "postgresql://u@h/d", "NATS_URL": "nats://h:4222"}
    return DeliveryConfig.from_env(Env({**base, **env})).destinations


DEFAULT = guard_from()
LOOPBACK_ALLOWED = guard_from(WEBHOOK_ALLOW_CIDRS="127.0.0.1/32")

# -- in-process: the guarded client against real servers ---------------------------------------


@dataclass
class Server:
    host: str
    port: int
    received: list[str] = field(default_factory=list)


@asynccontextmanager
async def serve(host: str, port: int, status: int = 204,
                location: str = "") -> AsyncIterator[Server]:
    server = Server(host, port)

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        server.received.append(request.path)
        headers = {"Location": location} if location else {}
        return web.Response(status=status, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        yield server
    finally:
        await runner.cleanup()


class ScriptedDNS(AbstractResolver):
    """Answers each lookup with the next list of addresses in `answers` (the last one
    repeats), recording every question: a rebinding DNS server, without the network."""

    def __init__(self, *answers: list[str]) -> None:
        self._answers = list(answers)
        self.questions: list[str] = []

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.questions.append(host)
        addresses = self._answers[min(len(self.questions), len(self._answers)) - 1]
        return [{"hostname": host, "host": address, "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST} for address in addresses]

    async def close(self) -> None:
        pass


async def post(url: str, guard: DestinationGuard, resolver: AbstractResolver | None = None,
               **connector_options: object) -> int | str:
    """The status, or the guard's reason, or the error's type (anything else)."""
    connector = guarded_connector(guard, limit=4, resolver=resolver, **connector_options)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        try:
            async with session.post(url, data=b"{}", allow_redirects=False,
                                    timeout=aiohttp.ClientTimeout(total=3)) as response:
                return response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            return denial_reason(error) or type(error).__name__


@pytest.mark.parametrize("host", ["127.0.0.1", "10.0.0.1", "169.254.169.254",
                                  "[::ffff:127.0.0.1]", "[::ffff:169.254.169.254]", "[::1]",
                                  "100.64.0.1", "[fd00::1]", "0.0.0.0"])
def test_the_default_guard_refuses_a_denied_ip_literal_without_connecting(host):
    async def scenario() -> None:
        port = free_port()
        async with serve("127.0.0.1", port) as server:
            answer = await post(f"http://{host}:{port}/hook", DEFAULT)
            assert isinstance(answer, str) and answer.startswith("destination_denied"), answer
            assert server.received == []

    asyncio.run(scenario())


def test_a_host_name_resolving_to_loopback_is_refused_by_the_system_resolver():
    # "localhost" resolves through the real system resolver (/etc/hosts) to loopback.
    async def scenario() -> None:
        port = free_port()
        async with serve("127.0.0.1", port) as server:
            answer = await post(f"http://localhost:{port}/hook", DEFAULT)
            assert answer == ("destination_denied: localhost resolves to 127.0.0.1, which is "
                              "in a denied range") or "resolves to ::1" in str(answer)
            assert server.received == []

    asyncio.run(scenario())


def test_an_explicitly_allowed_address_is_delivered_to():
    async def scenario() -> None:
        port = free_port()
        async with serve("127.0.0.1", port) as server:
            assert await post(f"http://127.0.0.1:{port}/hook", LOOPBACK_ALLOWED) == 204
            assert server.received == ["/hook"]

    asyncio.run(scenario())


def test_rebinding_to_a_denied_address_never_reaches_it():
    # The name first resolves to the allowed 127.0.0.1, then to 127.0.0.2 (loopback, denied):
    # the second request is refused, and nothing ever connects to 127.0.0.2. Each request
    # asks DNS exactly once: the connection uses the answer that was checked.
    async def scenario() -> None:
        port = free_port()
        dns = ScriptedDNS(["127.0.0.1"], ["127.0.0.2"])
        async with serve("127.0.0.1", port) as allowed, serve("127.0.0.2", port) as denied:
            url = f"http://rebind.example:{port}/hook"
            first = await post(url, LOOPBACK_ALLOWED, dns, use_dns_cache=False)
            second = await post(url, LOOPBACK_ALLOWED, dns, use_dns_cache=False)
            assert first == 204 and allowed.received == ["/hook"]
            assert second == ("destination_denied: rebind.example resolves to 127.0.0.2, "
                              "which is in a denied range")
            assert denied.received == []
            assert dns.questions == ["rebind.example", "rebind.example"]

    asyncio.run(scenario())


def test_an_answer_mixing_allowed_and_denied_addresses_is_refused_whole():
    async def scenario() -> None:
        port = free_port()
        dns = ScriptedDNS(["127.0.0.1", "127.0.0.2"])
        async with serve("127.0.0.1", port) as allowed, serve("127.0.0.2", port) as denied:
            answer = await post(f"http://mixed.example:{port}/hook", LOOPBACK_ALLOWED, dns)
            assert str(answer).startswith("destination_denied")
            assert allowed.received == [] and denied.received == []

    asyncio.run(scenario())


def test_the_socket_check_refuses_an_address_the_resolver_did_not_check():
    # A resolver that bypasses the guard (not one route_delivery builds) still cannot reach
    # a denied address: the socket factory checks every address before connect().
    async def scenario() -> None:
        port = free_port()
        connector = aiohttp.TCPConnector(resolver=ScriptedDNS(["127.0.0.2"]),
                                         socket_factory=LOOPBACK_ALLOWED.socket_factory)
        async with serve("127.0.0.2", port) as denied, \
                aiohttp.ClientSession(connector=connector) as session:
            with pytest.raises(aiohttp.ClientConnectorError) as error:
                await session.post(f"http://bypass.example:{port}/hook", data=b"{}")
            assert isinstance(error.value.os_error, DestinationDeniedError)
            assert denied.received == []

    asyncio.run(scenario())


def test_allowed_hosts_refuse_other_names_before_any_lookup():
    guard = guard_from(WEBHOOK_ALLOW_CIDRS="127.0.0.1/32",
                       WEBHOOK_ALLOW_HOSTS="hooks.example, *.ok.test")

    async def scenario() -> None:
        port = free_port()
        dns = ScriptedDNS(["127.0.0.1"])
        async with serve("127.0.0.1", port) as server:
            assert await post(f"http://a.ok.test:{port}/", guard, dns) == 204
            assert await post(f"http://hooks.example:{port}/", guard, dns) == 204
            refused = await post(f"http://other.example:{port}/", guard, dns)
            assert refused == ("destination_denied: host 'other.example' is not in "
                               "WEBHOOK_ALLOW_HOSTS")
            assert dns.questions == ["a.ok.test", "hooks.example"]
            assert len(server.received) == 2

    asyncio.run(scenario())


# -- the rules ---------------------------------------------------------------------------------


def denied(guard: DestinationGuard, address: str) -> bool:
    try:
        guard.check_address(address)
    except DestinationDeniedError:
        return True
    return False


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.255.255.254", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
    "169.254.169.254", "100.64.0.1", "100.127.255.255", "0.0.0.0", "224.0.0.1",
    "255.255.255.255", "::", "::1", "fd00::1", "fc00::1", "fe80::1", "fe80::1%eth0", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1",
    "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "fd00:ec2::254"])
def test_the_default_deny_list_covers(address):
    assert denied(DEFAULT, address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "100.128.0.1", "172.32.0.1",
                                     "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed_by_default(address):
    assert not denied(DEFAULT, address)


def test_the_most_specific_entry_decides_and_allow_wins_a_tie():
    guard = guard_from(WEBHOOK_ALLOW_CIDRS="10.0.0.0/8, 192.168.7.0/24, 0.0.0.0/0",
                       WEBHOOK_DENY_CIDRS="10.244.0.0/16,203.0.113.0/24")
    assert not denied(guard, "10.1.1.1")  # allow /8 ties the default deny /8
    assert denied(guard, "10.244.3.4")  # the pod range /16 is more specific
    assert not denied(guard, "192.168.7.9") and denied(guard, "192.168.8.1")
    assert denied(guard, "127.0.0.1")  # 0.0.0.0/0 does not switch the guard off
    assert denied(guard, "203.0.113.5")  # an extra deny applies to public addresses too


@pytest.mark.parametrize("variable,value", [
    ("WEBHOOK_ALLOW_CIDRS", "10.0.0.0/33"), ("WEBHOOK_DENY_CIDRS", "not-a-network"),
    ("WEBHOOK_ALLOW_HOSTS", "http://example.com"), ("WEBHOOK_ALLOW_HOSTS", "a.*.example")])
def test_a_bad_setting_fails_naming_its_variable(variable, value):
    with pytest.raises(ConfigError) as error:
        guard_from(**{variable: value})
    assert error.value.variable == variable


# -- route_delivery end to end -----------------------------------------------------------------


def default_guard_env(database, nats_server, **extra: str) -> dict[str, str]:
    env = service_env(database, nats_server, **extra)
    del env["WEBHOOK_ALLOW_CIDRS"]  # the default guard: loopback is denied
    return env


def test_route_delivery_refuses_denied_destinations_once_as_permanent_dead_letters(
        launch, database, nats_server, webhooks):
    hook = webhooks.start("ok")
    port = hook.port
    routes = {add_route(database, url): url for url in (
        hook.url, f"http://10.0.0.1:{port}/hook", "http://169.254.169.254/latest/meta-data/",
        f"http://[::ffff:127.0.0.1]:{port}/hook", f"http://localhost:{port}/hook")}
    # Published first: the stream exists before the service binds to it.
    publish(nats_server.url, [(route, f"m-{route}") for route in routes])
    service = launch("route_delivery", default_guard_env(
        database, nats_server, MAX_ATTEMPTS="5", RETRY_BACKOFF_SECONDS="0.1"))
    service.wait_ready()
    assert wait_until(lambda: database.count("dead_letters") == len(routes), timeout=30) \
        is not None
    time.sleep(1.5)  # nothing is retried
    rows = database.sql("SELECT attempts || '|' || last_error FROM dead_letters "
                        "ORDER BY route_id").splitlines()
    assert len(rows) == len(routes)
    assert all(row.startswith("1|destination_denied: ") for row in rows), rows
    assert hook.count() == 0
    assert database.count("delivery_attempts") == 0
    assert service.status("/ready") == 200
    assert json.loads(service.get("/health").body)["failed"] == len(routes)


@pytest.mark.parametrize("status", [307, 308])
def test_a_307_or_308_redirect_is_not_followed(launch, database, nats_server, status):
    async def scenario() -> None:
        target_port, redirect_port = free_port(), free_port()
        async with serve("127.0.0.1", target_port) as target, \
                serve("127.0.0.1", redirect_port, status=status,
                      location=f"http://127.0.0.1:{target_port}/stolen") as redirecting:
            route = add_route(database, f"http://127.0.0.1:{redirect_port}/hook")
            await asyncio.to_thread(publish, nats_server.url, [(route, "moved")])
            service = launch("route_delivery", service_env(
                database, nats_server, MAX_ATTEMPTS="1"))
            await asyncio.to_thread(service.wait_ready)
            for _ in range(200):
                if database.count("dead_letters") == 1:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            assert redirecting.received == ["/hook"]
            assert target.received == []
            assert database.sql("SELECT last_error FROM dead_letters") == f"HTTP {status}"

    asyncio.run(scenario())


@pytest.fixture
def webhooks():
    servers = Webhooks()
    yield servers
    servers.close()
