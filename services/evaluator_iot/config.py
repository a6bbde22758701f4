"""evaluator_iot settings, from the environment (see README: Services)."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.config import DatabaseSettings, Env, RuntimeSettings


@dataclass(frozen=True)
class EvaluatorConfig:
    runtime: RuntimeSettings
    database: DatabaseSettings
    # Fallback polling: evaluate rows inserted since the last poll, even without NOTIFY.
    poll_interval: float
    # On start-up, also evaluate rows inserted this long ago (catches up after downtime).
    startup_lookback: float
    # Every wait on the listener connection is bounded; a silent server fails this check.
    listener_check_interval: float

    @classmethod
    def from_env(cls, env: Env) -> EvaluatorConfig:
        return cls(
            runtime=RuntimeSettings.from_env(env),
            database=DatabaseSettings.from_env(env),
            poll_interval=env.seconds("POLL_INTERVAL_SECONDS", 10.0, minimum=0.1, maximum=3600),
            startup_lookback=env.seconds("STARTUP_LOOKBACK_SECONDS", 600.0, maximum=30 * 86400),
            listener_check_interval=env.seconds(
                "LISTENER_CHECK_INTERVAL_SECONDS", 5.0, minimum=0.1, maximum=300
            ),
        )
