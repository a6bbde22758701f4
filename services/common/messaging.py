"""NATS: one connection per process that reconnects forever and reports its state, and
the JetStream streams the platform uses, defined once for every service that touches them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, NotFoundError

from services.common.health import CheckResult, HealthState
from services.common.logs import describe_error, redact_url
from services.common.retry import Backoff

log = logging.getLogger("nats-link")

# nats-py's defaults (ping every 120 s, 2 outstanding) notice a silently dead server only
# after minutes. A ping every 2 s with 2 outstanding flags a frozen server as stale within
# about 6 s, well inside the 30 s the fault matrix allows.
PING_INTERVAL_SECONDS = 2
MAX_OUTSTANDING_PINGS = 2
CONNECT_TIMEOUT_SECONDS = 2
RECONNECT_WAIT_SECONDS = 0.5
# What talking to NATS can raise when it is away or slow (not bugs).
NATS_TROUBLE = (nats.errors.Error, TimeoutError, OSError)


class NatsLink:
    """The process's NATS connection; its `check` is the readiness check "nats"."""

    def __init__(self, url: str, client_name: str, health: HealthState) -> None:
        self._url = url
        self._client_name = client_name
        self._health = health
        self.client = Client()
        self._outage_reported = False

    @property
    def jetstream(self) -> JetStreamContext:
        return self.client.jetstream(timeout=5)

    async def connect(self) -> None:
        """Connect, retrying until it works (nats-py keeps trying every
        RECONNECT_WAIT_SECONDS); later losses are reconnected by the client itself."""
        log.info("connecting to %s", redact_url(self._url))
        await self.client.connect(
            servers=[self._url],
            name=self._client_name,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT_SECONDS,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            ping_interval=PING_INTERVAL_SECONDS,
            max_outstanding_pings=MAX_OUTSTANDING_PINGS,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            closed_cb=self._on_closed,
        )
        self._outage_reported = False
        log.info("connected to NATS")
        self._health.refresh()

    def check(self) -> CheckResult:
        client = self.client
        if client.is_closed:
            return CheckResult.failing("closed")
        if client.is_draining:
            return CheckResult.failing("draining")
        if client.is_connected:
            return CheckResult.passing("connected")
        if client.is_reconnecting:
            return CheckResult.failing("reconnecting")
        return CheckResult.failing("connecting")

    async def close(self) -> None:
        """Flush what the client still buffers (acks, above all), then close. With NATS away
        the flush cannot happen; the unsent acks only mean redeliveries."""
        with contextlib.suppress(*NATS_TROUBLE):
            if self.client.is_connected:
                await self.client.flush(timeout=2)
        # close() writes the client's pending buffer; on uvloop, a transport the outage has
        # already closed raises RuntimeError ("the handler is closed") rather than OSError.
        with contextlib.suppress(*NATS_TROUBLE, RuntimeError):
            if not self.client.is_closed:
                await self.client.close()

    async def _on_error(self, error: Exception) -> None:
        # Called on every failed (re)connect attempt: report an outage once, not per try.
        if not self._outage_reported:
            self._outage_reported = True
            log.warning("NATS unavailable (%s); retrying every %.1f s",
                        type(error).__name__, RECONNECT_WAIT_SECONDS)

    async def _on_disconnected(self) -> None:
        log.warning("disconnected from NATS")
        self._health.refresh()

    async def _on_reconnected(self) -> None:
        self._outage_reported = False
        log.info("reconnected to NATS")
        self._health.refresh()

    async def _on_closed(self) -> None:
        self._health.refresh()


@dataclass(frozen=True)
class Stream:
    config: StreamConfig

    @property
    def name(self) -> str:
        assert self.config.name is not None
        return self.config.name


DAY = 24 * 3600

# Telemetry from the MQTT bridge. Limits retention: other consumers may read it too.
TELEMETRY = Stream(StreamConfig(
    name="TELEMETRY", subjects=["telemetry.>"], retention=RetentionPolicy.LIMITS,
    storage=StorageType.FILE, max_age=7 * DAY, duplicate_window=120,
))
# Route fan-out, one message per (route, reading); work-queue: gone once delivered.
# The duplicate window de-duplicates re-publication after an ingest redelivery.
ROUTES = Stream(StreamConfig(
    name="ROUTES", subjects=["routes.>"], retention=RetentionPolicy.WORK_QUEUE,
    storage=StorageType.FILE, max_age=DAY, duplicate_window=120,
))


async def ensure_stream(js: JetStreamContext, stream: Stream) -> None:
    """Create the stream, or bring an existing one to this configuration. Idempotent."""
    try:
        await js.add_stream(stream.config)
    except BadRequestError:
        await js.update_stream(stream.config)


async def ensure_pull_consumer(
    js: JetStreamContext,
    stream: Stream,
    durable: str,
    *,
    ack_wait: float,
    max_ack_pending: int,
) -> JetStreamContext.PullSubscription:
    """Create a durable pull consumer with explicit acks (or bring an existing one to these
    settings), and bind to it."""
    config = ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_ack_pending=max_ack_pending,
        max_deliver=-1,
    )
    try:
        # The server updates an existing durable's editable settings (ack wait, limits) in
        # place, and refuses to change the others (deliver policy, ...).
        await js.add_consumer(stream.name, config)
    except APIError as error:
        try:
            await js.consumer_info(stream.name, durable)
        except NotFoundError:
            raise error from None
        # Consuming with the settings it has beats never becoming ready; changing them
        # means deleting the durable, which is an operator's decision.
        log.warning("durable %s keeps settings the server cannot change in place (%s)",
                    durable, error.description)
    return await js.pull_subscribe_bind(durable=durable, stream=stream.name)

FETCH_TIMEOUT_SECONDS = 1.0


class PullConsumer:
    """A durable pull consumer that sets itself up once NATS is there and keeps fetching
    across outages: the durable consumer on the server keeps our place."""

    def __init__(
        self,
        link: NatsLink,
        health: HealthState,
        stream: Stream,
        durable: str,
        *,
        ack_wait: float,
        max_ack_pending: int,
        also_ensure: tuple[Stream, ...] = (),
    ) -> None:
        self._link = link
        self._health = health
        self._stream = stream
        self._durable = durable
        self._ack_wait = ack_wait
        self._max_ack_pending = max_ack_pending
        self._also_ensure = also_ensure
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._stopping = False

    @property
    def bound(self) -> bool:
        return self._subscription is not None

    async def batches(self, batch_size: int) -> AsyncIterator[list[Msg]]:
        """Fetched batches, until `stop()`; each fetch waits at most FETCH_TIMEOUT_SECONDS,
        which bounds how long stopping takes."""
        backoff = Backoff(initial=0.2, maximum=5.0)
        while not self._stopping:
            if not self._link.client.is_connected:
                await asyncio.sleep(0.1)
                continue
            if self._subscription is None:
                try:
                    await self._bind()
                    backoff.reset()
                except NATS_TROUBLE as error:
                    log.warning("cannot set up consumer %s yet (%s)", self._durable,
                                describe_error(error))
                    await backoff.wait()
                continue
            try:
                messages = await self._subscription.fetch(batch_size,
                                                          timeout=FETCH_TIMEOUT_SECONDS)
            except NATS_TROUBLE:
                continue  # nothing within the timeout, or NATS away (the link reconnects)
            if messages:  # a pull can end with a status and no messages
                yield messages

    def stop(self) -> None:
        self._stopping = True

    async def close(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(*NATS_TROUBLE):
                await self._subscription.unsubscribe()

    async def _bind(self) -> None:
        js = self._link.jetstream
        for stream in (self._stream, *self._also_ensure):
            await ensure_stream(js, stream)
        self._subscription = await ensure_pull_consumer(
            js, self._stream, self._durable,
            ack_wait=self._ack_wait, max_ack_pending=self._max_ack_pending,
        )
        log.info("consuming %s as durable %s", self._stream.name, self._durable)
        self._health.refresh()


async def settle(messages: list[Msg], action: Callable[[Msg], Awaitable[None]]) -> None:
    """Ack, nak or mark in progress each message. Stops at the first failure: NATS is then
    away, and an unsettled message is only redelivered later."""
    for message in messages:
        try:
            await action(message)
        except (nats.errors.Error, OSError):
            return
