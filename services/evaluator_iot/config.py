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
    # With no persisted position yet (first start), also evaluate rows inserted this long ago.
    startup_lookback: float
    # Every wait on the listener connection is bounded; a silent server fails this check.
    listener_check_interval: float
    # Readings are evaluated only with ts in [now - max_age, now + max_future]: one device
    # with a skewed clock must not stretch an evaluated range over the whole table.
    evaluation_max_age: float
    evaluation_max_future: float

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
            evaluation_max_age=env.seconds(
                "EVALUATION_MAX_AGE_SECONDS", 2_592_000.0, minimum=60, maximum=3650 * 86400
            ),
            evaluation_max_future=env.seconds(
                "EVALUATION_MAX_FUTURE_SECONDS", 300.0, maximum=86400
            ),
        )
