"""Wiring for ops_worker: database probe and the maintenance loop."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from services.common import db
from services.common.config import load
from services.common.db import DatabaseProbe
from services.common.health import HealthState
from services.common.logs import describe_error
from services.common.runtime import run
from services.common.workers import Workers
from services.ops_worker.config import OpsConfig
from services.ops_worker.maintenance import maintenance_pass

NAME = "ops_worker"
log = logging.getLogger("maintenance")


class OpsService:
    def __init__(self, config: OpsConfig, health: HealthState) -> None:
        self._config = config
        self._health = health
        self._database = DatabaseProbe(config.database, health, f"{NAME}-health")
        self._workers = Workers(health)
        health.declare_counters("maintenance_passes", "devices_marked_offline",
                                "telemetry_pruned")
        health.add_check("database", self._database.check)

    async def start(self) -> None:
        self._workers.start("database-probe", self._database.run())
        self._workers.start("maintenance", self._maintain())

    async def stop(self) -> None:
        # Each pass is a series of short transactions: stopping mid-pass loses nothing.
        await self._workers.cancel("maintenance", "database-probe")
        await self._database.close()

    async def _maintain(self) -> None:
        config = self._config
        connection = db.DedicatedConnection(config.database.url, NAME)
        while True:
            try:
                result = await maintenance_pass(
                    await connection.get(),
                    offline_after=config.offline_after,
                    retention_days=config.retention_days,
                    prune_batch_rows=config.prune_batch_rows,
                    statement_timeout=config.statement_timeout,
                )
                if result.ran:
                    self._health.count("maintenance_passes")
                    self._health.count("devices_marked_offline", result.marked_offline)
                    self._health.count("telemetry_pruned", result.pruned)
                    if result.marked_offline or result.pruned:
                        log.info("marked %d devices offline, pruned %d readings",
                                 result.marked_offline, result.pruned)
            except (*db.UNAVAILABLE, asyncpg.PostgresError) as error:
                log.warning("maintenance pass failed (%s); next pass in %.0f s",
                            describe_error(error), config.interval)
                connection.discard()
            await asyncio.sleep(config.interval)


def main() -> int:
    config = load(NAME, OpsConfig.from_env)
    return run(NAME, config.runtime, lambda health: (OpsService(config, health), None))
