"""ingest_iot settings, from the environment (see README: Services)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from services.common.config import DatabaseSettings, Env, NatsSettings, RuntimeSettings

# Defaults as in services.common.messaging (TELEMETRY_LIMITS, ROUTES_LIMITS) and the chart's
# nats.jetstream.streams; written out so the README's configuration table can be checked.
from services.common.messaging import StreamLimits, routes_stream, telemetry_stream
from services.ingest_iot.telemetry import ReadingLimits


@dataclass(frozen=True)
class IngestConfig:
    runtime: RuntimeSettings
    database: DatabaseSettings
    nats: NatsSettings
    # Rows per database commit (at most).
    batch_size: int
    # A partial batch is committed this long after its first message arrived.
    flush_interval: float
    # Larger payloads are quarantined as payload_too_large; readings whose ts is further
    # from now than the window allows, as ts_out_of_range.
    reading_limits: ReadingLimits
    durable: str
    # JetStream redelivers a message not acked within this time; in-flight batches send
    # in-progress signals while a slow commit runs, so this bounds crash recovery only.
    ack_wait: float
    max_ack_pending: int
    # Fetched batches waiting for the writer (back-pressure beyond this).
    prefetch_batches: int
    # Payload bytes fetched and not yet acked, at most (memory stays bounded in bytes).
    max_buffered_bytes: int
    routes_refresh: float
    telemetry_limits: StreamLimits
    routes_limits: StreamLimits

    @property
    def nats_url(self) -> str:
        return self.nats.url

    @property
    def max_payload_bytes(self) -> int:
        return self.reading_limits.max_payload_bytes

    @property
    def telemetry_stream(self):
        return telemetry_stream(self.telemetry_limits)

    @property
    def routes_stream(self):
        return routes_stream(self.routes_limits)

    @classmethod
    def from_env(cls, env: Env) -> IngestConfig:
        batch_size = env.integer("BATCH_SIZE", 500, minimum=1, maximum=10_000)
        return cls(
            runtime=RuntimeSettings.from_env(env),
            database=DatabaseSettings.from_env(env),
            nats=NatsSettings.from_env(env),
            batch_size=batch_size,
            flush_interval=env.integer("FLUSH_INTERVAL_MS", 200, minimum=1, maximum=60_000)
            / 1000,
            reading_limits=ReadingLimits(
                max_payload_bytes=env.integer(
                    "MAX_PAYLOAD_BYTES", 65_536, minimum=64, maximum=8 * 1024 * 1024
                ),
                max_age=timedelta(seconds=env.seconds(
                    "TS_MAX_AGE_SECONDS", 2_592_000, minimum=60, maximum=100 * 365 * 86400)),
                max_future=timedelta(seconds=env.seconds(
                    "TS_MAX_FUTURE_SECONDS", 300, maximum=365 * 86400)),
            ),
            durable=env.text("INGEST_DURABLE", "ingest"),
            ack_wait=env.seconds("ACK_WAIT_SECONDS", 30.0, minimum=5, maximum=3600),
            max_ack_pending=env.integer(
                "MAX_ACK_PENDING", 10_000, minimum=batch_size, maximum=1_000_000
            ),
            prefetch_batches=env.integer("PREFETCH_BATCHES", 4, minimum=1, maximum=100),
            max_buffered_bytes=env.integer(
                "MAX_BUFFERED_BYTES", 33_554_432, minimum=2 * 1024 * 1024, maximum=4 * 1024**3),
            routes_refresh=env.seconds("ROUTES_REFRESH_SECONDS", 10.0, minimum=0.1),
            telemetry_limits=StreamLimits(
                max_bytes=env.integer("TELEMETRY_MAX_BYTES", 4_294_967_296,
                                      minimum=1024 * 1024),
                max_age=env.seconds("TELEMETRY_MAX_AGE_SECONDS", 604_800,
                                    minimum=60)),
            routes_limits=StreamLimits(
                max_bytes=env.integer("ROUTES_MAX_BYTES", 1_073_741_824,
                                      minimum=1024 * 1024),
                max_age=env.seconds("ROUTES_MAX_AGE_SECONDS", 86_400,
                                    minimum=60)),
        )
