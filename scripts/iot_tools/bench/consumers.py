"""The two reference consumers of the throughput comparison, each run as its own process
(uvloop, like the services) on a durable consumer of its own over the same stream, with
ingest_iot's settings (batch size, ack wait, ack-pending limit, payload limit) read from the
same environment the service gets:

  ceiling        the lean pull loop ingest_iot uses (services.common.messaging.lean), acking
                 each batch as ingest_iot does and doing nothing else: the most one Python
                 process moves;
  fetch-ceiling  nats-py's `fetch` and `Msg.ack()`, nothing else: the most a nats-py pull
                 consumer moves (the ceiling before the lean loop);
  one-insert     one INSERT (its own transaction, autocommit) per message, then that
                 message's ack: the naive writer, with ingest_iot's ack-after-commit guarantee.

`python -m iot_tools.bench.consumers {ceiling,fetch-ceiling,one-insert} --durable NAME
--messages N`
prints one JSON line: {"messages": …, "seconds": …, "rate": …}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import nats
import uvloop
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from services.common.config import Env
from services.common.health import HealthState
from services.common.messaging import TELEMETRY, ByteBudget, NatsLink, ensure_pull_consumer, settle
from services.common.messaging.lean import LeanPullConsumer
from services.ingest_iot.config import IngestConfig
from services.ingest_iot.telemetry import Reading, ReadingLimits, parse_reading

INSERT_ONE = """
INSERT INTO telemetry (device_id, ts, metrics) VALUES ($1, $2, $3::jsonb)
ON CONFLICT (device_id, ts) DO NOTHING
"""

Handle = Callable[[list[Msg]], Awaitable[None]]


async def _ack_only(batch: list[Msg]) -> None:
    await settle(batch, lambda message: message.ack())


def _insert_each(connection: asyncpg.Connection, limits: ReadingLimits) -> Handle:
    async def handle(batch: list[Msg]) -> None:
        window = limits.window(datetime.now(UTC))
        for message in batch:
            outcome = parse_reading(message.data, limits, window)
            if isinstance(outcome, Reading):
                await connection.execute(INSERT_ONE, outcome.device_id, outcome.ts,
                                         outcome.metrics_json)
            await message.ack()  # after its row is committed, as ingest_iot does per batch

    return handle


async def consume(
    config: IngestConfig, durable: str, messages: int, handle: Handle
) -> dict[str, float]:
    """Pull `messages` from a fresh durable consumer; rate over the steady part: from the
    first fetch's return to the last ack flushed, not counting that first batch."""
    connection = await nats.connect(config.nats_url)
    try:
        js = connection.jetstream()
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(TELEMETRY.name, durable)
        subscription = await ensure_pull_consumer(
            js, TELEMETRY, durable, ack_wait=config.ack_wait,
            max_ack_pending=config.max_ack_pending)
        done, first_batch, started = 0, 0, 0.0
        while done < messages:
            try:
                size = min(config.batch_size, messages - done)
                batch = await subscription.fetch(size, timeout=1)
            except TimeoutError:
                continue
            if not first_batch:
                first_batch, started = len(batch), time.monotonic()
            await handle(batch)
            done += len(batch)
        await connection.flush()
        seconds = time.monotonic() - started
        await js.delete_consumer(TELEMETRY.name, durable)
    finally:
        await connection.close()
    return {"messages": done, "seconds": seconds,
            "rate": (done - first_batch) / seconds if seconds > 0 else 0.0}


async def lean_ceiling(config: IngestConfig, durable: str, messages: int) -> dict[str, float]:
    """The lean loop with ingest_iot's settings (batch, ack wait, ack-pending limit, byte
    budget), acks only; timed like `consume`."""
    setup = await nats.connect(config.nats_url)
    with contextlib.suppress(NotFoundError):
        await setup.jetstream().delete_consumer(TELEMETRY.name, durable)
    await setup.close()
    health = HealthState("ceiling")
    link = NatsLink(config.nats_url, "bench-ceiling", health)
    connecting = asyncio.create_task(link.connect())
    try:
        consumer = LeanPullConsumer(link, health, TELEMETRY, durable, ack_wait=config.ack_wait,
                                    max_ack_pending=config.max_ack_pending)
        budget = ByteBudget(config.max_buffered_bytes)
        done, first_batch, started = 0, 0, 0.0
        async for batch in consumer.batches(config.batch_size, budget):
            if not first_batch:
                first_batch, started = len(batch), time.monotonic()
            await consumer.acknowledge(batch)  # as ingest_iot acks: one block per batch
            budget.give_back(sum(len(message.data) for message in batch))
            done += len(batch)
            if done >= messages:
                break
        await link.client.flush()
        seconds = time.monotonic() - started
        consumer.stop()
        await consumer.close()
        await link.jetstream.delete_consumer(TELEMETRY.name, durable)
    finally:
        await link.close()
        connecting.cancel()
    return {"messages": done, "seconds": seconds,
            "rate": (done - first_batch) / seconds if seconds > 0 else 0.0}


async def _main(kind: str, durable: str, messages: int) -> dict[str, float]:
    config = IngestConfig.from_env(Env())
    if kind == "ceiling":
        return await lean_ceiling(config, durable, messages)
    if kind == "fetch-ceiling":
        return await consume(config, durable, messages, _ack_only)
    database = await asyncpg.connect(config.database.url)
    try:
        return await consume(config, durable, messages,
                             _insert_each(database, config.reading_limits))
    finally:
        await database.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iot_tools.bench.consumers",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("ceiling", "fetch-ceiling", "one-insert"))
    parser.add_argument("--durable", required=True)
    parser.add_argument("--messages", type=int, required=True)
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(_main(args.kind, args.durable, args.messages))
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
