"""Wiring for ops_worker: database probe and the maintenance loop."""

from __future__ import annotations

import asyncio
import logging

from services.common import db
from services.common.config import load
from services.common.db import DatabaseProbe
from services.common.health import HealthState
from services.common.retry import Attempts
from services.common.runtime import run
from services.common.workers import Workers
from services.ops_worker.config import OpsConfig
from services.ops_worker.maintenance import PassResult, maintenance_pass

NAME = "ops_worker"
log = logging.getLogger("maintenance")


class OpsService:
    def __init__(self, config: OpsConfig, health: HealthState) -> None:
        self._config = config
        self._health = health
        # The probe and the maintenance loop both report into the readiness check
        # "database": a read-only database answers SELECT 1 but fails every pass.
        self._database = DatabaseProbe(config.database, health, f"{NAME}-health")
        self._connection = db.DedicatedConnection(config.database.url, NAME)
        self._progress = health.progress("maintenance")
        self._attempts = Attempts(health.dependency("database"), "maintenance",
                                  progress=self._progress)
        self._workers = Workers(health)
        health.declare_counters("maintenance_passes", "devices_marked_offline",
                                "telemetry_pruned")
        for counter, documentation in (
            ("maintenance_passes", "Maintenance passes completed (with the lock held)."),
            ("devices_marked_offline", "Devices marked offline for silence."),
            ("telemetry_pruned", "Telemetry rows deleted by retention."),
        ):
            health.metrics.expose_counters(f"iot_ops_{counter}", documentation,
                                           health.counters, counter)

    async def start(self) -> None:
        self._workers.start("database-probe", self._database.run())
        self._workers.start("maintenance", self._maintain())

    async def stop(self) -> None:
        # Each pass is a series of short transactions: stopping mid-pass loses nothing.
        await self._workers.cancel("maintenance", "database-probe")
        self._connection.discard()
        await self._database.close()

    async def _maintain(self) -> None:
        while True:
            with self._progress.working():
                await self._progress.checkpoint()
                # A dependency error is retried with backoff (readiness names "maintenance"
                # meanwhile) until a pass succeeds; each failure discards the connection,
                # which also releases the maintenance lock with its session.
                result = await self._attempts.run(self._pass,
                                                  on_failure=self._connection.discard)
            self._count(result)
            await asyncio.sleep(self._config.interval)

    async def _pass(self) -> PassResult:
        config = self._config
        connection = await self._connection.get()
        try:
            return await maintenance_pass(
                connection,
                offline_after=config.offline_after,
                retention_days=config.retention_days,
                prune_batch_rows=config.prune_batch_rows,
                statement_timeout=config.statement_timeout,
                on_statement=self._progress.beat,
            )
        except BaseException:
            # Whatever went wrong (a bug, a cancellation), the session may still hold the
            # lock: ending it is the one release that always works.
            self._connection.discard()
            raise

    def _count(self, result: PassResult) -> None:
        if not result.ran:
            return
        self._health.count("maintenance_passes")
        self._health.count("devices_marked_offline", result.marked_offline)
        self._health.count("telemetry_pruned", result.pruned)
        if result.marked_offline or result.pruned:
            log.info("marked %d devices offline, pruned %d readings",
                     result.marked_offline, result.pruned)


def main() -> int:
    config = load(NAME, OpsConfig.from_env)
    return run(NAME, config.runtime, lambda health: (OpsService(config, health), None))
