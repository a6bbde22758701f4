"""ingest_iot settings, from the environment (see README: Services)."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.config import DatabaseSettings, Env, RuntimeSettings


@dataclass(frozen=True)
class IngestConfig:
    runtime: RuntimeSettings
    database: DatabaseSettings
    nats_url: str
    # Rows per database commit (at most).
    batch_size: int
    # A partial batch is committed this long after its first message arrived.
    flush_interval: float
    # Larger payloads are quarantined as payload_too_large.
    max_payload_bytes: int
    durable: str
    # JetStream redelivers a message not acked within this time; in-flight batches send
    # in-progress signals while a slow commit runs, so this bounds crash recovery only.
    ack_wait: float
    max_ack_pending: int
    # Fetched batches waiting for the writer (back-pressure beyond this).
    prefetch_batches: int
    routes_refresh: float

    @classmethod
    def from_env(cls, env: Env) -> IngestConfig:
        batch_size = env.integer("BATCH_SIZE", 500, minimum=1, maximum=10_000)
        return cls(
            runtime=RuntimeSettings.from_env(env),
            database=DatabaseSettings.from_env(env),
            nats_url=env.url("NATS_URL", ("nats", "tls")),
            batch_size=batch_size,
            flush_interval=env.integer("FLUSH_INTERVAL_MS", 200, minimum=1, maximum=60_000)
            / 1000,
            max_payload_bytes=env.integer(
                "MAX_PAYLOAD_BYTES", 65_536, minimum=64, maximum=8 * 1024 * 1024
            ),
            durable=env.text("INGEST_DURABLE", "ingest"),
            ack_wait=env.seconds("ACK_WAIT_SECONDS", 30.0, minimum=5, maximum=3600),
            max_ack_pending=env.integer(
                "MAX_ACK_PENDING", 10_000, minimum=batch_size, maximum=1_000_000
            ),
            prefetch_batches=env.integer("PREFETCH_BATCHES", 4, minimum=1, maximum=100),
            routes_refresh=env.seconds("ROUTES_REFRESH_SECONDS", 10.0, minimum=0.1),
        )
