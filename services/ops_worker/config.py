"""ops_worker settings, from the environment (see README: Services)."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.config import DatabaseSettings, Env, RuntimeSettings


@dataclass(frozen=True)
class OpsConfig:
    runtime: RuntimeSettings
    database: DatabaseSettings
    # A device not heard from for this long is marked offline.
    offline_after: float
    # Telemetry older than this (by reading time) is deleted.
    retention_days: int
    interval: float
    # Rows deleted per transaction, so retention never holds long locks.
    prune_batch_rows: int
    statement_timeout: float

    @classmethod
    def from_env(cls, env: Env) -> OpsConfig:
        return cls(
            runtime=RuntimeSettings.from_env(env),
            database=DatabaseSettings.from_env(env),
            offline_after=env.seconds("OFFLINE_AFTER_SECONDS", 300.0, minimum=1),
            retention_days=env.integer("RETENTION_DAYS", 30, minimum=1, maximum=36_500),
            interval=env.seconds("MAINTENANCE_INTERVAL_SECONDS", 60.0, minimum=0.1),
            prune_batch_rows=env.integer("PRUNE_BATCH_ROWS", 10_000, minimum=1),
            statement_timeout=env.seconds(
                "MAINTENANCE_STATEMENT_TIMEOUT_SECONDS", 30.0, minimum=1
            ),
        )
