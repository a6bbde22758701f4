"""route_delivery settings, from the environment (see README: Services)."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.config import DatabaseSettings, Env, RuntimeSettings


@dataclass(frozen=True)
class DeliveryConfig:
    runtime: RuntimeSettings
    database: DatabaseSettings
    nats_url: str
    # Deliveries per message before it becomes a dead letter.
    max_attempts: int
    request_timeout: float
    # Retry n waits retry_backoff * 2^(n-1), at most retry_backoff_max.
    retry_backoff: float
    retry_backoff_max: float
    # Messages delivered at once.
    concurrency: int
    durable: str
    routes_cache_ttl: float

    @classmethod
    def from_env(cls, env: Env) -> DeliveryConfig:
        return cls(
            runtime=RuntimeSettings.from_env(env),
            database=DatabaseSettings.from_env(env),
            nats_url=env.url("NATS_URL", ("nats", "tls")),
            max_attempts=env.integer("MAX_ATTEMPTS", 5, minimum=1, maximum=100),
            request_timeout=env.seconds("REQUEST_TIMEOUT_SECONDS", 5.0, minimum=0.1, maximum=300),
            retry_backoff=env.seconds("RETRY_BACKOFF_SECONDS", 1.0, minimum=0.01),
            retry_backoff_max=env.seconds("RETRY_BACKOFF_MAX_SECONDS", 60.0, minimum=0.01),
            concurrency=env.integer("DELIVERY_CONCURRENCY", 16, minimum=1, maximum=1000),
            durable=env.text("ROUTE_DURABLE", "route-delivery"),
            routes_cache_ttl=env.seconds("ROUTES_CACHE_SECONDS", 10.0, minimum=0),
        )

    @property
    def ack_wait(self) -> float:
        """A delivery attempt takes at most one request timeout; leave room for the rest."""
        return self.request_timeout + 30.0
