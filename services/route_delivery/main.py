"""Wiring for route_delivery: NATS link, database probe and pool, the HTTP client, and the
dispatcher that keeps up to DELIVERY_CONCURRENCY deliveries in flight."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

import aiohttp
import asyncpg
from nats.aio.msg import Msg

from services.common.config import load
from services.common.db import DatabaseProbe
from services.common.faults import Fault, classify
from services.common.health import HealthState, Progress
from services.common.logs import describe_error
from services.common.messaging import NatsLink, PullConsumer, routes_stream
from services.common.retry import Attempts
from services.common.runtime import run
from services.common.workers import Workers
from services.route_delivery.config import DB_STEP_TIMEOUT_SECONDS, DeliveryConfig
from services.route_delivery.delivery import Deliverer, DeliverySettings, connection_from
from services.route_delivery.destinations import guarded_connector

NAME = "route_delivery"
log = logging.getLogger("delivery")

# Attempt counts of messages that left the stream without a verdict (ROUTES keeps a
# message one day; a success whose count could not be deleted) are purged after this.
PURGE_ATTEMPTS_OLDER_THAN = "2 days"
PURGE_INTERVAL_SECONDS = 3600.0
PURGE_STALE_ATTEMPTS = ("DELETE FROM delivery_attempts "
                        f"WHERE updated_at < now() - interval '{PURGE_ATTEMPTS_OLDER_THAN}'")


class Dispatcher:
    """Continuous dispatch: each fetched message becomes its own task as soon as one of
    `concurrency` slots is free, so a slow delivery holds one slot, never a batch. A bug in
    a delivery ends the task group, and with it the critical "deliveries" worker."""

    def __init__(
        self, consumer: PullConsumer, deliverer: Deliverer, concurrency: int, progress: Progress
    ) -> None:
        self._consumer = consumer
        self._deliverer = deliverer
        self._concurrency = concurrency
        self._progress = progress
        self._slots = asyncio.Semaphore(concurrency)
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    async def run(self) -> None:
        async with asyncio.TaskGroup() as deliveries:
            async for messages in self._consumer.batches(self._concurrency):
                with self._progress.working():
                    await self._progress.checkpoint()
                    for message in messages:
                        await self._dispatch(message, deliveries)

    async def _dispatch(self, message: Msg, deliveries: asyncio.TaskGroup) -> None:
        waited = self._slots.locked()
        await self._slots.acquire()
        if self._stopping:
            # Fetched but not started: hand it back at once (another replica, or us later).
            self._slots.release()
            await _settle(message.nak())
            return
        if waited:
            # It waited for a slot (at most one delivery's time): restart its ack wait, so
            # JetStream does not redeliver it while it is in flight.
            await _settle(message.in_progress())
        deliveries.create_task(self._deliver(message))

    async def _deliver(self, message: Msg) -> None:
        try:
            await _settle(self._deliverer.handle(message))
        finally:
            self._slots.release()
            self._progress.beat()


async def _settle(operation: Awaitable[object]) -> None:
    """Run a delivery step that talks to NATS. NATS trouble only means a redelivery later
    (nothing was acked); anything else is a bug and propagates."""
    try:
        await operation
    except Exception as error:
        if classify(error) is not Fault.DEPENDENCY:
            raise
        log.debug("NATS unavailable while settling a message (%s)", describe_error(error))


class RouteDeliveryService:
    def __init__(self, config: DeliveryConfig, health: HealthState) -> None:
        self._config = config
        self._health = health
        self._nats = NatsLink(config.nats, NAME, health)
        self._database = DatabaseProbe(config.database, health, f"{NAME}-health")
        self._consumer = PullConsumer(
            self._nats, health, routes_stream(config.routes_limits), config.durable,
            ack_wait=config.ack_wait, max_ack_pending=config.max_ack_pending,
        )
        self._progress = health.progress("deliveries")
        self._attempts = Attempts(health.dependency("database"), "delivery",
                                  progress=self._progress)
        self._pool: asyncpg.Pool | None = None
        self._session: aiohttp.ClientSession | None = None
        self._dispatcher: Dispatcher | None = None
        self._stopping = False
        self._workers = Workers(health)
        health.declare_counters("delivered", "failed", "retries", "deferred", "dropped")
        # The same counters as /health's JSON, by outcome: failed = dead-lettered after the
        # last attempt, retries = failed attempts offered again later, deferred = offered
        # again without an attempt (endpoint busy or its circuit open), dropped = route
        # gone or message unusable.
        health.metrics.expose_counters(
            "iot_route_deliveries", "Route messages settled, by outcome.", health.counters,
            {name: name for name in ("delivered", "failed", "retries", "deferred", "dropped")},
            label="outcome")

    async def start(self) -> None:
        self._workers.start("nats-connect", self._nats.connect(), critical=False)
        self._workers.start("database-probe", self._database.run())
        self._workers.start("deliveries", self._deliver())

    async def _create_pool(self) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            self._config.database.url, min_size=1, max_size=self._config.db_pool_size,
            timeout=DB_STEP_TIMEOUT_SECONDS, server_settings={"application_name": NAME},
        )

    async def _deliver(self) -> None:
        # The pool is created here, in the background: start-up never waits for the
        # database, and readiness names it while it is away.
        self._pool = await self._attempts.run(self._create_pool)
        if self._stopping:
            return
        config = self._config
        # Every webhook connection goes through the destination guard. trust_env stays off:
        # a proxy from the environment would connect on our behalf to addresses the guard
        # never sees.
        self._session = aiohttp.ClientSession(
            connector=guarded_connector(config.destinations, limit=config.concurrency),
            trust_env=False)
        deliverer = Deliverer(
            session=self._session,
            pool=self._pool,
            routes_cache_ttl=config.routes_cache_ttl,
            database=self._attempts,
            health=self._health,
            settings=DeliverySettings(
                max_attempts=config.max_attempts,
                request_timeout=config.request_timeout,
                retry_backoff=config.retry_backoff,
                retry_backoff_max=config.retry_backoff_max,
                endpoint_concurrency=config.endpoint_concurrency,
                circuit_failure_threshold=config.circuit_failure_threshold,
                circuit_open_seconds=config.circuit_open_seconds,
            ),
        )
        self._workers.start("attempts-purge", self._purge_stale_attempts(self._pool))
        self._dispatcher = Dispatcher(self._consumer, deliverer, config.concurrency,
                                      self._progress)
        await self._dispatcher.run()

    async def _purge_stale_attempts(self, pool: asyncpg.Pool) -> None:
        while True:
            try:
                async with connection_from(pool) as connection:
                    await connection.execute(PURGE_STALE_ATTEMPTS)
            except Exception as error:
                if classify(error) is not Fault.DEPENDENCY:
                    raise
                self._attempts.failed(error)
            await asyncio.sleep(PURGE_INTERVAL_SECONDS)

    async def stop(self) -> None:
        # Stop fetching, finish the deliveries in flight (each bounded by the request
        # timeout and the database step timeouts), then close.
        self._stopping = True
        self._consumer.stop()
        if self._dispatcher is not None:
            self._dispatcher.stop()
        else:
            await self._workers.cancel("deliveries")  # still waiting for the database
        await self._workers.wait("deliveries")
        await self._consumer.close()
        await self._workers.cancel()
        if self._session is not None:
            await self._session.close()
        await self._nats.close()
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), 5)
            except TimeoutError:
                self._pool.terminate()
        await self._database.close()


def main() -> int:
    config = load(NAME, DeliveryConfig.from_env)
    return run(NAME, config.runtime, lambda health: (RouteDeliveryService(config, health), None))
