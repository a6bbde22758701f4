"""NATS: one connection per process that reconnects forever and reports its state, and
the JetStream streams the platform uses, defined once for every program that touches them.

The streams are managed by their owner alone (services.migrate.nats, the chart's `streams`
init container, with the owner's NATS login): the services only look them up, and create and
bind their own durable consumer. A service's NATS user has no permission to create, change or
delete a stream."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, NotFoundError

from services.common.config import NatsSettings
from services.common.faults import Fault, classify
from services.common.health import CheckResult, HealthState
from services.common.logs import describe_error, redact_url
from services.common.metrics import ConsumerPosition
from services.common.retry import Backoff

log = logging.getLogger("nats-link")

# nats-py's defaults (ping every 120 s, 2 outstanding) notice a silently dead server only
# after minutes. A ping every 2 s with 2 outstanding flags a frozen server as stale within
# about 6 s, well inside the 30 s the fault matrix allows.
PING_INTERVAL_SECONDS = 2
MAX_OUTSTANDING_PINGS = 2
CONNECT_TIMEOUT_SECONDS = 2
RECONNECT_WAIT_SECONDS = 0.5
# What closing a client can raise when NATS is away (quietly ignored at shutdown).
NATS_TROUBLE = (nats.errors.Error, TimeoutError, OSError)


# DirectClient's hook: nats-py's parser calls `_process_msg` with these parameters (nats-py
# 2.x). A version that changed them keeps every message on nats-py's own path instead.
_HOOK_PARAMETERS = ("self", "sid", "subject", "reply", "data", "headers")
DIRECT_DELIVERY = (
    tuple(inspect.signature(Client._process_msg).parameters) == _HOOK_PARAMETERS
    and callable(getattr(Client, "_remove_sub", None))
)


class DirectClient(Client):
    """nats-py's client, plus subscriptions whose messages skip its Msg object, its
    per-subscription queue and task, and the callback's coroutine: the parsed fields go
    straight to a plain function, in the order they arrive. The lean pull loop's inboxes use
    it; there, that path was a sixth of ingest's event loop. Every other subscription keeps
    nats-py's path. The hook is nats-py's `_process_msg`."""

    def __init__(self) -> None:
        super().__init__()
        self._direct: dict[int, DirectHandler] = {}

    def deliver_directly(self, subscription: Subscription, handler: DirectHandler) -> None:
        """`handler(subject, reply, data, headers)`, raw bytes as parsed (headers None for a
        message without), for each message on `subscription` from now on. It must not raise:
        it runs in the client's read loop. Without the hook (DIRECT_DELIVERY false) nothing
        changes: the subscription's callback gets every message."""
        if DIRECT_DELIVERY:
            self._direct[subscription._id] = handler

    def _remove_sub(self, sid: int, max_msgs: int = 0) -> None:
        self._direct.pop(sid, None)
        super()._remove_sub(sid, max_msgs)

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes,
                           headers: bytes | None) -> None:
        handler = self._direct.get(sid)
        if handler is not None and sid in self._subs:
            self.stats["in_msgs"] += 1
            self.stats["in_bytes"] += len(data)
            handler(subject, reply, data, headers)
            return
        if handler is not None:
            del self._direct[sid]  # removed by a path that bypassed _remove_sub (close)
        await super()._process_msg(sid, subject, reply, data, headers)  # type: ignore[arg-type]


DirectHandler = Callable[[bytes, bytes, bytes, "bytes | None"], None]


class NatsLink:
    """The process's NATS connection, registered as the probe of the "nats" readiness check.

    nats-py reconnects by itself after a lost connection, but closes its client for good
    when the server sends an error such as "Authorization Violation" (rotated or expired
    credentials). `run` then replaces the client with a new one, for as long as it takes:
    users read `client`/`jetstream` afresh each time and rebind when `generation` changes.
    """

    def __init__(
        self, nats: NatsSettings | str, client_name: str, health: HealthState, *,
        ping_interval: float = PING_INTERVAL_SECONDS,
    ) -> None:
        self._settings = nats if isinstance(nats, NatsSettings) else NatsSettings(url=nats)
        self._url = self._settings.url
        self._client_name = client_name
        # Tests lengthen it to show what the pull loop's heartbeats notice by themselves.
        self._ping_interval = ping_interval
        self._health = health
        self.client: Client = DirectClient()
        self.generation = 0
        self._stopping = False
        self._client_closed = asyncio.Event()
        self._outage_reported = False
        health.dependency("nats").attach_probe(self.check)

    @property
    def jetstream(self) -> JetStreamContext:
        return self.client.jetstream(timeout=5)

    async def connect(self) -> None:
        """Connect, and connect anew each time the server closes the client. Runs until
        `close()`; a lost connection in between is nats-py's to reconnect."""
        log.info("connecting to %s", redact_url(self._url))
        backoff = Backoff(initial=0.5, maximum=10.0)
        while not self._stopping:
            client = DirectClient()
            self.client = client
            self._client_closed.clear()
            try:
                await client.connect(**self._options(client))
            except Exception as error:
                if classify(error) is Fault.BUG:
                    raise
                self._report_outage(error)
                await backoff.wait()
                continue
            self.generation += 1
            self._outage_reported = False
            backoff.reset()
            log.info("connected to NATS")
            self._health.refresh()
            await self._client_closed.wait()
            if not self._stopping:
                log.warning("NATS closed the connection for good (%s); connecting a new client",
                            describe_error(client.last_error or ConnectionError()))
                await backoff.wait()

    def _options(self, client: Client) -> dict:
        async def on_closed() -> None:
            if client is self.client:
                self._client_closed.set()
            self._health.refresh()

        return {
            "servers": [self._url],
            "name": self._client_name,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": RECONNECT_WAIT_SECONDS,
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "ping_interval": self._ping_interval,
            "max_outstanding_pings": MAX_OUTSTANDING_PINGS,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "closed_cb": on_closed,
            **credentials_options(self._settings),
        }

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
        self._stopping = True
        self._client_closed.set()
        with contextlib.suppress(*NATS_TROUBLE):
            if self.client.is_connected:
                await self.client.flush(timeout=2)
        # close() writes the client's pending buffer; on uvloop, a transport the outage has
        # already closed raises RuntimeError ("the handler is closed") rather than OSError.
        with contextlib.suppress(*NATS_TROUBLE, RuntimeError):
            if not self.client.is_closed:
                await self.client.close()

    def _report_outage(self, error: BaseException) -> None:
        if not self._outage_reported:
            self._outage_reported = True
            log.warning("NATS unavailable (%s); retrying", describe_error(error))
        self._health.refresh()

    async def _on_error(self, error: Exception) -> None:
        # Called on every failed (re)connect attempt: report an outage once, not per try.
        self._report_outage(error)

    async def _on_disconnected(self) -> None:
        log.warning("disconnected from NATS")
        self._health.refresh()

    async def _on_reconnected(self) -> None:
        self._outage_reported = False
        log.info("reconnected to NATS")
        self._health.refresh()


def credentials_options(settings: NatsSettings) -> dict:
    """nats-py connect options for the login and the CA of `settings` (none when unset)."""
    options: dict = {}
    if settings.user is not None:
        options["user"] = settings.user
        options["password"] = settings.password
    if settings.inbox_prefix != "_INBOX":
        # Replies (JetStream API answers, pull deliveries) come back under this prefix, the
        # only subjects the user may subscribe to.
        options["inbox_prefix"] = settings.inbox_prefix
    if settings.tls_ca_file is not None:
        # Read once per client: a rotated CA in the mounted Secret is picked up on reconnect.
        options["tls"] = ssl.create_default_context(cafile=settings.tls_ca_file)
    return options


@dataclass(frozen=True)
class StreamLimits:
    """How much a stream keeps. The chart checks the sum against the JetStream volume."""

    max_bytes: int
    max_age: float


@dataclass(frozen=True)
class Stream:
    config: StreamConfig

    @property
    def name(self) -> str:
        assert self.config.name is not None
        return self.config.name

    def differences(self, actual: StreamConfig) -> list[str]:
        """The settings in which the server's stream differs from this definition."""
        fields = ("subjects", "retention", "storage", "max_bytes", "max_age",
                  "duplicate_window")
        return [
            f"{name}={getattr(actual, name)!r} (ours {getattr(self.config, name)!r})"
            for name in fields if getattr(actual, name) != getattr(self.config, name)
        ]


DAY = 24 * 3600
GIB = 1024**3
TELEMETRY_LIMITS = StreamLimits(max_bytes=4 * GIB, max_age=7 * DAY)
ROUTES_LIMITS = StreamLimits(max_bytes=1 * GIB, max_age=DAY)


def telemetry_stream(limits: StreamLimits = TELEMETRY_LIMITS) -> Stream:
    """Telemetry from the MQTT bridge. Limits retention: other consumers may read it too."""
    return Stream(StreamConfig(
        name="TELEMETRY", subjects=["telemetry.>"], retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE, max_bytes=limits.max_bytes, max_age=limits.max_age,
        duplicate_window=120,
    ))


def routes_stream(limits: StreamLimits = ROUTES_LIMITS) -> Stream:
    """Route fan-out, one message per (route, reading); work-queue: gone once delivered.
    The duplicate window de-duplicates re-publication after an ingest redelivery."""
    return Stream(StreamConfig(
        name="ROUTES", subjects=["routes.>"], retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE, max_bytes=limits.max_bytes, max_age=limits.max_age,
        duplicate_window=120,
    ))


TELEMETRY = telemetry_stream()
ROUTES = routes_stream()


class StreamMissingError(nats.errors.Error):
    """A stream the service needs is not on the server: only its owner creates it."""

    def __init__(self, stream: str) -> None:
        super().__init__(f"stream {stream} missing: waiting for the owner to create it")
        self.stream = stream

    def __str__(self) -> str:
        return self.args[0]


async def require_stream(js: JetStreamContext, stream: Stream) -> list[str]:
    """How the server's stream differs from ours; StreamMissingError when it is not there.
    (A service never creates a stream: its NATS user may not.)"""
    try:
        info = await js.stream_info(stream.name)
    except NotFoundError:
        raise StreamMissingError(stream.name) from None
    return stream.differences(info.config)


async def ensure_stream(js: JetStreamContext, stream: Stream) -> list[str]:
    """Create the stream if it does not exist (the owner's tool, and the tests' and the
    bench's: services.migrate.nats applies the chart's limits). An existing stream is left as
    it is; how it differs from ours is returned."""
    try:
        info = await js.stream_info(stream.name)
    except NotFoundError:
        try:
            await js.add_stream(stream.config)
            return []
        except BadRequestError:  # created by another pod meanwhile
            info = await js.stream_info(stream.name)
    return stream.differences(info.config)


async def ensure_pull_consumer(
    js: JetStreamContext,
    stream: Stream,
    durable: str,
    *,
    ack_wait: float,
    max_ack_pending: int,
) -> JetStreamContext.PullSubscription:
    """Create a durable pull consumer with explicit acks (or bring an existing one to these
    settings), and bind to it. (The benchmark's consumers use it.)"""
    config = pull_consumer_config(durable, ack_wait=ack_wait, max_ack_pending=max_ack_pending)
    try:
        await js.add_consumer(stream.name, config)
    except APIError as error:
        try:
            await js.consumer_info(stream.name, durable)
        except NotFoundError:
            raise error from None
        log.warning("durable %s keeps settings the server cannot change in place (%s)",
                    durable, error.description)
    return await js.pull_subscribe_bind(durable=durable, stream=stream.name)


def pull_consumer_config(
    durable: str,
    *,
    ack_wait: float,
    max_ack_pending: int,
    start_after: int | None = None,
) -> ConsumerConfig:
    """A durable pull consumer with explicit acks; from the stream's start, or from the
    sequence after `start_after`."""
    resume = start_after is not None
    return ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE if resume else DeliverPolicy.ALL,
        opt_start_seq=start_after + 1 if resume else None,
        ack_wait=ack_wait,
        max_ack_pending=max_ack_pending,
        max_deliver=-1,
    )


class ByteBudget:
    """Payload bytes fetched and not yet settled, bounded: the fetcher waits for room, and
    each fetch asks the server for no more than the room left (or one largest message,
    if that is more)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._freed = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []

    def on_freed(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever bytes are given back (a fetcher that waits for room
        among other things)."""
        self._listeners.append(listener)

    @property
    def free(self) -> int:
        return self.limit - self.used

    async def room(self, at_least: int) -> int:
        """Wait until `at_least` bytes are free; the bytes free then."""
        while self.limit - self.used < at_least:
            self._freed.clear()
            await self._freed.wait()
        return self.limit - self.used

    def take(self, size: int) -> None:
        self.used += size

    def give_back(self, size: int) -> None:
        self.used -= size
        self._freed.set()
        for listener in self._listeners:
            listener()


FETCH_TIMEOUT_SECONDS = 1.0
# How often a bound consumer is looked up on the server: a deleted consumer or stream is
# noticed within this (or at once, when a fetch fails).
CONSUMER_CHECK_SECONDS = 2.0
# A status on the pull inbox: 100 is an idle heartbeat; 404/408/409 end one pull request.
_HEARTBEAT = "100"
_GONE_STATUSES = ("503",)


class ConsumerGoneError(nats.errors.Error):
    """A pull request had no responder: the consumer (or its stream) is not there."""


async def fetch(
    subscription: JetStreamContext.PullSubscription,
    batch: int,
    max_bytes: int,
    timeout: float,
) -> list[Msg]:
    """Up to `batch` messages, at most `max_bytes` of them, waiting up to `timeout`.

    nats-py's own fetch cannot limit bytes; a pull request can (`max_bytes`), so this sends
    its own, the way nats-py does: a no-wait request for what is there, then, if nothing
    was, one that waits. Messages left in the inbox by an earlier request come first.
    """
    # The subscription's internals are nats-py's; they are pinned by pyproject (nats-py 2.x).
    inbox = subscription._sub
    messages = _drain(inbox, batch)
    if messages:
        return messages
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for wait in (False, True):
        request: dict[str, object] = {"batch": batch, "max_bytes": max_bytes}
        if wait:
            remaining = deadline - loop.time()
            if remaining <= 0.01:
                return messages
            request["expires"] = int((remaining - 0.01) * 1e9)
        else:
            request["no_wait"] = True
        await subscription._nc.publish(subscription._nms, json.dumps(request).encode(),
                                       subscription._deliver)
        await _collect(inbox, messages, batch, deadline, loop)
        if messages:
            return messages
    return messages


def _drain(inbox, batch: int) -> list[Msg]:
    messages: list[Msg] = []
    queue = inbox._pending_queue
    while len(messages) < batch and not queue.empty():
        message = queue.get_nowait()
        inbox._pending_size -= len(message.data)
        if not (message.headers and message.headers.get("Status")):
            messages.append(message)
    return messages


async def _collect(inbox, messages: list[Msg], batch: int, deadline: float, loop) -> None:
    """Messages answering one pull request, until it ends (a status) or the deadline."""
    while len(messages) < batch:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        try:
            message = await inbox.next_msg(timeout=remaining)
        except nats.errors.TimeoutError:
            return
        status = message.headers.get("Status") if message.headers else None
        if status is None:
            messages.append(message)
        elif status in _GONE_STATUSES:
            raise ConsumerGoneError
        elif status != _HEARTBEAT:
            return


class PullConsumer:
    """A durable pull consumer that binds once NATS is there, keeps fetching across outages
    (the durable on the server keeps our place), and heals itself: a consumer deleted on the
    server is noticed within CONSUMER_CHECK_SECONDS and created again, resuming after the
    last acknowledged sequence the service saw (its ack floor, looked up at every check), so
    nothing is lost and at most the few messages acked since the last check are delivered
    again (the idempotent insert absorbs them). A deleted stream is not the service's to
    create: the check fails ("stream X missing: waiting for the owner to create it") until
    the owner has created it again, and the consumer then starts anew from its first message.
    `also_require` names further streams that must exist before it binds (ingest publishes
    into ROUTES).

    Its state is the readiness check "consumer".
    """

    def __init__(
        self,
        link: NatsLink,
        health: HealthState,
        stream: Stream,
        durable: str,
        *,
        ack_wait: float,
        max_ack_pending: int,
        also_require: tuple[Stream, ...] = (),
    ) -> None:
        self._link = link
        self._health = health
        self._stream = stream
        self._durable = durable
        self._ack_wait = ack_wait
        self._max_ack_pending = max_ack_pending
        self._also_require = also_require
        self._missing_reported: str | None = None
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._generation = -1
        self._ack_floor: int | None = None
        self._checked_at = 0.0
        self._unbound_because = "not bound yet"
        self._reported_differences: set[str] = set()
        self._stopping = False
        # The backlog as the last consumer info showed it (bind, and every periodic check):
        # /metrics reads this, and never asks the server itself.
        self._position: ConsumerPosition | None = None
        health.add_check("consumer", self.check)
        health.metrics.watch_consumer(stream.name, durable, lambda: self._position)

    @property
    def bound(self) -> bool:
        return self._subscription is not None

    def check(self) -> CheckResult:
        if self._subscription is None:
            return CheckResult.failing(self._unbound_because)
        return CheckResult.passing(f"{self._stream.name}/{self._durable}")

    async def batches(
        self, batch_size: int, budget: ByteBudget | None = None
    ) -> AsyncIterator[list[Msg]]:
        """Fetched batches, until `stop()`; each fetch waits at most FETCH_TIMEOUT_SECONDS,
        which bounds how long stopping takes. With a budget, fetched payload bytes are
        taken from it (the caller gives them back once the messages are settled)."""
        backoff = Backoff(initial=0.2, maximum=5.0)
        loop = asyncio.get_running_loop()
        while not self._stopping:
            if not self._link.client.is_connected:
                await asyncio.sleep(0.1)
                continue
            if self._subscription is None or self._generation != self._link.generation:
                await self._bind_or_wait(backoff)
                continue
            # One message may be as large as the server allows: a pull must always be able
            # to bring it, even past a budget smaller than that (bound: budget + 1 message).
            largest = max(self._link.client.max_payload, 1024 * 1024)
            if budget is None:
                max_bytes = 64 * largest
            else:
                max_bytes = max(await budget.room(min(largest, budget.limit)), largest)
            try:
                messages = await fetch(self._subscription, batch_size, max_bytes,
                                       FETCH_TIMEOUT_SECONDS)
            except Exception as error:
                if classify(error) is Fault.BUG:
                    raise
                await self._verify()
                continue
            if loop.time() - self._checked_at > CONSUMER_CHECK_SECONDS:
                await self._verify()
            if messages:
                if budget:
                    budget.take(sum(len(message.data) for message in messages))
                yield messages

    def stop(self) -> None:
        self._stopping = True

    async def acknowledge(self, messages: list[Msg]) -> None:
        """Ack the messages (their work is done); see settle."""
        await settle(messages, lambda message: message.ack())

    async def mark_in_progress(self, messages: list[Msg]) -> None:
        """Tell JetStream the messages are still being worked on; see settle."""
        await settle(messages, lambda message: message.in_progress())

    async def close(self) -> None:
        subscription, self._subscription = self._subscription, None
        self._unbound_because = "closed"
        if subscription is not None:
            with contextlib.suppress(*NATS_TROUBLE):
                await subscription.unsubscribe()

    def _stream_missing(self, error: StreamMissingError) -> None:
        if self._missing_reported != error.stream:
            self._missing_reported = error.stream
            log.warning("%s", error)
        self._unbind(str(error))

    async def _bind_or_wait(self, backoff: Backoff) -> None:
        """One binding attempt; on failure the "consumer" check says why, and the backoff
        waits. A missing stream waits for its owner; a bug ends the loop."""
        try:
            await self._bind()
            backoff.reset()
        except StreamMissingError as error:
            self._stream_missing(error)
            await backoff.wait()
        except Exception as error:
            if classify(error) is Fault.BUG:
                raise
            self._unbind(f"cannot bind: {describe_error(error)}")
            await backoff.wait()

    async def _bind(self) -> None:
        js = self._link.jetstream
        for stream in (self._stream, *self._also_require):
            differences = await require_stream(js, stream)
            self._report_differences(f"stream {stream.name}", differences)
        self._missing_reported = None
        generation = self._link.generation
        try:
            info = await js.consumer_info(self._stream.name, self._durable)
        except NotFoundError:
            info = await self._create(js)
        else:
            self._report_differences(f"{self._stream.name}/{self._durable}",
                                     self._consumer_differences(info.config))
        self._ack_floor = info.ack_floor.stream_seq if info.ack_floor else None
        self._position = _position(info)
        self._subscription = await self._subscribe(js)
        self._generation = generation
        self._checked_at = asyncio.get_running_loop().time()
        log.info("consuming %s as durable %s", self._stream.name, self._durable)
        self._health.refresh()

    async def _subscribe(self, js: JetStreamContext):
        """What `bound` means: here nats-py's pull subscription (subclasses bind their own)."""
        return await js.pull_subscribe_bind(durable=self._durable, stream=self._stream.name)

    async def _create(self, js: JetStreamContext):
        start_after = None
        if self._ack_floor:
            # Resume after what was acknowledged, unless the stream itself is new (deleted
            # and created again: its sequences start over).
            state = (await js.stream_info(self._stream.name)).state
            if state.last_seq >= self._ack_floor:
                start_after = self._ack_floor
            log.warning("durable %s was not found on %s; creating it again from %s",
                        self._durable, self._stream.name,
                        f"stream sequence {start_after + 1}" if start_after else "the start")
        config = pull_consumer_config(self._durable, ack_wait=self._ack_wait,
                                      max_ack_pending=self._max_ack_pending,
                                      start_after=start_after)
        try:
            return await js.add_consumer(self._stream.name, config)
        except APIError:
            # Another replica created it meanwhile (with its own idea of the start): use it.
            return await js.consumer_info(self._stream.name, self._durable)

    async def _verify(self) -> None:
        """Is our consumer still there? Notes its ack floor; unbinds if it is gone."""
        self._checked_at = asyncio.get_running_loop().time()
        try:
            info = await self._link.jetstream.consumer_info(self._stream.name, self._durable)
        except NotFoundError:
            log.warning("durable %s on %s is gone (deleted, or its stream?); binding anew",
                        self._durable, self._stream.name)
            self._unbind("consumer deleted; re-creating")
            return
        except Exception as error:
            if classify(error) is Fault.BUG:
                raise
            return  # NATS trouble: the "nats" check shows it; the next fetch will retry
        if info.ack_floor is not None:
            self._ack_floor = info.ack_floor.stream_seq
        self._position = _position(info)

    def _unbind(self, why: str) -> None:
        subscription, self._subscription = self._subscription, None
        self._unbound_because = why
        if subscription is not None:
            task = asyncio.ensure_future(subscription.unsubscribe())
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._health.refresh()

    def _consumer_differences(self, actual: ConsumerConfig) -> list[str]:
        """How an existing durable differs from ours. Some settings the server cannot change
        in place (deliver policy); changing any means an operator's decision, so the durable
        is used as it is."""
        ours = {"ack_policy": AckPolicy.EXPLICIT, "ack_wait": self._ack_wait,
                "max_ack_pending": self._max_ack_pending}
        differences = [f"{name}={getattr(actual, name)!r} (ours {value!r})"
                       for name, value in ours.items() if getattr(actual, name) != value]
        if actual.deliver_policy not in (DeliverPolicy.ALL, DeliverPolicy.BY_START_SEQUENCE):
            differences.append(f"deliver_policy={actual.deliver_policy!r}")
        return differences

    def _report_differences(self, what: str, differences: list[str]) -> None:
        new = [difference for difference in differences
               if f"{what}: {difference}" not in self._reported_differences]
        if new:
            self._reported_differences.update(f"{what}: {difference}" for difference in new)
            log.warning("%s differs from this service's settings, left as it is: %s", what,
                        "; ".join(new))


def _position(info: ConsumerInfo) -> ConsumerPosition:
    return ConsumerPosition(pending=info.num_pending or 0, ack_pending=info.num_ack_pending or 0,
                            redelivered=info.num_redelivered or 0, fetched_at=time.monotonic())


async def settle(messages: list[Msg], action: Callable[[Msg], Awaitable[None]]) -> None:
    """Ack, nak or mark in progress each message. Stops at the first failure: NATS is then
    away, and an unsettled message is only redelivered later."""
    for message in messages:
        try:
            await action(message)
        except Exception as error:
            if classify(error) is Fault.BUG:
                raise
            return
