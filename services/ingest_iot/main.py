"""Wiring for ingest_iot: NATS link, database probe and the pipeline, stopped in order."""

from __future__ import annotations

from services.common.config import load
from services.common.db import DatabaseProbe
from services.common.health import HealthState
from services.common.messaging import NatsLink, PullConsumer
from services.common.messaging.lean import LeanPullConsumer
from services.common.runtime import run
from services.common.workers import Workers
from services.ingest_iot.config import IngestConfig
from services.ingest_iot.pipeline import IngestPipeline

NAME = "ingest_iot"


class IngestService:
    def __init__(
        self, config: IngestConfig, health: HealthState,
        consumer_class: type[PullConsumer] = LeanPullConsumer,
    ) -> None:
        self._nats = NatsLink(config.nats, NAME, health)
        self._database = DatabaseProbe(config.database, health, f"{NAME}-health")
        self._pipeline = IngestPipeline(config, health, self._nats, consumer_class)
        self._workers = Workers(health)
        health.declare_counters("ingested", "duplicates", "quarantined", "routed", "batches")
        health.metrics.expose_counters(
            "iot_ingest_messages", "Telemetry messages settled, by outcome (the database's "
            "count: stored rows, duplicates of stored rows, quarantine rows).", health.counters,
            {"stored": "ingested", "duplicate": "duplicates", "quarantined": "quarantined"},
            label="outcome")
        health.metrics.expose_counters("iot_ingest_routed", "Route messages published.",
                                       health.counters, "routed")
        health.metrics.expose_counters("iot_ingest_batches", "Batches committed and acked.",
                                       health.counters, "batches")
        # "nats", "database" and "consumer" are registered by the link, the probe and the
        # consumer themselves.
        health.add_check("batch_writer", self._pipeline.check)

    async def start(self) -> None:
        self._workers.start("nats-connect", self._nats.connect(), critical=False)
        self._workers.start("database-probe", self._database.run())
        self._workers.start("routes-refresher", self._pipeline.run_routes_refresher())
        self._workers.start("writer", self._pipeline.run_writer())
        self._workers.start("fetcher", self._pipeline.run_fetcher())

    async def stop(self) -> None:
        # Stop consuming, let the writer commit and ack what was fetched, then close.
        self._pipeline.stop_fetching()
        await self._workers.wait("fetcher")
        await self._workers.wait("writer")
        await self._pipeline.close()
        await self._workers.cancel()
        await self._nats.close()  # flushes the acks still buffered in the client
        await self._database.close()


def main() -> int:
    config = load(NAME, IngestConfig.from_env)
    return run(NAME, config.runtime, lambda health: (IngestService(config, health), None))
