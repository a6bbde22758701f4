"""JetStream → PostgreSQL with ack-after-commit.

Two tasks share a bounded queue: the fetcher pulls batches from the durable consumer (the
lean pull loop, services.common.messaging.lean), the writer validates them, commits them in
one statement, publishes route fan-out, and only then acks. A crash anywhere before the ack
means redelivery, which the idempotent insert absorbs: at-least-once delivery, exactly-once
rows.

The writer is pipelined: it validates batch N+1 while batch N commits, starts commit N+1 as
soon as commit N has finished (and batch N-1 has settled), and settles batch N (route
fan-out, then acks) while N+1 commits. So one consumer never has two commits in flight, nor
out of order; batches settle in order, each only after its own commit; a commit that fails
settles nothing. Validation yields to the event loop every VALIDATION_SLICE messages, so that
/health (answered by this loop) never waits behind a whole batch.

It also commits in groups: when batch N+1 is validated and commit N is still running, what
is fetched meanwhile is validated too and joins N+1, up to GROUPED_BATCHES batches in one
commit. Under full load a commit's round trip, not the loop, set the pace (the loop was idle a
third of the time, waiting for it); a group pays that round trip once. When the writer keeps
up, nothing waits and every commit is one batch, as before.

Errors follow the failure taxonomy (services.common.faults): the database or NATS being
unavailable is retried until they are back (readiness shows it); a message the database
refuses is isolated by splitting its batch and quarantined; anything else is a bug and
ends the writer, which fails liveness.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from services.common import db
from services.common.health import CheckResult, HealthState
from services.common.messaging import ByteBudget, NatsLink, PullConsumer, require_stream
from services.common.messaging.lean import LeanPullConsumer, Pulled
from services.common.retry import Attempts
from services.ingest_iot.config import IngestConfig
from services.ingest_iot.store import (
    BatchRows,
    CommitResult,
    Entry,
    commit_batch,
    commit_isolating,
    routed_devices,
)
from services.ingest_iot.telemetry import Reading, check_sender, parse_reading

log = logging.getLogger("pipeline")

# A commit waits for locks rather than failing fast, but not forever (a hung server). The
# worker stall threshold (WORKER_STALL_SECONDS) must stay above it.
COMMIT_TIMEOUT_SECONDS = 60.0
# Route publications awaiting JetStream's acknowledgement at once, at most.
FAN_OUT_IN_FLIGHT = 1000
# Messages validated between two yields to the event loop (about 0.7 ms of work at the
# bench's rate): /ready and /health are answered in between.
VALIDATION_SLICE = 100
# Batches one commit carries at most (group commit): rows per statement stay within
# GROUPED_BATCHES x BATCH_SIZE, and the bytes they hold within the fetch budget as before.
GROUPED_BATCHES = 4
# Histogram buckets: BATCH_SIZE is 1 to 10,000 (500 by default), a commit carries up to
# GROUPED_BATCHES of them; a commit takes milliseconds and is abandoned at
# COMMIT_TIMEOUT_SECONDS.
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10_000, 20_000, 40_000)
COMMIT_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                          5.0, 10.0, 30.0, 60.0)
# Put on the queue by the fetcher after its last batch: the writer drains up to it, then ends.
END_OF_FETCH: list[Pulled] = []


@dataclass(frozen=True, slots=True)
class _Write:
    """One batch on its way: its commit, its settling (fan-out, then acks) after the commit,
    and the settling of the batch before it, which its own waits for."""

    commit: asyncio.Task[CommitResult]
    settle: asyncio.Task[None]
    after: asyncio.Task[None] | None

    def under_way(self) -> set[asyncio.Task]:
        """What `committed` still waits for: the commit, the settling of the batch before."""
        return {task for task in (self.commit, self.after)
                if task is not None and not task.done()}

    async def committed(self) -> None:
        """The commit has finished and the batch before has settled. A failure of either
        (a bug: dependency errors are retried inside them) is raised here."""
        await self.commit
        if self.after is not None:
            await self.after

    async def finished(self) -> None:
        await self.committed()
        await self.settle

    async def abandon(self) -> None:
        tasks = [task for task in (self.commit, self.settle, self.after) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class IngestPipeline:
    def __init__(
        self, config: IngestConfig, health: HealthState, nats_link: NatsLink,
        consumer_class: type[PullConsumer] = LeanPullConsumer,
    ) -> None:
        self._config = config
        self._health = health
        self._nats = nats_link
        # The bench swaps in nats-py's fetch path (PullConsumer) to compare the two.
        self._consumer = consumer_class(
            nats_link, health, config.telemetry_stream, config.durable,
            ack_wait=config.ack_wait, max_ack_pending=config.max_ack_pending,
            # We publish into it (route_delivery consumes); its owner creates it.
            also_require=(config.routes_stream,),
        )
        self._budget = ByteBudget(config.max_buffered_bytes)
        self._fetched: asyncio.Queue[list[Pulled]] = asyncio.Queue(config.prefetch_batches)
        self._carry: deque[Pulled] = deque()
        self._fetch_ended = False
        self._writer_running = False
        self._routes: dict[str, tuple[int, ...]] = {}
        self._connection = db.DedicatedConnection(config.database.url, "ingest_iot")
        self._progress = health.progress("writer")
        self._commits = Attempts(health.dependency("database"), "writer",
                                 progress=self._progress)
        self._fan_out = Attempts(health.dependency("nats"), "route fan-out",
                                 progress=self._progress)
        self._check_routes_stream = False
        metrics = health.metrics
        self._batch_size = metrics.histogram(
            "iot_ingest_batch_size_messages", "Messages per committed batch.",
            BATCH_SIZE_BUCKETS)
        self._commit_seconds = metrics.histogram(
            "iot_ingest_commit_seconds",
            "One batch's INSERT … unnest statement and commit, when it succeeds.",
            COMMIT_SECONDS_BUCKETS)
        self._rejected = metrics.counter(
            "iot_ingest_rejected",
            "Messages quarantined, by reason, counted when their batch commits (a message "
            "redelivered after its commit counts again; the rows are iot_ingest_messages "
            "outcome=quarantined).", ["reason"])

    def check(self) -> CheckResult:
        """Readiness check "batch_writer": the writer runs."""
        if not self._writer_running:
            return CheckResult.failing("writer not running")
        return CheckResult.passing("running")

    # -- fetching ----------------------------------------------------------------------

    async def run_fetcher(self) -> None:
        async for messages in self._consumer.batches(self._config.batch_size, self._budget):
            await self._fetched.put(messages)
        await self._fetched.put(END_OF_FETCH)

    # -- writing -----------------------------------------------------------------------

    async def run_writer(self) -> None:
        self._writer_running = True
        self._health.refresh()
        latest: _Write | None = None
        try:
            while True:
                if latest is not None and not self._more_at_hand():
                    # Nothing to validate meanwhile: finish the write in hand first (its
                    # failure surfaces now, not whenever the next message comes).
                    with self._progress.working():
                        await latest.finished()
                    latest = None
                batch = await self._next_batch()
                if not batch:
                    break  # stopping, and everything fetched has been written
                with self._progress.working():
                    await self._progress.checkpoint()
                    entries = await self._validate(batch)
                    if latest is not None:
                        batch, entries = await self._group(latest, batch, entries)
                        # One commit at a time, in order; the one before it is settled by
                        # now, so at most one batch settles while the next commits.
                        await latest.committed()
                    latest = self._start_write(batch, entries, latest)
            if latest is not None:
                with self._progress.working():
                    await latest.finished()
                latest = None
        finally:
            if latest is not None:
                # The writer itself ends (cancelled, or a bug): the write in hand ends with it,
                # unacked, so its messages are redelivered.
                await latest.abandon()
            self._writer_running = False
            self._health.refresh()

    def _start_write(self, batch: list[Pulled], entries: list[Entry],
                     previous: _Write | None) -> _Write:
        """Commit `batch` now; settle it (fan-out, acks) once it has committed and the batch
        before it has settled. The batch's bytes go back to the budget however it ends."""
        commit = asyncio.create_task(self._commit_in_progress(batch, entries))
        after = previous.settle if previous is not None else None

        async def settle_in_order() -> None:
            try:
                result = await commit
                if after is not None:
                    await after
                await self._settle(batch, entries, result)
            finally:
                self._budget.give_back(sum(len(message.data) for message in batch))

        return _Write(commit, asyncio.create_task(settle_in_order()), after)

    async def _group(self, latest: _Write, batch: list[Pulled],
                     entries: list[Entry]) -> tuple[list[Pulled], list[Entry]]:
        """While `latest` still commits, validate what is fetched meanwhile into this
        batch, up to GROUPED_BATCHES batches; once `latest` has committed, wait no longer."""
        size = self._config.batch_size
        limit = GROUPED_BATCHES * size
        while (under_way := latest.under_way()) and len(batch) < limit:
            more = self._take_at_hand(min(size, limit - len(batch)))
            if more:
                entries += await self._validate(more)
                batch += more
            elif not await self._arrival_before(under_way):
                break
        return batch, entries

    async def _arrival_before(self, under_way: set[asyncio.Task]) -> bool:
        """Wait for the next fetched list or the end of what is `under_way`, whichever comes
        first; True if a list came (it is in the carry now)."""
        if self._fetch_ended:
            return False
        arrival = asyncio.ensure_future(self._fetched.get())
        try:
            await asyncio.wait({arrival, *under_way}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            arrival.cancel()  # the writer ends: no get may outlive it and take a list
            raise
        if not arrival.done():
            arrival.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await arrival  # a cancelled get leaves its list in the queue
        if arrival.cancelled():
            return False
        messages = arrival.result()
        if messages is END_OF_FETCH:
            self._fetch_ended = True
            return False
        self._carry.extend(messages)
        return True

    def _take_at_hand(self, limit: int) -> list[Pulled]:
        """Up to `limit` messages fetched already, without waiting for any."""
        while len(self._carry) < limit and not self._fetch_ended:
            try:
                messages = self._fetched.get_nowait()
            except asyncio.QueueEmpty:
                break
            if messages is END_OF_FETCH:
                self._fetch_ended = True
                break
            self._carry.extend(messages)
        take = min(limit, len(self._carry))
        return [self._carry.popleft() for _ in range(take)]

    def _more_at_hand(self) -> bool:
        return bool(self._carry) or not self._fetched.empty()

    async def _validate(self, batch: list[Pulled]) -> list[Entry]:
        limits = self._config.reading_limits
        window = limits.window(datetime.now(UTC))
        entries = []
        for start in range(0, len(batch), VALIDATION_SLICE):
            if start:
                await asyncio.sleep(0)
            entries += [Entry(message, check_sender(parse_reading(message.data, limits, window),
                                                    message.subject))
                        for message in batch[start:start + VALIDATION_SLICE]]
        return entries

    async def _next_batch(self) -> list[Pulled]:
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

    async def _get(self, wait: float | None) -> list[Pulled] | None:
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

    async def _commit_in_progress(self, batch: list[Pulled],
                                  entries: list[Entry]) -> CommitResult:
        async with self._keep_in_progress(batch):
            return await self._store(entries)

    async def _settle(self, batch: list[Pulled], entries: list[Entry],
                      result: CommitResult) -> None:
        """After the commit: count, fan out, and only then ack."""
        readings = sum(isinstance(entry.outcome, Reading) for entry in entries)
        self._health.count("ingested", result.stored)
        self._health.count("duplicates", readings - result.stored - result.refused)
        self._health.count("quarantined", result.quarantined)
        self._count_rejections(entries, result)

        routed = [(route, entry.outcome) for entry in entries
                  if isinstance(entry.outcome, Reading)
                  for route in self._routes.get(entry.outcome.device_id, ())]
        if routed:
            await self._fan_out.run(lambda: self._publish_routes(routed),
                                    on_failure=self._routes_stream_in_doubt)
        await self._consumer.acknowledge(batch)
        self._health.count("batches")
        self._batch_size.observe(len(batch))

    def _count_rejections(self, entries: list[Entry], result: CommitResult) -> None:
        reasons: dict[str, int] = {}
        for entry in entries:
            if not isinstance(entry.outcome, Reading):
                reasons[entry.outcome.reason] = reasons.get(entry.outcome.reason, 0) + 1
        if result.refused:
            reasons["rejected_by_database"] = result.refused
        for reason, count in reasons.items():
            self._rejected.labels(reason).inc(count)

    async def _store(self, entries: list[Entry]) -> CommitResult:
        return await commit_isolating(entries, lambda part: self._commits.run(
            lambda: self._commit(part), on_failure=self._connection.discard))

    async def _commit(self, entries: list[Entry]) -> CommitResult:
        rows = BatchRows.of(entries, self._config.max_payload_bytes)
        connection = await self._connection.get()
        started = time.monotonic()
        result = await commit_batch(connection, rows, COMMIT_TIMEOUT_SECONDS)
        self._commit_seconds.observe(time.monotonic() - started)
        return result

    @contextlib.asynccontextmanager
    async def _keep_in_progress(self, batch: list[Pulled]) -> AsyncIterator[None]:
        """While a commit takes long (locks, outage), tell JetStream the batch is still being
        worked on, so it is not redelivered to another pod meanwhile."""

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(self._config.ack_wait / 3)
                await self._consumer.mark_in_progress(batch)

        task = asyncio.create_task(heartbeat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _publish_routes(self, routed: list[tuple[int, Reading]]) -> None:
        """Publish the fan-out of a committed batch, at most FAN_OUT_IN_FLIGHT at a time
        (a device may have many routes: memory stays bounded). Re-publication after a
        failure is de-duplicated by JetStream (the message id), so the whole set is simply
        retried."""
        js = self._nats.jetstream
        if self._check_routes_stream:
            # Deleted? Then say so (StreamMissingError names it in the "nats" check) until
            # the owner has created it again: this service may not.
            await require_stream(js, self._config.routes_stream)
            self._check_routes_stream = False
        for start in range(0, len(routed), FAN_OUT_IN_FLIGHT):
            publishes = []
            for route_id, reading in routed[start:start + FAN_OUT_IN_FLIGHT]:
                ts = reading.ts.isoformat()
                payload = (f'{{"route_id":{route_id},'
                           f'"device_id":{json.dumps(reading.device_id)},'
                           f'"ts":"{ts}","metrics":{reading.metrics_json}}}')
                publishes.append(js.publish(
                    f"routes.{reading.device_id}", payload.encode(),
                    headers={"Nats-Msg-Id": f"{route_id}/{reading.device_id}/{ts}"},
                ))
            outcomes = await asyncio.gather(*publishes, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            self._progress.beat()
        self._health.count("routed", len(routed))

    def _routes_stream_in_doubt(self) -> None:
        self._check_routes_stream = True

    # -- routes ------------------------------------------------------------------------

    async def run_routes_refresher(self) -> None:
        """Keep the set of devices with routes current (a small table, read every few s)."""
        connection = db.DedicatedConnection(self._config.database.url, "ingest_iot-routes")
        attempts = Attempts(self._health.dependency("database"), "routes refresher")

        async def refresh() -> dict[str, tuple[int, ...]]:
            return await routed_devices(await connection.get())

        while True:
            self._routes = await attempts.run(refresh, on_failure=connection.discard)
            await asyncio.sleep(self._config.routes_refresh)

    # -- shutdown ----------------------------------------------------------------------

    def stop_fetching(self) -> None:
        """Take no more messages: the fetcher sends no more pull requests and ends once
        what the open ones brought has arrived (a tick, plus a round trip to NATS), and the
        writer then commits and acks everything fetched and returns."""
        self._consumer.stop()

    async def close(self) -> None:
        await self._consumer.close()
        await self._connection.close()
