"""route_delivery settings, from the environment (see README: Services)."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.config import (
    ConfigError,
    DatabaseSettings,
    Env,
    NatsSettings,
    RuntimeSettings,
)
from services.common.messaging import StreamLimits
from services.route_delivery.destinations import DestinationGuard

# Budget of one database step of a delivery (pool acquire plus statement).
DB_STEP_TIMEOUT_SECONDS = 5.0
# A delivery is: route lookup, the request, recording the outcome (two database steps; the
# lookup is usually cached). Beyond that, this much slack before JetStream redelivers.
ACK_WAIT_SLACK_SECONDS = 30.0


@dataclass(frozen=True)
class DeliveryConfig:
    runtime: RuntimeSettings
    database: DatabaseSettings
    nats: NatsSettings
    # Real webhook requests per message before it becomes a dead letter.
    max_attempts: int
    request_timeout: float
    # Retry n waits retry_backoff * 2^(n-1), at most retry_backoff_max.
    retry_backoff: float
    retry_backoff_max: float
    # Deliveries in flight at once, over all endpoints.
    concurrency: int
    # Deliveries in flight at once to one endpoint (scheme, host, port).
    endpoint_concurrency: int
    # Consecutive failed requests to an endpoint that open its circuit, and for how long.
    circuit_failure_threshold: int
    circuit_open_seconds: float
    # Messages held unacked on the server: in flight plus those waiting for a retry. Messages
    # waiting for a retry (a dead endpoint's backlog) hold these slots; only beyond this
    # many would they hold up the other routes.
    max_ack_pending: int
    db_pool_size: int
    durable: str
    routes_cache_ttl: float
    # ROUTES as created by whichever of ingest_iot and route_delivery starts first: both read
    # the limits the chart renders.
    routes_limits: StreamLimits
    # Where webhooks may go (WEBHOOK_ALLOW_CIDRS, WEBHOOK_DENY_CIDRS, WEBHOOK_ALLOW_HOSTS).
    destinations: DestinationGuard

    @classmethod
    def from_env(cls, env: Env) -> DeliveryConfig:
        runtime = RuntimeSettings.from_env(env)
        config = cls(
            runtime=runtime,
            database=DatabaseSettings.from_env(env),
            nats=NatsSettings.from_env(env),
            max_attempts=env.integer("MAX_ATTEMPTS", 5, minimum=1, maximum=100),
            request_timeout=env.seconds("REQUEST_TIMEOUT_SECONDS", 5.0, minimum=0.1, maximum=300),
            retry_backoff=env.seconds("RETRY_BACKOFF_SECONDS", 1.0, minimum=0.01),
            retry_backoff_max=env.seconds("RETRY_BACKOFF_MAX_SECONDS", 60.0, minimum=0.01),
            concurrency=env.integer("DELIVERY_CONCURRENCY", 16, minimum=1, maximum=1000),
            endpoint_concurrency=env.integer("ENDPOINT_CONCURRENCY", 4, minimum=1, maximum=1000),
            circuit_failure_threshold=env.integer("CIRCUIT_FAILURE_THRESHOLD", 5, minimum=1,
                                                  maximum=1000),
            circuit_open_seconds=env.seconds("CIRCUIT_OPEN_SECONDS", 30.0, minimum=0.1,
                                             maximum=3600),
            max_ack_pending=env.integer("DELIVERY_MAX_PENDING", 10000, minimum=1,
                                        maximum=1_000_000),
            # ui_iot reads the same variable with the same default (one README row).
            db_pool_size=env.integer("DB_POOL_SIZE", 5, minimum=1, maximum=100),
            durable=env.text("ROUTE_DURABLE", "route-delivery"),
            routes_cache_ttl=env.seconds("ROUTES_CACHE_SECONDS", 10.0, minimum=0),
            routes_limits=StreamLimits(
                max_bytes=env.integer("ROUTES_MAX_BYTES", 1_073_741_824, minimum=1024 * 1024),
                max_age=env.seconds("ROUTES_MAX_AGE_SECONDS", 86_400, minimum=60)),
            destinations=DestinationGuard.from_settings(
                allow_cidrs=env.optional("WEBHOOK_ALLOW_CIDRS"),
                deny_cidrs=env.optional("WEBHOOK_DENY_CIDRS"),
                allow_hosts=env.optional("WEBHOOK_ALLOW_HOSTS")),
        )
        # A delivery waiting on a slow webhook is progress, not a stuck worker: the
        # watchdog must allow a whole delivery between two beats.
        if config.delivery_budget >= runtime.worker_stall_threshold:
            raise ConfigError(
                "REQUEST_TIMEOUT_SECONDS",
                f"must leave a delivery ({config.delivery_budget:g} s with the database steps)"
                f" below WORKER_STALL_SECONDS ({runtime.worker_stall_threshold:g})")
        if config.max_ack_pending < config.concurrency:
            raise ConfigError("DELIVERY_MAX_PENDING",
                              f"must be at least DELIVERY_CONCURRENCY ({config.concurrency})")
        return config

    @property
    def nats_url(self) -> str:
        return self.nats.url

    @property
    def delivery_budget(self) -> float:
        """The longest one delivery takes: the request and two database steps."""
        return self.request_timeout + 2 * DB_STEP_TIMEOUT_SECONDS

    @property
    def ack_wait(self) -> float:
        """Longer than a delivery, so JetStream never redelivers a message still in flight."""
        return self.delivery_budget + ACK_WAIT_SLACK_SECONDS
