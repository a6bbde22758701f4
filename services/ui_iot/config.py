"""ui_iot settings, from the environment (see README: Services)."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.config import DatabaseSettings, Env, RuntimeSettings


@dataclass(frozen=True)
class UiConfig:
    runtime: RuntimeSettings
    database: DatabaseSettings
    query_timeout: float
    pool_size: int

    @classmethod
    def from_env(cls, env: Env) -> UiConfig:
        return cls(
            runtime=RuntimeSettings.from_env(env),
            database=DatabaseSettings.from_env(env),
            query_timeout=env.seconds("QUERY_TIMEOUT_SECONDS", 5.0, minimum=0.1, maximum=120),
            pool_size=env.integer("DB_POOL_SIZE", 5, minimum=1, maximum=100),
        )
