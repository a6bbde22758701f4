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
        # The probe and both workers report into the readiness check "database"
        # (health.dependency): a database that answers SELECT 1 but refuses the
        # evaluator's writes (read-only) still reads as not ready, naming the worker.
        self._database = DatabaseProbe(config.database, health, f"{NAME}-health")
        self._evaluator = Evaluator(config, health)
        self._listener = NotificationListener(config, health, self._evaluator)
        self._workers = Workers(health)
        health.declare_counters("notifications", "polls", "evaluations", "alerts_created")
        for counter, documentation in (
            ("notifications", "telemetry_inserted notifications received."),
            ("polls", "Polls by insertion time that caught up with the present."),
            ("evaluations", "Evaluation transactions (a notified range or a poll chunk)."),
            ("alerts_created", "Alerts written by evaluations."),
        ):
            health.metrics.expose_counters(f"iot_evaluator_{counter}", documentation,
                                           health.counters, counter)
        health.add_check("listener", self._listener.check)

    async def start(self) -> None:
        self._workers.start("database-probe", self._database.run())
        self._workers.start("evaluator", self._evaluator.run())
        self._workers.start("listener", self._listener.run())

    async def stop(self) -> None:
        # Evaluation is idempotent and resumes from the persisted position: cancelling an
        # evaluation in flight loses nothing (its transaction rolls back).
        await self._workers.cancel("listener", "evaluator", "database-probe")
        self._evaluator.close()
        await self._database.close()


def main() -> int:
    config = load(NAME, EvaluatorConfig.from_env)
    return run(NAME, config.runtime, lambda health: (EvaluatorService(config, health), None))
