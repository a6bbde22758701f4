"""The lean pull loop (services.common.messaging.lean) against a real nats-server: its own
faults, one behaviour per test. The consumer runs in this process on uvloop, as in the
services; ingest_iot's use of it (exactly-once rows, the fault catalogue) is tested through
the service in test_ingest*.py and test_fault_catalogue.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
import uvloop
from iot_tools.feed import publish_readings
from nats.aio.msg import Msg

from services.common.health import HealthState
from services.common.messaging import (
    CONSUMER_CHECK_SECONDS,
    DIRECT_DELIVERY,
    TELEMETRY,
    ByteBudget,
    DirectClient,
    NatsLink,
)
from services.common.messaging.lean import (
    MISSED_HEARTBEATS,
    LeanPullConsumer,
    Pulled,
    _Inbox,
    _pub_block,
    _Request,
    parse_ack_subject,
    parse_status,
)

DURABLE = "lean-test"
# Short protocol timings keep each fault to seconds (the defaults: 5 s and 1 s).
EXPIRES, HEARTBEAT = 1.0, 0.25
LOST_BOUND = MISSED_HEARTBEATS * HEARTBEAT + 2.0  # + ticks, and a busy machine


@dataclass
class Run:
    """A consumer in this process, and what it has delivered so far."""

    health: HealthState
    link: NatsLink
    consumer: LeanPullConsumer
    budget: ByteBudget
    seqs: list[int] = field(default_factory=list)
    held: list[Pulled] = field(default_factory=list)
    hold: bool = False

    def nats_ok(self) -> bool:
        self.health.refresh()
        return self.health.readiness().body.find(b'"nats": {"status": "pass"') >= 0

    def consumer_ok(self) -> bool:
        self.health.refresh()
        return self.health.readiness().body.find(b'"consumer": {"status": "pass"') >= 0

    def transitions(self, check: str, to: str) -> int:
        """iot_readiness_check_transitions_total{check, to}: counted the moment a check
        changes, however briefly (a poll may miss a failure the loop repairs in a few ms)."""
        sample = f'iot_readiness_check_transitions_total{{check="{check}",to="{to}"}} '
        for line in self.health.metrics.render().decode().splitlines():
            if line.startswith(sample):
                return int(float(line[len(sample):]))
        return 0


async def consume(url: str, scenario: Callable[[Run], Awaitable[None]], *,
                  budget: int = 32 * 1024 * 1024, max_ack_pending: int = 10_000,
                  batch: int = 100, ping_interval: float = 2.0, in_flight: int = 4,
                  expires: float = EXPIRES, idle_heartbeat: float = HEARTBEAT) -> Run:
    health = HealthState("lean-test")
    link = NatsLink(url, "lean-test", health, ping_interval=ping_interval)
    connecting = asyncio.create_task(link.connect())
    consumer = LeanPullConsumer(link, health, TELEMETRY, DURABLE, ack_wait=30,
                                max_ack_pending=max_ack_pending, expires=expires,
                                idle_heartbeat=idle_heartbeat, in_flight=in_flight)
    run = Run(health, link, consumer, ByteBudget(budget))
    health.mark_started()

    async def loop() -> None:
        async for messages in consumer.batches(batch, run.budget):
            run.seqs += [message.metadata.sequence.stream for message in messages]
            if run.hold:
                run.held += messages
                continue
            await consumer.acknowledge(messages)  # one block of acks, as ingest_iot
            run.budget.give_back(sum(len(message.data) for message in messages))

    consuming = asyncio.create_task(loop())
    try:
        await scenario(run)
    finally:
        consumer.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(consuming, 10)
        await consumer.close()
        await link.close()
        connecting.cancel()
    return run


def run_async(coroutine: Awaitable[Run]) -> Run:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)  # type: ignore[arg-type]


async def until(condition: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until `condition` held (polled every 20 ms); None if it never did."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    return None


def assert_each_once(seqs: list[int], count: int) -> None:
    assert sorted(set(seqs)) == list(range(1, count + 1))


# -- direct delivery -----------------------------------------------------------------------


def test_a_direct_subscription_hands_every_message_to_its_function_raw_and_in_order(
        nats_server):
    """DirectClient: data and status (headers-only) messages go to the plain function, raw,
    in the order they came, none to nats-py's callback; once unsubscribed, nothing is kept
    for the subscription."""

    async def scenario() -> tuple[list, list, int]:
        client = DirectClient()
        await client.connect(nats_server.url)
        direct: list[tuple[bytes, bytes, bytes, bytes | None]] = []
        through_callback: list[Msg] = []

        async def callback(message: Msg) -> None:
            through_callback.append(message)

        subscription = await client.subscribe("direct.test", cb=callback)
        client.deliver_directly(subscription, lambda *fields: direct.append(fields))
        await client.publish("direct.test", b"payload", reply="the.reply")
        await client.publish("direct.test", b"", headers={"Nats-Consumer-Stalled": "fc.x"})
        await client.flush()
        await until(lambda: len(direct) >= 2, 5)
        await subscription.unsubscribe()
        kept = len(client._direct)
        await client.close()
        return direct, through_callback, kept

    direct, through_callback, kept = run_async(scenario())  # type: ignore[arg-type]
    assert direct[0] == (b"direct.test", b"the.reply", b"payload", None)
    assert direct[1][2] == b"" and b"Nats-Consumer-Stalled: fc.x" in direct[1][3]
    assert len(direct) == 2 and through_callback == []
    assert kept == 0


def test_a_raw_status_header_block_is_read_as_nats_py_reads_it():
    assert parse_status(b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 0\r\n"
                        b"Nats-Consumer-Stalled: $JS.FC.x.y\r\n\r\n") == (
        "100", "Idle Heartbeat", {"Nats-Last-Consumer": "0",
                                  "Nats-Consumer-Stalled": "$JS.FC.x.y"})
    assert parse_status(b"NATS/1.0 408 Request Timeout\r\n\r\n") == (
        "408", "Request Timeout", {})
    assert parse_status(b"NATS/1.0 503\r\n\r\n") == ("503", "", {})
    assert parse_status(b"NATS/1.0\r\nKey: v\r\n\r\n") == (None, "", {"Key": "v"})


def test_a_trailing_batch_completed_status_never_ends_the_request_open_on_its_inbox():
    """The server may follow a request's last message with 409 Batch Completed; the loop has
    ended that request on its count already and may have sent the next on the same inbox."""
    health = HealthState("lean-test")
    consumer = LeanPullConsumer(NatsLink("nats://127.0.0.1:1", "lean-test", health), health,
                                TELEMETRY, DURABLE, ack_wait=30, max_ack_pending=100)
    inbox = _Inbox("_INBOX.test.0")
    inbox.request = _Request(batch=100, max_bytes=1024, issued_at=0.0, deadline=10.0)
    consumer._on_status(inbox, "409", "Batch Completed", None)
    assert inbox.request is not None
    consumer._on_status(inbox, "408", "Request Timeout", None)
    assert inbox.request is None


def test_the_installed_nats_py_offers_the_direct_delivery_hook():
    """Otherwise DirectClient quietly falls back to nats-py's callbacks: correct, but the
    ceiling and ingest_iot would lose their fast path without a test noticing."""
    assert DIRECT_DELIVERY


def test_the_loop_receives_data_directly_on_every_open_inbox(nats_server):
    count = 300
    publish_readings(nats_server.url, range(count))

    async def scenario(run: Run) -> None:
        assert await until(lambda: len(run.seqs) >= count, 15) is not None
        client = run.link.client
        assert isinstance(client, DirectClient)
        inboxes = run.consumer._inboxes
        assert inboxes and all(inbox.subscription._id in client._direct for inbox in inboxes)
        # None of the data went through nats-py's per-subscription path.
        assert all(inbox.subscription.delivered == 0 for inbox in inboxes)

    run = run_async(consume(nats_server.url, scenario))
    assert_each_once(run.seqs, count)


# -- the protocol ------------------------------------------------------------------------


def test_ack_subject_metadata_is_read_in_both_layouts():
    stored = datetime(2025, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    ns = int(stored.timestamp() * 1e9)
    v1 = parse_ack_subject(f"$JS.ACK.TELEMETRY.ingest.2.41.17.{ns}.9")
    v2 = parse_ack_subject(f"$JS.ACK.hub.ACCHASH.TELEMETRY.ingest.2.41.17.{ns}.9.tok")
    for metadata in (v1, v2):
        assert (metadata.stream, metadata.consumer) == ("TELEMETRY", "ingest")
        assert (metadata.sequence.stream, metadata.sequence.consumer) == (41, 17)
        assert (metadata.num_delivered, metadata.num_pending) == (2, 9)
        assert abs(metadata.timestamp - stored) < timedelta(microseconds=2)
    assert v2.domain == "hub"


def test_a_batch_of_acks_is_one_block_of_pub_lines():
    assert _pub_block(["$JS.ACK.S.c.1.5.5.1.0", "$JS.ACK.S.c.1.6.6.2.0"], b"+ACK") == (
        b"PUB $JS.ACK.S.c.1.5.5.1.0 4\r\n+ACK\r\nPUB $JS.ACK.S.c.1.6.6.2.0 4\r\n+ACK\r\n")


@pytest.mark.parametrize("reply", ["a b", "a\r\nPUB x 1", "a\tb", "", "é"])
def test_a_reply_that_could_break_a_protocol_line_is_never_written_into_a_block(reply):
    assert _pub_block(["$JS.ACK.S.c.1.5.5.1.0", reply], b"+ACK") is None


def test_every_message_is_delivered_once_with_its_stream_metadata_and_acked(nats_server):
    count = 3_000
    publish_readings(nats_server.url, range(count))

    async def scenario(run: Run) -> None:
        assert await until(lambda: len(run.seqs) >= count, 30) is not None
        await run.link.client.flush()
        info = await run.link.jetstream.consumer_info(TELEMETRY.name, DURABLE)
        assert info.ack_floor.stream_seq == count and info.num_ack_pending == 0

    run = run_async(consume(nats_server.url, scenario))
    assert_each_once(run.seqs, count)
    assert run.consumer.requests_lost == 0


def test_requests_expiring_with_no_messages_are_reissued_without_a_readiness_flap(nats_server):
    async def scenario(run: Run) -> None:
        assert await until(run.consumer_ok, 15) is not None
        issued = run.consumer.requests_issued
        deadline = time.monotonic() + 4 * EXPIRES
        while time.monotonic() < deadline:
            assert run.nats_ok() and run.consumer_ok()
            await asyncio.sleep(0.05)
        # Every in-flight request ended (408) and was sent again, at least three times over.
        assert run.consumer.requests_issued >= issued + 3 * 4

    run = run_async(consume(nats_server.url, scenario))
    assert run.consumer.requests_lost == 0
    assert run.seqs == []


# -- faults --------------------------------------------------------------------------------


def test_server_restart_mid_request_reissues_requests_and_loses_nothing(nats_server):
    count = 4_000
    publish_readings(nats_server.url, range(count))

    async def scenario(run: Run) -> None:
        assert await until(lambda: len(run.seqs) > 0, 15) is not None
        nats_server.kill()
        assert await until(lambda: not run.nats_ok(), 5) is not None
        nats_server.start()
        # Green again within the reconnect wait plus a heartbeat round.
        assert await until(run.nats_ok, 15) is not None
        assert await until(lambda: len(set(run.seqs)) >= count, 60) is not None

    run = run_async(consume(nats_server.url, scenario, batch=50))
    assert sorted(set(run.seqs)) == list(range(1, count + 1))


def test_a_reconnect_the_loop_never_saw_reissues_its_requests_at_once(nats_server):
    """The connection drops and the client is back, possibly before the loop's next turn: the
    open requests went with the old connection (a server frozen past their expiry, then
    thawed, has none), so the loop re-issues all of them on fresh inboxes at once, told by
    the client's reconnect count, rather than waiting MISSED_HEARTBEATS heartbeats to take
    them for lost. Readings published afterwards arrive at once."""
    count = 200

    async def scenario(run: Run) -> None:
        assert await until(run.consumer_ok, 15) is not None
        await asyncio.sleep(2 * HEARTBEAT)  # requests open and idle on the server
        reconnects = run.link.client.stats["reconnects"]
        issued = run.consumer.requests_issued
        run.link.client._transport.close()  # the socket drops under the client
        assert await until(lambda: run.link.client.stats["reconnects"] > reconnects, 5)
        assert await until(lambda: run.consumer.requests_issued >= issued + 4, HEARTBEAT) \
            is not None
        await asyncio.to_thread(publish_readings, nats_server.url, range(count))
        assert await until(lambda: len(run.seqs) >= count, MISSED_HEARTBEATS * HEARTBEAT) \
            is not None
        assert run.consumer.requests_lost == 0

    run = run_async(consume(nats_server.url, scenario))
    assert_each_once(run.seqs, count)


def test_consumer_deleted_mid_batch_is_recreated_from_the_ack_floor_and_nothing_is_lost(
        nats_server):
    count = 4_000
    publish_readings(nats_server.url, range(count))

    async def scenario(run: Run) -> None:
        assert await until(lambda: len(run.seqs) >= 500, 15) is not None
        failed = run.transitions("consumer", "fail")
        await run.link.jetstream.delete_consumer(TELEMETRY.name, DURABLE)
        assert await until(lambda: run.transitions("consumer", "fail") > failed, 10) \
            is not None
        assert await until(run.consumer_ok, 15) is not None
        assert await until(lambda: len(set(run.seqs)) >= count, 60) is not None

    run = run_async(consume(nats_server.url, scenario, batch=50))
    assert sorted(set(run.seqs)) == list(range(1, count + 1))
    # Re-created after the ack floor last seen: only messages acked since are delivered twice.
    assert len(run.seqs) - count < 2_000


def test_held_messages_at_the_ack_pending_limit_keep_requests_alive_and_memory_bounded(
        nats_server):
    count, limit = 2_000, 300
    publish_readings(nats_server.url, range(count))

    async def scenario(run: Run) -> None:
        run.hold = True  # a writer that does not settle: the server stops at max_ack_pending
        assert await until(lambda: len(run.seqs) >= limit, 15) is not None
        deadline = time.monotonic() + 3 * MISSED_HEARTBEATS * HEARTBEAT
        while time.monotonic() < deadline:
            assert run.nats_ok(), "flapped while the server waited for acks"
            assert len(run.seqs) == limit
            assert run.budget.used <= run.budget.limit + run.link.client.max_payload
            await asyncio.sleep(0.05)
        run.hold = False
        await run.consumer.acknowledge(run.held)
        run.budget.give_back(sum(len(message.data) for message in run.held))
        assert await until(lambda: len(set(run.seqs)) >= count, 30) is not None

    run = run_async(consume(nats_server.url, scenario, max_ack_pending=limit, batch=100,
                            budget=2 * 1024 * 1024))
    assert_each_once(run.seqs, count)
    assert run.consumer.requests_lost == 0


def test_a_frozen_server_fails_readiness_through_missed_heartbeats_within_the_bound(
        nats_server):
    async def scenario(run: Run) -> None:
        assert await until(run.consumer_ok, 15) is not None
        await asyncio.sleep(2 * HEARTBEAT)
        nats_server.freeze()
        try:
            # Client pings are minutes apart here: only the heartbeats can tell.
            assert await until(lambda: not run.nats_ok(), LOST_BOUND) is not None
            assert b"heartbeat" in run.health.readiness().body
        finally:
            nats_server.thaw()
        assert await until(run.nats_ok, 15) is not None

    # Requests expire long after the bound, so neither an expiry nor a ping can be what noticed.
    run = run_async(consume(nats_server.url, scenario, ping_interval=600,
                            expires=4 * LOST_BOUND))
    assert run.consumer.requests_lost >= 1


def test_a_frozen_server_is_noticed_by_heartbeats_while_a_consumer_check_waits_on_it(
        nats_server):
    """The loop looks its consumer up every CONSUMER_CHECK_SECONDS, a JetStream API round trip
    that a frozen server leaves unanswered until its 5 s timeout. The heartbeat watch must
    not wait behind it: with heartbeats 1 s apart (the default), readiness fails within
    MISSED_HEARTBEATS of them, although a check starts during every such window."""
    heartbeat = 1.0
    assert MISSED_HEARTBEATS * heartbeat > CONSUMER_CHECK_SECONDS  # a check always falls in

    async def scenario(run: Run) -> None:
        assert await until(run.consumer_ok, 15) is not None
        await asyncio.sleep(heartbeat / 2)
        nats_server.freeze()
        try:
            noticed = await until(lambda: not run.nats_ok(), 15)
            assert noticed is not None
            assert noticed <= MISSED_HEARTBEATS * heartbeat + 1.5
            assert b"heartbeat" in run.health.readiness().body
        finally:
            nats_server.thaw()
        # The thawed server answers the re-issued requests: ready again within a heartbeat.
        recovered = await until(run.nats_ok, 15)
        assert recovered is not None and recovered <= heartbeat + 1.5

    run_async(consume(nats_server.url, scenario, ping_interval=600, idle_heartbeat=heartbeat,
                      expires=20.0))


@pytest.mark.parametrize("in_flight", [1, 4])
def test_in_flight_requests_never_reserve_more_than_the_byte_budget(nats_server, in_flight):
    count = 1_000
    publish_readings(nats_server.url, range(count))
    budget = 2 * 1024 * 1024
    peak = 0

    async def scenario(run: Run) -> None:
        nonlocal peak
        started = time.monotonic()
        while len(set(run.seqs)) < count and time.monotonic() - started < 30:
            peak = max(peak, run.budget.used)
            await asyncio.sleep(0.005)

    run = run_async(consume(nats_server.url, scenario, budget=budget, in_flight=in_flight))
    assert_each_once(run.seqs, count)
    assert 0 < peak <= budget + run.link.client.max_payload
