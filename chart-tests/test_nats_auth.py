"""The NATS users the chart renders, against a real nats-server running the rendered nats.conf
with the environment its pod would get (iot_tools.chart_nats): each component's user can do its
job and nothing else, only the owner manages streams, and nobody gets in without a login.

A publish the server refuses does not fail the publish call (NATS reports it asynchronously, as
a permissions violation); the tests collect those reports and check that nothing arrived.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator

import nats
import pytest
from iot_tools import helm
from iot_tools.chart_nats import ChartNats, Login, logins, start_chart_nats
from iot_tools.mqtt import MqttClient
from iot_tools.servers import temp_workdir
from nats.aio.client import Client
from nats.js.api import StreamConfig

from services.common.config import NatsSettings
from services.common.health import HealthState
from services.common.messaging import (
    ROUTES_LIMITS,
    TELEMETRY_LIMITS,
    NatsLink,
    StreamLimits,
    routes_stream,
    settle,
    telemetry_stream,
)
from services.common.messaging.lean import LeanPullConsumer
from services.migrate.nats import StreamsConfig, manage_streams

TIMEOUT = 10
_client_ids = itertools.count()


@pytest.fixture(scope="module")
def chart_nats() -> Iterator[tuple[ChartNats, list[str]]]:
    """The rendered NATS, and what the owner's step (the `streams` init container) did."""
    docs = helm.render()
    workdir = temp_workdir("iot-test-chart-nats-")
    nats_ = start_chart_nats(docs, workdir)
    owner = nats_.logins["owner"]
    done = asyncio.run(manage_streams(StreamsConfig(
        NatsSettings(nats_.url, owner.user, owner.password, inbox_prefix=owner.inbox_prefix),
        wait_seconds=10, telemetry_limits=TELEMETRY_LIMITS, routes_limits=ROUTES_LIMITS)))
    yield nats_, done
    nats_.server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def server(chart_nats) -> ChartNats:
    return chart_nats[0]


async def _connect(server: ChartNats, login: Login, errors: list[str] | None = None) -> Client:
    async def on_error(error: Exception) -> None:
        if errors is not None:
            errors.append(str(error))

    return await nats.connect(server.url, allow_reconnect=False, connect_timeout=3,
                              error_cb=on_error, **login.options())


def as_user(server: ChartNats, user: str,
            action: Callable[[Client], Awaitable[object]]) -> tuple[object, list[str]]:
    """Run `action` logged in as `user`; its result (or exception) and the server's errors."""

    async def run() -> tuple[object, list[str]]:
        errors: list[str] = []
        client = await _connect(server, server.logins[user], errors)
        try:
            try:
                result: object = await action(client)
            except Exception as error:  # the refusal is the result under test
                result = error
            await client.flush(timeout=3)
            await asyncio.sleep(0.3)  # the server's -ERR may trail the flush's PONG
            return result, errors
        finally:
            await client.close()

    return asyncio.run(run())


def stream_messages(server: ChartNats, stream: str) -> int:
    async def count(client: Client) -> int:
        return (await client.jetstream(timeout=5).stream_info(stream)).state.messages

    result, errors = as_user(server, "owner", count)
    assert not errors, errors
    assert isinstance(result, int), result
    return result


def bridge_publish(server: ChartNats, topic: str, payload: bytes) -> None:
    login = server.logins["emqx-bridge"]
    # A client id per connection: a new session under the last one's id races its takeover.
    client = MqttClient.connect(server.mqtt_port, f"bridge-{next(_client_ids)}", login.user,
                                login.password)
    try:
        assert client.return_code == 0
        client.publish(topic, payload)
    finally:
        client.close()


def wait_for(condition: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# -- who gets in -------------------------------------------------------------------------


def test_a_client_without_a_login_is_refused(server):
    async def anonymous() -> None:
        client = await nats.connect(server.url, allow_reconnect=False, connect_timeout=3,
                                    max_reconnect_attempts=0)
        await client.close()

    with pytest.raises(Exception, match="Authorization Violation"):
        asyncio.run(anonymous())


def test_a_wrong_password_is_refused(server):
    wrong = Login("ingest", "not-the-password")
    with pytest.raises(Exception, match="Authorization Violation"):
        asyncio.run(_connect(server, wrong))


def test_the_passwords_are_environment_references_in_the_config_map():
    docs = helm.render()
    config = helm.by_kind_and_name(docs)[("ConfigMap", "iot-nats")]["data"]["nats.conf"]
    users = logins(docs)
    assert set(users) == {"owner", "ingest", "route-delivery", "emqx-bridge"}
    for login in users.values():
        assert login.password not in config
    assert config.count("password: $NATS_") == 4
    assert "no_auth_user:" not in config and "no_auth_user =" not in config


# -- the owner -----------------------------------------------------------------------------


def test_the_owner_creates_the_streams(chart_nats):
    server, done = chart_nats
    assert done == ["created TELEMETRY", "created ROUTES"]
    assert stream_messages(server, "TELEMETRY") >= 0


def test_the_owner_brings_a_changed_limit_back_to_the_configured_one(server):
    owner = server.logins["owner"]
    settings = NatsSettings(server.url, owner.user, owner.password,
                            inbox_prefix=owner.inbox_prefix)
    smaller = StreamLimits(max_bytes=ROUTES_LIMITS.max_bytes // 2,
                                  max_age=ROUTES_LIMITS.max_age)
    changed = asyncio.run(manage_streams(StreamsConfig(
        settings, 10, TELEMETRY_LIMITS, smaller)))
    assert changed[0] == "TELEMETRY up to date"
    assert changed[1].startswith("updated ROUTES (max_bytes")
    again = asyncio.run(manage_streams(StreamsConfig(settings, 10, TELEMETRY_LIMITS,
                                                     ROUTES_LIMITS)))
    assert again[1].startswith("updated ROUTES (max_bytes")


# -- each component does its job -------------------------------------------------------------


def test_the_bridge_user_publishes_telemetry_over_mqtt(server):
    before = stream_messages(server, "TELEMETRY")
    bridge_publish(server, "telemetry/dev-mqtt", b'{"device_id":"dev-mqtt"}')
    assert wait_for(lambda: stream_messages(server, "TELEMETRY") == before + 1)


def test_the_bridge_user_cannot_use_the_nats_protocol(server):
    with pytest.raises(Exception, match="Authorization Violation"):
        asyncio.run(_connect(server, server.logins["emqx-bridge"]))


def test_no_service_user_can_log_in_over_mqtt(server):
    for user in ("owner", "ingest", "route-delivery"):
        login = server.logins[user]
        client = MqttClient.connect(server.mqtt_port, f"spoof-{user}", login.user, login.password)
        try:
            assert client.return_code != 0, user
        finally:
            client.close()


def _consume(server: ChartNats, user: str, stream, durable: str, expected: int) -> int:
    """Messages the lean pull loop fetched and acked as `user` (binding, creating its durable,
    pulling, acking: everything ingest and route_delivery do on their stream)."""
    login = server.logins[user]

    async def run() -> int:
        health = HealthState(user)
        link = NatsLink(NatsSettings(server.url, login.user, login.password,
                                     inbox_prefix=login.inbox_prefix), user, health)
        connecting = asyncio.create_task(link.connect())
        consumer = LeanPullConsumer(link, health, stream, durable, ack_wait=30,
                                    max_ack_pending=100)
        got = 0

        async def consume() -> None:
            nonlocal got
            async for messages in consumer.batches(10):
                await settle(messages, lambda message: message.ack())
                got += len(messages)
                if got >= expected:
                    consumer.stop()

        try:
            await asyncio.wait_for(consume(), TIMEOUT)
        finally:
            await consumer.close()
            await link.close()
            connecting.cancel()
        return got

    return asyncio.run(run())


def test_the_ingest_user_consumes_its_durable_on_telemetry(server):
    for index in range(3):
        bridge_publish(server, f"telemetry/dev-{index}", b"{}")
    assert _consume(server, "ingest", telemetry_stream(), "ingest", 3) >= 3


def test_the_ingest_user_publishes_routes(server):
    async def publish(client: Client) -> object:
        return await client.jetstream(timeout=5).publish("routes.dev-1", b"{}")

    before = stream_messages(server, "ROUTES")
    ack, errors = as_user(server, "ingest", publish)
    assert not errors, errors
    assert getattr(ack, "stream", None) == "ROUTES", ack
    assert stream_messages(server, "ROUTES") == before + 1


def test_the_route_delivery_user_consumes_its_durable_on_routes(server):
    async def publish(client: Client) -> object:
        return await client.jetstream(timeout=5).publish("routes.dev-2", b"{}")

    as_user(server, "ingest", publish)
    assert _consume(server, "route-delivery", routes_stream(), "route-delivery", 1) >= 1


# -- and nothing else ------------------------------------------------------------------------

FORBIDDEN_PUBLISHES = {
    "route-delivery publishes a route": ("route-delivery", "routes.x", "ROUTES"),
    "ingest publishes telemetry": ("ingest", "telemetry.x", "TELEMETRY"),
    "the owner publishes telemetry": ("owner", "telemetry.x", "TELEMETRY"),
}


@pytest.mark.parametrize("case", FORBIDDEN_PUBLISHES, ids=list(FORBIDDEN_PUBLISHES))
def test_a_forbidden_publish_is_refused_and_stored_nowhere(server, case):
    user, subject, stream = FORBIDDEN_PUBLISHES[case]
    before = stream_messages(server, stream)

    async def publish(client: Client) -> None:
        await client.publish(subject, b"{}")

    _, errors = as_user(server, user, publish)
    assert any(f'permissions violation for publish to "{subject}"' in error.lower()
               for error in errors), errors
    assert stream_messages(server, stream) == before


def test_the_bridge_user_cannot_publish_a_route_over_mqtt(server):
    before = stream_messages(server, "ROUTES")
    bridge_publish(server, "routes/x", b"{}")  # acknowledged, then dropped by NATS
    log = server.server.workdir / "nats.log"
    assert wait_for(lambda: 'Publish Violation - Subject "routes.x"' in log.read_text()), \
        log.read_text()[-2000:]
    assert stream_messages(server, "ROUTES") == before


JETSTREAM_ADMIN = {
    "ingest deletes TELEMETRY": ("ingest", lambda js: js.delete_stream("TELEMETRY"),
                                 "$JS.API.STREAM.DELETE.TELEMETRY"),
    "route-delivery deletes ROUTES": ("route-delivery", lambda js: js.delete_stream("ROUTES"),
                                      "$JS.API.STREAM.DELETE.ROUTES"),
    "ingest creates a stream": ("ingest", lambda js: js.add_stream(
        StreamConfig(name="EXTRA", subjects=["extra.>"])), "$JS.API.STREAM.CREATE.EXTRA"),
    "ingest updates TELEMETRY": ("ingest", lambda js: js.update_stream(
        StreamConfig(name="TELEMETRY", subjects=["telemetry.>"], max_bytes=1024 * 1024)),
        "$JS.API.STREAM.UPDATE.TELEMETRY"),
    "route-delivery deletes ingest's durable": (
        "route-delivery", lambda js: js.delete_consumer("TELEMETRY", "ingest"),
        "$JS.API.CONSUMER.DELETE.TELEMETRY.ingest"),
    "ingest deletes its own durable": (
        "ingest", lambda js: js.delete_consumer("TELEMETRY", "ingest"),
        "$JS.API.CONSUMER.DELETE.TELEMETRY.ingest"),
}


@pytest.mark.parametrize("case", JETSTREAM_ADMIN, ids=list(JETSTREAM_ADMIN))
def test_a_service_user_cannot_manage_streams_or_other_consumers(server, case):
    user, call, subject = JETSTREAM_ADMIN[case]

    async def action(client: Client) -> object:
        return await call(client.jetstream(timeout=2))

    result, errors = as_user(server, user, action)
    assert isinstance(result, Exception), result  # no answer: the request never got through
    assert any(f'permissions violation for publish to "{subject.lower()}"' in error.lower()
               for error in errors), errors
    for stream in ("TELEMETRY", "ROUTES"):
        assert stream_messages(server, stream) >= 0  # still there


@pytest.mark.parametrize("user, subject", [
    ("ingest", "_INBOX.route-delivery.>"),
    ("route-delivery", "_INBOX.ingest.>"),
    ("ingest", "telemetry.>"),
    ("route-delivery", "routes.>"),
    ("ingest", "$JS.ACK.>"),
])
def test_a_user_cannot_listen_to_others_replies_or_the_data(server, user, subject):
    async def subscribe(client: Client) -> None:
        await client.subscribe(subject)

    _, errors = as_user(server, user, subscribe)
    assert any(f'permissions violation for subscription to "{subject.lower()}"' in error.lower()
               for error in errors), errors
