"""Delivering route messages: pure decisions (parse, endpoint key, backoff, circuit breaker)
and the delivery of one message.

Attempts are real webhook requests, counted in PostgreSQL (delivery_attempts), not
JetStream deliveries: a message redelivered because NATS or the database was away, or
deferred because its endpoint's circuit is open or the endpoint is at its concurrency
limit, has not been attempted again. A failed request is recorded, then the message is
nak'ed with an exponential delay; the request that reaches MAX_ATTEMPTS writes the dead
letter in the same transaction, then the message is acked.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from urllib.parse import urlsplit

import aiohttp
import asyncpg
from nats.aio.msg import Msg

from services.common.faults import REMOTE_PEER_FAILURES, Fault, classify
from services.common.health import HealthState
from services.common.logs import describe_error
from services.common.retry import Attempts
from services.route_delivery.config import DB_STEP_TIMEOUT_SECONDS
from services.route_delivery.destinations import denial_reason
from services.route_delivery.signing import signed_headers

log = logging.getLogger("delivery")

ROUTE = "SELECT webhook_url, webhook_secret FROM message_routes WHERE id = $1 AND enabled"
RECORD_FAILED_ATTEMPT = """
INSERT INTO delivery_attempts (message_id, route_id, attempts, last_error, updated_at)
VALUES ($1, $2, 1, $3, now())
ON CONFLICT (message_id) DO UPDATE
SET attempts = delivery_attempts.attempts + 1, last_error = EXCLUDED.last_error,
    updated_at = now()
RETURNING attempts
"""
FORGET_ATTEMPTS = "DELETE FROM delivery_attempts WHERE message_id = $1"
INSERT_DEAD_LETTER = """
INSERT INTO dead_letters (message_id, route_id, device_id, payload, attempts, last_error)
VALUES ($1, $2, $3, $4::jsonb, $5, $6)
ON CONFLICT (message_id) DO NOTHING
"""

# Endpoints (and routes) whose state is kept; the least recently used are forgotten.
MAX_TRACKED_ENDPOINTS = 10_000
MAX_CACHED_ROUTES = 10_000
# From a webhook on the same network to the request timeout (5 s by default, at most 300).
WEBHOOK_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                           60.0)
# Re-offer delay for a message whose endpoint has its half-open trial request in flight.
BUSY_DELAY_SECONDS = 1.0
# A message whose endpoint is at its concurrency limit waits for a slot there only when
# the endpoint's requests are fast enough to free one within BUSY_WAIT_SECONDS (bouncing a
# fast endpoint's burst through JetStream would only add round trips). Otherwise it is
# offered again after about one of the endpoint's recent request durations, bounded.
BUSY_WAIT_SECONDS = 0.5
BUSY_DELAY_MIN_SECONDS = 0.05
BUSY_DELAY_MAX_SECONDS = 5.0
# Re-offer delay for a message whose database step failed (not an attempt).
DATABASE_RETRY_SECONDS = 2.0
MAX_ROUTE_ID = 2**63 - 1  # message_routes.id is a bigint

K = TypeVar("K")
V = TypeVar("V")


# -- pure decisions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteMessage:
    route_id: int
    device_id: str
    body: bytes


def parse_route_message(data: bytes) -> RouteMessage | None:
    try:
        document = json.loads(data)
        route_id = document["route_id"]
        device_id = document["device_id"]
    except (ValueError, KeyError, TypeError, RecursionError):
        # Any pod may publish to routes.*: no message, however deep, may crash delivery.
        return None
    if type(route_id) is not int or not 0 < route_id <= MAX_ROUTE_ID:
        return None
    if not isinstance(device_id, str):
        return None
    return RouteMessage(route_id, device_id, data)


def retry_delay(attempt: int, base: float, maximum: float) -> float:
    """Delay before attempt `attempt + 1`: base, 2*base, 4*base, ... capped at maximum."""
    return min(maximum, base * 2 ** max(0, attempt - 1))


def jittered(delay: float) -> float:
    """Up to 20 % more, so deferred messages do not come back in lock-step."""
    return delay * random.uniform(1.0, 1.2)


DEFAULT_PORTS = {"http": 80, "https": 443}


def endpoint_key(url: str) -> str:
    """What limits and circuits are kept per: scheme, host and port (never the path, the
    query or credentials). A URL that cannot be parsed is its own endpoint."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url
    scheme = parts.scheme.lower()
    host = parts.hostname
    if not host:
        return url
    if port is None:
        port = DEFAULT_PORTS.get(scheme)
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}" if port is not None else f"{scheme}://{host}"


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    # The one request a half-open circuit lets through.
    trial: bool = False
    # When not allowed: seconds until asking again makes sense.
    wait: float = 0.0


class Transition(enum.Enum):
    OPENED = "opened"
    CLOSED = "closed"


class CircuitBreaker:
    """Closed: requests flow; `threshold` consecutive failures open it. Open: nothing is
    sent for `open_seconds`. Then half-open: one trial request; its success closes the
    circuit, its failure opens it again for `open_seconds`. Time is passed in (`now`)."""

    def __init__(self, threshold: int, open_seconds: float) -> None:
        self._threshold = threshold
        self._open_seconds = open_seconds
        self.consecutive_failures = 0
        self._open_until: float | None = None
        self._trial_in_flight = False

    def state(self, now: float) -> str:
        if self._open_until is None:
            return "closed"
        return "open" if now < self._open_until else "half-open"

    def admit(self, now: float) -> Admission:
        if self._open_until is None:
            return Admission(True)
        if now < self._open_until:
            return Admission(False, wait=self._open_until - now)
        if self._trial_in_flight:
            return Admission(False, wait=BUSY_DELAY_SECONDS)
        self._trial_in_flight = True
        return Admission(True, trial=True)

    def record(self, ok: bool, now: float, *, trial: bool) -> Transition | None:
        """The outcome of a request admitted earlier (`trial` as admitted)."""
        if trial:
            self._trial_in_flight = False
        was_open = self._open_until is not None
        if ok:
            self.consecutive_failures = 0
            self._open_until = None
            return Transition.CLOSED if was_open else None
        self.consecutive_failures += 1
        # A failure of a request sent before the circuit opened does not extend it.
        if trial or (not was_open and self.consecutive_failures >= self._threshold):
            self._open_until = now + self._open_seconds
            return None if was_open else Transition.OPENED
        return None

    def abandon(self, *, trial: bool) -> None:
        """An admitted request that ended without an outcome (shutdown, a bug)."""
        if trial:
            self._trial_in_flight = False


class Endpoint:
    """Per-endpoint state: its circuit, its concurrency slots, and how long its requests
    take (a moving average)."""

    __slots__ = ("_slots", "breaker", "latency")

    def __init__(self, breaker: CircuitBreaker, concurrency: int) -> None:
        self.breaker = breaker
        self.latency: float | None = None
        self._slots = asyncio.Semaphore(concurrency)

    def took(self, seconds: float) -> None:
        self.latency = seconds if self.latency is None else 0.8 * self.latency + 0.2 * seconds

    def busy_delay(self) -> float:
        """When to offer a message again while the endpoint is at its concurrency limit."""
        latency = BUSY_DELAY_MIN_SECONDS if self.latency is None else self.latency
        return min(BUSY_DELAY_MAX_SECONDS, max(BUSY_DELAY_MIN_SECONDS, latency))

    async def take_slot(self) -> bool:
        """A concurrency slot at this endpoint (give it back with `release_slot`), or False
        when none is free and none is expected soon."""
        if not self._slots.locked():
            await self._slots.acquire()
            return True
        if self.latency is not None and self.latency > BUSY_WAIT_SECONDS:
            return False  # a slow endpoint: do not hold the message (and a global slot)
        try:
            async with asyncio.timeout(BUSY_WAIT_SECONDS):
                await self._slots.acquire()
        except TimeoutError:
            return False
        return True

    def release_slot(self) -> None:
        self._slots.release()


class BoundedCache(Generic[K, V]):
    """At most `capacity` entries, the least recently used evicted first."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def get_or_create(self, key: K, create: Callable[[], V]) -> V:
        value = self.get(key)
        if value is None:
            value = create()
            self.put(key, value)
        return value


# -- the database steps --------------------------------------------------------------------


@asynccontextmanager
async def connection_from(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection for one step; acquiring and using it together take at most
    DB_STEP_TIMEOUT_SECONDS (asyncio.timeout cancels the statement: asyncpg then cancels
    it server-side and the pool resets or replaces the connection)."""
    async with asyncio.timeout(DB_STEP_TIMEOUT_SECONDS), pool.acquire() as connection:
        yield connection


@dataclass(frozen=True, slots=True)
class Route:
    url: str
    # Never logged: repr leaves it out.
    secret: str = field(repr=False)


class RouteCache:
    """route_id -> Route (None: route gone or disabled), cached for `ttl` seconds."""

    def __init__(self, pool: asyncpg.Pool, ttl: float) -> None:
        self._pool = pool
        self._ttl = ttl
        self._entries: BoundedCache[int, tuple[float, Route | None]] = BoundedCache(
            MAX_CACHED_ROUTES)

    async def route(self, route_id: int) -> Route | None:
        cached = self._entries.get(route_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        async with connection_from(self._pool) as connection:
            row = await connection.fetchrow(ROUTE, route_id)
        route = None if row is None else Route(row["webhook_url"], row["webhook_secret"])
        self._entries.put(route_id, (now, route))
        return route


class AttemptLedger:
    """delivery_attempts: real requests per message."""

    def __init__(self, pool: asyncpg.Pool, max_attempts: int) -> None:
        self._pool = pool
        self._max_attempts = max_attempts

    async def forget(self, message_id: str) -> None:
        async with connection_from(self._pool) as connection:
            await connection.execute(FORGET_ATTEMPTS, message_id)

    async def record_failure(self, message_id: str, route: RouteMessage, error: str, *,
                             permanent: bool = False) -> int:
        """Count one failed request; the one reaching the limit, or a permanent failure
        (a refused destination), writes the dead letter and drops the count in the same
        transaction. Returns the attempts made so far."""
        async with connection_from(self._pool) as connection, connection.transaction():
            attempts = await connection.fetchval(
                RECORD_FAILED_ATTEMPT, message_id, route.route_id, error)
            if permanent or attempts >= self._max_attempts:
                await connection.execute(
                    INSERT_DEAD_LETTER, message_id, route.route_id, route.device_id,
                    route.body.decode(), attempts, error)
                await connection.execute(FORGET_ATTEMPTS, message_id)
        return attempts


# -- one delivery --------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliverySettings:
    max_attempts: int
    request_timeout: float
    retry_backoff: float
    retry_backoff_max: float
    endpoint_concurrency: int
    circuit_failure_threshold: int
    circuit_open_seconds: float


class Deliverer:
    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        pool: asyncpg.Pool,
        routes_cache_ttl: float,
        database: Attempts,
        health: HealthState,
        settings: DeliverySettings,
    ) -> None:
        self._session = session
        self._routes = RouteCache(pool, routes_cache_ttl)
        self._ledger = AttemptLedger(pool, settings.max_attempts)
        self._database = database
        self._health = health
        self._settings = settings
        self._timeout = aiohttp.ClientTimeout(total=settings.request_timeout)
        self._endpoints: BoundedCache[str, Endpoint] = BoundedCache(MAX_TRACKED_ENDPOINTS)
        self._request_seconds = health.metrics.histogram(
            "iot_route_webhook_request_seconds",
            "Webhook POSTs: time to the response (or the failure), by result.",
            WEBHOOK_LATENCY_BUCKETS, labels=["result"])

    def _new_endpoint(self) -> Endpoint:
        return Endpoint(CircuitBreaker(self._settings.circuit_failure_threshold,
                                       self._settings.circuit_open_seconds),
                        self._settings.endpoint_concurrency)

    async def handle(self, message: Msg) -> None:
        route_message = parse_route_message(message.data)
        if route_message is None:
            log.warning("dropping a malformed route message (stream seq %s)",
                        message.metadata.sequence.stream)
            self._health.count("dropped")
            await message.term()
            return
        message_id = _message_id(message)
        try:
            route = await self._routes.route(route_message.route_id)
            if route is None and message.metadata.num_delivered > 1:
                await self._ledger.forget(message_id)  # attempts made before it went
        except Exception as error:
            await self._database_step_failed(message, error)
            return
        self._database.succeeded()
        if route is None:
            self._health.count("dropped")  # the route was deleted or disabled
            await message.ack()
            return

        key = endpoint_key(route.url)
        endpoint = self._endpoints.get_or_create(key, self._new_endpoint)
        if not await endpoint.take_slot():
            self._health.count("deferred")
            await message.nak(delay=jittered(endpoint.busy_delay()))
            return
        try:
            admission = endpoint.breaker.admit(time.monotonic())
            if not admission.allowed:
                self._health.count("deferred")
                await message.nak(delay=jittered(admission.wait))
                return
            outcome = await self._attempt(key, endpoint, admission, route=route,
                                          route_message=route_message, message_id=message_id)
        finally:
            endpoint.release_slot()

        if outcome.error is None:
            await self._delivered(message, message_id)
        else:
            await self._failed(message, message_id, route_message, outcome.error,
                               permanent=outcome.denied)

    async def _attempt(
        self, key: str, endpoint: Endpoint, admission: Admission, *, route: Route,
        route_message: RouteMessage, message_id: str,
    ) -> Outcome:
        """One real request, its outcome told to the endpoint's circuit. A destination the
        guard refuses was never contacted: not timed, not told to the circuit."""
        sent = time.monotonic()
        try:
            outcome = await self._post(route, route_message, message_id)
        except BaseException:
            endpoint.breaker.abandon(trial=admission.trial)  # cancelled (shutdown) or a bug
            raise
        if outcome.denied:
            endpoint.breaker.abandon(trial=admission.trial)
            return outcome
        error = outcome.error
        now = time.monotonic()
        endpoint.took(now - sent)
        self._request_seconds.labels(_request_result(error)).observe(now - sent)
        self._log_transition(key, endpoint.breaker.record(error is None, now,
                                                          trial=admission.trial))
        return outcome

    async def _delivered(self, message: Msg, message_id: str) -> None:
        if message.metadata.num_delivered > 1:  # a first delivery has no earlier attempts
            try:
                await self._ledger.forget(message_id)
            except Exception as error:
                # The webhook has it: ack anyway (no second request). The stale count is
                # purged with the old rows. Not reported to readiness: nothing would retry
                # this step, so the failure would stay on the check after the database is
                # back; the next delivery's database step reports the database's state.
                if classify(error) is not Fault.DEPENDENCY:
                    raise
                log.warning("delivered, but its attempt count stays until purged (%s)",
                            describe_error(error))
            else:
                self._database.succeeded()
        self._health.count("delivered")
        await message.ack()

    async def _failed(
        self, message: Msg, message_id: str, route_message: RouteMessage, error: str, *,
        permanent: bool = False,
    ) -> None:
        try:
            attempts = await self._ledger.record_failure(message_id, route_message, error,
                                                         permanent=permanent)
        except Exception as db_error:
            # The attempt is not counted (it cannot be): the message comes back and is
            # attempted again, so an outage can add attempts but never lose a message.
            await self._database_step_failed(message, db_error)
            return
        self._database.succeeded()
        if permanent:
            # Never retried: the same URL resolves to a refused address again (and rebinding
            # it until it is allowed is what the guard is for).
            log.warning("route %d: dead letter without retry (%s)", route_message.route_id,
                        error)
            self._health.count("failed")
            await message.ack()
            return
        if attempts >= self._settings.max_attempts:
            log.warning("route %d: dead letter after %d attempts (%s)",
                        route_message.route_id, attempts, error)
            self._health.count("failed")
            await message.ack()
            return
        self._health.count("retries")
        await message.nak(delay=retry_delay(
            attempts, self._settings.retry_backoff, self._settings.retry_backoff_max))

    async def _post(self, route: Route, route_message: RouteMessage,
                    message_id: str) -> Outcome:
        """The request's outcome: delivered (no error), failed, or refused by the destination
        guard. Redirects are not followed: a POST must not be re-sent to wherever a 3xx
        points (nor to an address the guard never saw)."""
        headers = {"Content-Type": "application/json", "Idempotency-Key": message_id,
                   **signed_headers(route.secret, route_message.body)}
        try:
            async with self._session.post(route.url, data=route_message.body, headers=headers,
                                          timeout=self._timeout,
                                          allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return Outcome(None)
                return Outcome(f"HTTP {response.status}")
        except REMOTE_PEER_FAILURES as error:
            denied = denial_reason(error)
            if denied is not None:
                return Outcome(denied, denied=True)
            return Outcome(describe_error(error))

    async def _database_step_failed(self, message: Msg, error: Exception) -> None:
        """A database step failed: no attempt is counted. Dependency trouble re-offers the
        message later; data PostgreSQL refuses drops it; a bug propagates."""
        fault = classify(error)
        if fault is Fault.DEPENDENCY:
            self._database.failed(error)
            await message.nak(delay=jittered(DATABASE_RETRY_SECONDS))
        elif fault is Fault.BAD_MESSAGE:
            log.warning("dropping route message %s: the database refuses it (%s)",
                        message.metadata.sequence.stream, describe_error(error))
            self._health.count("dropped")
            await message.term()
        else:
            raise error

    def _log_transition(self, endpoint: str, transition: Transition | None) -> None:
        if transition is Transition.OPENED:
            log.warning("circuit for %s opened after %d consecutive failures; retrying it in "
                        "%g s", endpoint, self._settings.circuit_failure_threshold,
                        self._settings.circuit_open_seconds)
        elif transition is Transition.CLOSED:
            log.info("circuit for %s closed: the endpoint answers again", endpoint)


@dataclass(frozen=True, slots=True)
class Outcome:
    # None: delivered; else a short description of the failure.
    error: str | None
    # The destination guard refused the address: a permanent failure, nothing was sent.
    denied: bool = False


def _request_result(error: str | None) -> str:
    """A bounded label for one request's result: the status class, or "error" when no
    response came (timeout, connection refused, unusable URL)."""
    if error is None:
        return "2xx"
    if error.startswith("HTTP "):
        return f"{error[5]}xx"
    return "error"


def _message_id(message: Msg) -> str:
    headers = message.headers or {}
    return headers.get("Nats-Msg-Id") or f"ROUTES/{message.metadata.sequence.stream}"
