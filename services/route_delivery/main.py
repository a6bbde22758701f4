"""Wiring for route_delivery: NATS link, database probe, consumer and the HTTP client."""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from services.common import db
from services.common.config import load
from services.common.health import HealthState
from services.common.messaging import NATS_TROUBLE, ROUTES, NatsLink, PullConsumer
from services.common.runtime import run
from services.common.workers import Workers
from services.route_delivery.config import DeliveryConfig
from services.route_delivery.delivery import Deliverer, RouteCache

NAME = "route_delivery"
log = logging.getLogger("delivery")


class RouteDeliveryService:
    def __init__(self, config: DeliveryConfig, health: HealthState) -> None:
        self._config = config
        self._health = health
        self._nats = NatsLink(config.nats_url, NAME, health)
        self._database = db.DatabaseProbe(config.database, health, f"{NAME}-health")
        self._consumer = PullConsumer(
            self._nats, health, ROUTES, config.durable,
            ack_wait=config.ack_wait, max_ack_pending=config.concurrency * 4,
        )
        self._connection = db.DedicatedConnection(config.database.url, NAME)
        self._session: aiohttp.ClientSession | None = None
        self._workers = Workers(health)
        health.declare_counters("delivered", "failed", "retries", "dropped")
        health.add_check("nats", self._nats.check)
        health.add_check("database", self._database.check)

    async def start(self) -> None:
        config = self._config
        self._session = aiohttp.ClientSession()
        deliverer = Deliverer(
            session=self._session,
            routes=RouteCache(self._connection, config.routes_cache_ttl),
            connection=self._connection,
            health=self._health,
            max_attempts=config.max_attempts,
            request_timeout=config.request_timeout,
            retry_backoff=config.retry_backoff,
            retry_backoff_max=config.retry_backoff_max,
        )
        self._workers.start("nats-connect", self._nats.connect(), critical=False)
        self._workers.start("database-probe", self._database.run())
        self._workers.start("deliveries", self._deliver(deliverer))

    async def _deliver(self, deliverer: Deliverer) -> None:
        async for messages in self._consumer.batches(self._config.concurrency):
            outcomes = await asyncio.gather(
                *(deliverer.handle(message) for message in messages), return_exceptions=True)
            for outcome in outcomes:
                # NATS trouble while settling only means a redelivery; anything else is a bug.
                if isinstance(outcome, Exception) and not isinstance(outcome, NATS_TROUBLE):
                    log.error("delivery failed unexpectedly", exc_info=outcome)

    async def stop(self) -> None:
        # Finish the deliveries in flight (each bounded by the request timeout), then close.
        self._consumer.stop()
        await self._workers.wait("deliveries")
        await self._consumer.close()
        await self._workers.cancel()
        if self._session is not None:
            await self._session.close()
        await self._nats.close()
        await self._connection.close()
        await self._database.close()


def main() -> int:
    config = load(NAME, DeliveryConfig.from_env)
    return run(NAME, config.runtime, lambda health: (RouteDeliveryService(config, health), None))
