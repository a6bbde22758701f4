"""The owner's NATS step: create the JetStream streams, or bring their limits to the chart's.

`python -m services.migrate.nats`, the chart's `streams` init container of the pods that use
NATS (ingest, route-delivery), logged in as the NATS user `owner`: the only user allowed to
create, change or delete a stream. The services only look their streams up and manage their
own durable consumer; a missing stream keeps them NotReady until this has run again.

Idempotent and safe to run from several pods at once: a stream that exists with our limits is
left untouched; one whose limits (max_bytes, max_age, duplicate_window) differ is updated to
the configured ones (lowering max_bytes or max_age drops the oldest messages beyond them, as
the values say); settings the server cannot change in place (subjects, retention, storage) are
left as they are and logged.

Environment: NATS_URL, NATS_USER, NATS_PASSWORD, NATS_TLS_CA_FILE, NATS_INBOX_PREFIX (as the
services), MIGRATE_WAIT_SECONDS (how long NATS may take to answer), and the limits
TELEMETRY_MAX_BYTES, TELEMETRY_MAX_AGE_SECONDS, ROUTES_MAX_BYTES, ROUTES_MAX_AGE_SECONDS.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import time
from dataclasses import dataclass

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from services.common.config import Env, NatsSettings, load
from services.common.faults import is_dependency_error
from services.common.logs import describe_error, redact_url, setup_logging
from services.common.messaging import (
    CONNECT_TIMEOUT_SECONDS,
    ROUTES_LIMITS,
    TELEMETRY_LIMITS,
    Stream,
    StreamLimits,
    credentials_options,
    routes_stream,
    telemetry_stream,
)

log = logging.getLogger("migrate-nats")

# The settings `update` brings to ours; the rest a server cannot change in place, or only an
# operator should (subjects).
UPDATABLE = ("max_bytes", "max_age", "duplicate_window")
FIXED = ("subjects", "retention", "storage")


class NatsNotReachableError(RuntimeError):
    pass


@dataclass(frozen=True)
class StreamsConfig:
    nats: NatsSettings
    wait_seconds: float
    telemetry_limits: StreamLimits
    routes_limits: StreamLimits

    @property
    def streams(self) -> tuple[Stream, ...]:
        return (telemetry_stream(self.telemetry_limits), routes_stream(self.routes_limits))

    @classmethod
    def from_env(cls, env: Env) -> StreamsConfig:
        return cls(
            nats=NatsSettings.from_env(env),
            wait_seconds=env.seconds("MIGRATE_WAIT_SECONDS", 60.0, maximum=3600),
            telemetry_limits=_limits(env, "TELEMETRY", TELEMETRY_LIMITS),
            routes_limits=_limits(env, "ROUTES", ROUTES_LIMITS),
        )


def _limits(env: Env, prefix: str, default: StreamLimits) -> StreamLimits:
    return StreamLimits(
        max_bytes=env.integer(f"{prefix}_MAX_BYTES", default.max_bytes, minimum=1024 * 1024),
        max_age=env.seconds(f"{prefix}_MAX_AGE_SECONDS", default.max_age, minimum=60),
    )


async def apply_stream(js: JetStreamContext, stream: Stream) -> str:
    """Create `stream`, or update its limits to ours; what was done, in words."""
    try:
        info = await js.stream_info(stream.name)
    except NotFoundError:
        try:
            await js.add_stream(stream.config)
            return f"created {stream.name}"
        except BadRequestError:  # created by another pod's init container meanwhile
            info = await js.stream_info(stream.name)
    fixed = [f"{name}={getattr(info.config, name)!r} (ours {getattr(stream.config, name)!r})"
             for name in FIXED if getattr(info.config, name) != getattr(stream.config, name)]
    if fixed:
        log.warning("stream %s differs in settings left as they are: %s", stream.name,
                    "; ".join(fixed))
    changed = [name for name in UPDATABLE
               if getattr(info.config, name) != getattr(stream.config, name)]
    if not changed:
        return f"{stream.name} up to date"
    updated = dataclasses.replace(
        info.config, **{name: getattr(stream.config, name) for name in changed})
    await js.update_stream(updated)
    changes = ", ".join(_change(info.config, stream.config, name) for name in changed)
    return f"updated {stream.name} ({changes})"


def _change(before: StreamConfig, after: StreamConfig, name: str) -> str:
    return f"{name} {getattr(before, name)!r} -> {getattr(after, name)!r}"


async def wait_for_nats(settings: NatsSettings, wait_seconds: float) -> Client:
    deadline = time.monotonic() + wait_seconds
    reported = False
    while True:
        try:
            return await nats.connect(
                servers=[settings.url], name="migrate-nats", allow_reconnect=False,
                connect_timeout=CONNECT_TIMEOUT_SECONDS, max_reconnect_attempts=0,
                **credentials_options(settings))
        except Exception as error:
            if not is_dependency_error(error):
                raise
            if time.monotonic() >= deadline:
                raise NatsNotReachableError(
                    f"NATS {redact_url(settings.url)} not reachable within {wait_seconds:g} s "
                    f"(last error: {describe_error(error)})") from None
            if not reported:
                log.info("waiting up to %g s for NATS (%s)", wait_seconds, describe_error(error))
                reported = True
            await asyncio.sleep(0.5)


async def manage_streams(config: StreamsConfig) -> list[str]:
    client = await wait_for_nats(config.nats, config.wait_seconds)
    try:
        js = client.jetstream(timeout=10)
        return [await apply_stream(js, stream) for stream in config.streams]
    finally:
        await client.close()


async def create_streams(url: str) -> list[str]:
    """The streams with their default limits on the server at `url` (tests and tools)."""
    return await manage_streams(StreamsConfig(
        NatsSettings(url=url), wait_seconds=10, telemetry_limits=TELEMETRY_LIMITS,
        routes_limits=ROUTES_LIMITS))


def main() -> int:
    config = load("migrate-nats", StreamsConfig.from_env)
    setup_logging("migrate-nats", "INFO")
    try:
        done = asyncio.run(manage_streams(config))
    except NatsNotReachableError as error:
        log.error("%s", error)
        return 1
    except Exception as error:  # refused (permissions), or a server error: say which
        log.error("could not manage the streams: %s", describe_error(error))
        return 1
    log.info("streams: %s", "; ".join(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
