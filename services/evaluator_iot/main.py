"""Wiring for evaluator_iot: database probe, LISTEN connection and the evaluation loop."""

from __future__ import annotations

from services.common.config import load
from services.common.db import DatabaseProbe
from services.common.health import HealthState
from services.common.runtime import run
from services.common.workers import Workers
from services.evaluator_iot.config import EvaluatorConfig
from services.evaluator_iot.engine import Evaluator, NotificationListener

NAME = "evaluator_iot"


class EvaluatorService:
    def __init__(self, config: EvaluatorConfig, health: HealthState) -> None:
        self._database = DatabaseProbe(config.database, health, f"{NAME}-health")
        self._evaluator = Evaluator(config, health)
        self._listener = NotificationListener(config, health, self._evaluator)
        self._workers = Workers(health)
        health.declare_counters("notifications", "polls", "evaluations", "alerts_created")
        health.add_check("database", self._database.check)
        health.add_check("listener", self._listener.check)

    async def start(self) -> None:
        self._workers.start("database-probe", self._database.run())
        self._workers.start("evaluator", self._evaluator.run())
        self._workers.start("listener", self._listener.run())

    async def stop(self) -> None:
        # Evaluation is idempotent and re-run from the poll mark on start-up: cancelling an
        # evaluation in flight loses nothing.
        await self._workers.cancel("listener", "evaluator", "database-probe")
        await self._database.close()


def main() -> int:
    config = load(NAME, EvaluatorConfig.from_env)
    return run(NAME, config.runtime, lambda health: (EvaluatorService(config, health), None))
