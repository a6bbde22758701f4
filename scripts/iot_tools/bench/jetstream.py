"""The JetStream side of the throughput runs: readings published once, then replayed through
a freshly created durable consumer for every run, and the consumer's progress read from the
server's monitoring endpoint (which costs the measured processes nothing)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import nats
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from iot_tools.feed import encode, reading
from services.common.messaging import TELEMETRY, ensure_pull_consumer, ensure_stream

Payloads = list[tuple[str, bytes]]


def readings(count: int, devices: int, epoch: datetime) -> Payloads:
    """(subject, payload) of `count` valid readings, as devices would send them."""
    return [(f"telemetry.{doc['device_id']}", encode(doc))
            for doc in (reading(index, devices, epoch=epoch) for index in range(count))]


@contextlib.asynccontextmanager
async def _jetstream(nats_url: str) -> AsyncIterator[JetStreamContext]:
    connection = await nats.connect(nats_url)
    try:
        yield connection.jetstream()
    finally:
        await connection.close()


async def _publish(nats_url: str, payloads: Payloads) -> None:
    async with _jetstream(nats_url) as js:
        await ensure_stream(js, TELEMETRY)
        # Asynchronous publishes (a bounded window of unacknowledged ones): several times
        # faster than awaiting each ack, and every ack is still checked (gather raises).
        acks = [await js.publish_async(subject, payload) for subject, payload in payloads]
        await asyncio.gather(*acks)


def publish(nats_url: str, payloads: Payloads) -> None:
    """Into TELEMETRY, each acknowledged by JetStream."""
    asyncio.run(_publish(nats_url, payloads))


@dataclass(frozen=True)
class ConsumerSettings:
    durable: str
    ack_wait: float
    max_ack_pending: int


async def _recreate(nats_url: str, consumer: ConsumerSettings) -> None:
    async with _jetstream(nats_url) as js:
        # The service heals a deleted durable at once (re-created after its ack floor, the
        # end of the stream): when it wins the race, delete again until ours is the one.
        for _attempt in range(20):
            with contextlib.suppress(NotFoundError):
                await js.delete_consumer(TELEMETRY.name, consumer.durable)
            # The services' own definition (same code path as ingest_iot), so a replay
            # differs from a live consumer only in starting again from the first message.
            subscription = await ensure_pull_consumer(
                js, TELEMETRY, consumer.durable, ack_wait=consumer.ack_wait,
                max_ack_pending=consumer.max_ack_pending)
            await subscription.unsubscribe()
            info = await js.consumer_info(TELEMETRY.name, consumer.durable)
            if info.config.deliver_policy == DeliverPolicy.ALL:
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"could not replay {consumer.durable}: its service keeps re-creating it")


def replay(nats_url: str, consumer: ConsumerSettings) -> None:
    """Delete and recreate the durable consumer: it delivers the whole stream again. A
    service already pulling from that durable name simply receives from the new one."""
    asyncio.run(_recreate(nats_url, consumer))


@dataclass(frozen=True)
class ConsumerProgress:
    acked_through: int  # stream sequence below which everything is acked
    ack_pending: int
    stream_last_seq: int

    @property
    def done(self) -> bool:
        return self.ack_pending == 0 and self.acked_through >= self.stream_last_seq


def progress(monitor_port: int, durable: str) -> ConsumerProgress | None:
    """The consumer's state from /jsz; None while it does not exist."""
    url = (f"http://127.0.0.1:{monitor_port}/jsz?accounts=true&streams=true&consumers=true")
    with urllib.request.urlopen(url, timeout=5) as response:
        report = json.load(response)
    for account in report.get("account_details", []):
        for stream in account.get("stream_detail", []):
            if stream["name"] != TELEMETRY.name:
                continue
            for consumer in stream.get("consumer_detail", []):
                if consumer["name"] == durable:
                    return ConsumerProgress(consumer["ack_floor"]["stream_seq"],
                                            consumer["num_ack_pending"],
                                            stream["state"]["last_seq"])
    return None
