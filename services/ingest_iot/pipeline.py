"""JetStream → PostgreSQL with ack-after-commit.

Two tasks share a bounded queue: the fetcher pulls batches from the durable consumer, the
writer validates them, commits them in one statement, publishes route fan-out, and only
then acks. A crash anywhere before the ack means redelivery, which the idempotent insert
absorbs: at-least-once delivery, exactly-once rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator

import asyncpg
from nats.aio.msg import Msg

from services.common import db
from services.common.health import CheckResult, HealthState
from services.common.logs import describe_error
from services.common.messaging import ROUTES, TELEMETRY, NatsLink, PullConsumer, settle
from services.common.retry import Backoff
from services.ingest_iot.config import IngestConfig
from services.ingest_iot.store import BatchRows, commit_batch, routed_devices
from services.ingest_iot.telemetry import Reading, parse_reading

log = logging.getLogger("pipeline")

# A commit waits for locks rather than failing fast, but not forever (a hung server).
COMMIT_TIMEOUT_SECONDS = 60.0
# Put on the queue by the fetcher after its last batch: the writer drains up to it, then ends.
END_OF_FETCH: list[Msg] = []


class IngestPipeline:
    def __init__(self, config: IngestConfig, health: HealthState, nats_link: NatsLink) -> None:
        self._config = config
        self._health = health
        self._nats = nats_link
        self._consumer = PullConsumer(
            nats_link, health, TELEMETRY, config.durable,
            ack_wait=config.ack_wait, max_ack_pending=config.max_ack_pending,
            also_ensure=(ROUTES,),  # we publish into it; route_delivery consumes it
        )
        self._fetched: asyncio.Queue[list[Msg]] = asyncio.Queue(config.prefetch_batches)
        self._carry: deque[Msg] = deque()
        self._fetch_ended = False
        self._writer_running = False
        self._routes: dict[str, tuple[int, ...]] = {}
        self._connection = db.DedicatedConnection(config.database.url, "ingest_iot")

    def check(self) -> CheckResult:
        """Readiness check "batch_writer": the writer runs and the consumer is bound."""
        if not self._writer_running:
            return CheckResult.failing("writer not running")
        if not self._consumer.bound:
            return CheckResult.failing("consumer not bound")
        return CheckResult.passing("running")

    # -- fetching ----------------------------------------------------------------------

    async def run_fetcher(self) -> None:
        async for messages in self._consumer.batches(self._config.batch_size):
            await self._fetched.put(messages)
        await self._fetched.put(END_OF_FETCH)

    # -- writing -----------------------------------------------------------------------

    async def run_writer(self) -> None:
        self._writer_running = True
        self._health.refresh()
        try:
            while True:
                batch = await self._next_batch()
                if not batch:
                    return  # stopping, and everything fetched has been written
                await self._write(batch)
        finally:
            self._writer_running = False

    async def _next_batch(self) -> list[Msg]:
        """Up to batch_size messages: a full batch at once, a partial one after the flush
        interval. Empty only when stopping with nothing left."""
        size = self._config.batch_size
        while not self._carry:
            first = await self._get(wait=None)
            if first is None:
                return []
            self._carry.extend(first)
        deadline = asyncio.get_running_loop().time() + self._config.flush_interval
        while len(self._carry) < size:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            more = await self._get(wait=remaining)
            if more is None:
                break
            self._carry.extend(more)
        take = min(size, len(self._carry))
        return [self._carry.popleft() for _ in range(take)]

    async def _get(self, wait: float | None) -> list[Msg] | None:
        """Next fetched list; None after `wait` seconds or once the fetcher has ended."""
        if self._fetch_ended:
            return None
        try:
            messages = await asyncio.wait_for(self._fetched.get(), wait)
        except TimeoutError:
            return None
        if messages is END_OF_FETCH:
            self._fetch_ended = True
            return None
        return messages

    async def _write(self, batch: list[Msg]) -> None:
        rows = BatchRows()
        routed: list[tuple[int, Reading]] = []
        readings = 0
        for message in batch:
            outcome = parse_reading(message.data, self._config.max_payload_bytes)
            if isinstance(outcome, Reading):
                rows.add_reading(outcome)
                readings += 1
                routed.extend((route, outcome) for route in self._routes.get(outcome.device_id, ()))
            else:
                rows.add_rejection(message.metadata.sequence.stream, message.subject,
                                   outcome.reason, message.data, self._config.max_payload_bytes)

        async with self._keep_in_progress(batch):
            result = await self._commit(rows)
        self._health.count("ingested", result.stored)
        self._health.count("duplicates", readings - result.stored)
        self._health.count("quarantined", len(rows.quarantine_seqs))

        if routed and not await self._publish_routes(routed):
            # Committed but not fanned out: have the batch redelivered. The insert is then a
            # no-op and the route messages are de-duplicated by their message id.
            await settle(batch, lambda message: message.nak(delay=1.0))
            return
        await settle(batch, lambda message: message.ack())
        self._health.count("batches")

    async def _commit(self, rows: BatchRows):
        backoff = Backoff(initial=0.2, maximum=5.0)
        reported = False
        while True:
            try:
                connection = await self._connection.get()
                result = await commit_batch(connection, rows, COMMIT_TIMEOUT_SECONDS)
            except db.UNAVAILABLE as error:
                self._connection.discard()
                if not reported:
                    log.warning("commit failed (%s); retrying until the database is back",
                                describe_error(error))
                    reported = True
                await backoff.wait()
                continue
            if reported:
                log.info("commit succeeded after retries")
            return result

    @contextlib.asynccontextmanager
    async def _keep_in_progress(self, batch: list[Msg]) -> AsyncIterator[None]:
        """While a commit takes long (locks, outage), tell JetStream the batch is still being
        worked on, so it is not redelivered to another pod meanwhile."""

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(self._config.ack_wait / 3)
                await settle(batch, lambda message: message.in_progress())

        task = asyncio.create_task(heartbeat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _publish_routes(self, routed: list[tuple[int, Reading]]) -> bool:
        js = self._nats.jetstream
        publishes = []
        for route_id, reading in routed:
            ts = reading.ts.isoformat()
            payload = (f'{{"route_id":{route_id},"device_id":{json.dumps(reading.device_id)},'
                       f'"ts":"{ts}","metrics":{reading.metrics_json}}}')
            publishes.append(js.publish(
                f"routes.{reading.device_id}", payload.encode(),
                headers={"Nats-Msg-Id": f"{route_id}/{reading.device_id}/{ts}"},
            ))
        outcomes = await asyncio.gather(*publishes, return_exceptions=True)
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            log.warning("route fan-out failed for %d of %d messages (%s)",
                        len(failures), len(outcomes), describe_error(failures[0]))
            return False
        self._health.count("routed", len(outcomes))
        return True

    # -- routes ------------------------------------------------------------------------

    async def run_routes_refresher(self) -> None:
        """Keep the set of devices with routes current (a small table, read every few s)."""
        connection = db.DedicatedConnection(self._config.database.url, "ingest_iot-routes")
        while True:
            try:
                self._routes = await routed_devices(await connection.get())
            except (*db.UNAVAILABLE, asyncpg.PostgresError):
                connection.discard()
            await asyncio.sleep(self._config.routes_refresh)

    # -- shutdown ----------------------------------------------------------------------

    def stop_fetching(self) -> None:
        """Take no more messages: the fetcher ends after its current fetch (≤ 1 s), and the
        writer then commits and acks everything fetched and returns."""
        self._consumer.stop()

    async def close(self) -> None:
        await self._consumer.close()
        await self._connection.close()

