"""Delivering one route message: pure decisions (parse, backoff) and the attempt itself.

Attempts are counted by JetStream (num_delivered): a failed attempt is nak'ed with a
delay, so retries survive restarts and never block other deliveries. The last failed
attempt writes a dead letter, then acks.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import aiohttp
import asyncpg
from nats.aio.msg import Msg

from services.common import db
from services.common.health import HealthState
from services.common.logs import describe_error

log = logging.getLogger("delivery")

INSERT_DEAD_LETTER = """
INSERT INTO dead_letters (message_id, route_id, device_id, payload, attempts, last_error)
VALUES ($1, $2, $3, $4::jsonb, $5, $6)
ON CONFLICT (message_id) DO NOTHING
"""
ROUTE_URL = "SELECT webhook_url FROM message_routes WHERE id = $1 AND enabled"


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
    except (ValueError, KeyError, TypeError):
        return None
    if type(route_id) is not int or not isinstance(device_id, str):
        return None
    return RouteMessage(route_id, device_id, data)


def retry_delay(attempt: int, base: float, maximum: float) -> float:
    """Delay before attempt `attempt + 1`: base, 2*base, 4*base, ... capped at maximum."""
    return min(maximum, base * 2 ** max(0, attempt - 1))


class RouteCache:
    """route_id -> webhook URL (None: route gone or disabled), cached for `ttl` seconds."""

    def __init__(self, connection: db.DedicatedConnection, ttl: float) -> None:
        self._connection = connection
        self._ttl = ttl
        self._entries: dict[int, tuple[float, str | None]] = {}

    async def url(self, route_id: int) -> str | None:
        cached = self._entries.get(route_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        connection = await self._connection.get()
        url = await connection.fetchval(ROUTE_URL, route_id, timeout=5)
        self._entries[route_id] = (now, url)
        return url


class Deliverer:
    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        routes: RouteCache,
        connection: db.DedicatedConnection,
        health: HealthState,
        max_attempts: int,
        request_timeout: float,
        retry_backoff: float,
        retry_backoff_max: float,
    ) -> None:
        self._session = session
        self._routes = routes
        self._connection = connection
        self._health = health
        self._max_attempts = max_attempts
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._retry_backoff = retry_backoff
        self._retry_backoff_max = retry_backoff_max

    async def handle(self, message: Msg) -> None:
        attempt = message.metadata.num_delivered
        route_message = parse_route_message(message.data)
        if route_message is None:
            log.warning("dropping a malformed route message (stream seq %s)",
                        message.metadata.sequence.stream)
            self._health.count("dropped")
            await message.term()
            return
        try:
            url = await self._routes.url(route_message.route_id)
        except (*db.UNAVAILABLE, asyncpg.PostgresError):
            # Not an attempt at the webhook; come back when the database is.
            self._connection.discard()
            await message.nak(delay=self._retry_backoff)
            return
        if url is None:
            self._health.count("dropped")  # the route was deleted or disabled
            await message.ack()
            return

        error = await self._post(url, route_message, message)
        if error is None:
            self._health.count("delivered")
            await message.ack()
        elif attempt >= self._max_attempts:
            await self._dead_letter(message, route_message, attempt, error)
        else:
            self._health.count("retries")
            await message.nak(
                delay=retry_delay(attempt, self._retry_backoff, self._retry_backoff_max))

    async def _post(self, url: str, route_message: RouteMessage, message: Msg) -> str | None:
        """None when delivered, else a short description of the failure."""
        headers = {"Content-Type": "application/json",
                   "Idempotency-Key": _message_id(message)}
        try:
            async with self._session.post(url, data=route_message.body, headers=headers,
                                          timeout=self._timeout) as response:
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as error:
            return describe_error(error)

    async def _dead_letter(
        self, message: Msg, route_message: RouteMessage, attempts: int, error: str
    ) -> None:
        try:
            connection = await self._connection.get()
            await connection.execute(
                INSERT_DEAD_LETTER, _message_id(message), route_message.route_id,
                route_message.device_id, route_message.body.decode(), attempts, error,
                timeout=10,
            )
        except (*db.UNAVAILABLE, asyncpg.PostgresError) as db_error:
            # Not recorded yet: redeliver; the next (over-limit) attempt records it.
            log.warning("cannot record a dead letter yet (%s)", describe_error(db_error))
            self._connection.discard()
            await message.nak(delay=self._retry_backoff)
            return
        log.warning("route %d: giving up after %d attempts (%s)", route_message.route_id,
                    attempts, error)
        self._health.count("failed")
        await message.ack()


def _message_id(message: Msg) -> str:
    headers = message.headers or {}
    return headers.get("Nats-Msg-Id") or f"ROUTES/{message.metadata.sequence.stream}"
