"""The evaluator's two workers: the LISTEN connection, and the loop that evaluates what it
(or the fallback poll) reports."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import asyncpg

from services.common import db
from services.common.health import CheckResult, HealthState
from services.common.logs import describe_error
from services.common.retry import Backoff
from services.evaluator_iot.config import EvaluatorConfig
from services.evaluator_iot.rules import (
    CHANNEL,
    TimeRange,
    evaluate,
    parse_notification,
    recently_inserted,
)

log = logging.getLogger("evaluator")

QUERY_TIMEOUT_SECONDS = 30.0
# Rows become visible at commit, which can be later than their inserted_at (the time their
# transaction started): each poll looks back this much further than the previous one.
POLL_OVERLAP = timedelta(seconds=60)


class Evaluator:
    """Coalesces notified ranges and evaluates them; polls on an interval as a fallback."""

    def __init__(self, config: EvaluatorConfig, health: HealthState) -> None:
        self._config = config
        self._health = health
        self._pending: TimeRange | None = None
        self._poll_requested = True  # the first pass catches up on start-up
        self._wake = asyncio.Event()
        self._poll_mark = None  # database time of the last poll

    def notify(self, span: TimeRange) -> None:
        self._pending = span.union(self._pending)
        self._wake.set()

    def request_poll(self) -> None:
        """Evaluate everything inserted since the last poll (e.g. after LISTEN was down)."""
        self._poll_requested = True
        self._wake.set()

    async def run(self) -> None:
        connection = db.DedicatedConnection(self._config.database.url, "evaluator_iot")
        backoff = Backoff(initial=0.2, maximum=5.0)
        while True:
            if not self._wake.is_set():
                try:
                    await asyncio.wait_for(self._wake.wait(), self._config.poll_interval)
                except TimeoutError:
                    self._poll_requested = True
            self._wake.clear()
            try:
                await self._evaluate_due(await connection.get())
                backoff.reset()
            except (*db.UNAVAILABLE, asyncpg.PostgresError) as error:
                log.warning("evaluation failed (%s); will retry", describe_error(error))
                connection.discard()
                self._wake.set()  # pending work is kept; try again after the backoff
                await backoff.wait()

    async def _evaluate_due(self, connection: asyncpg.Connection) -> None:
        span, self._pending = self._pending, None
        try:
            if self._poll_requested:
                polled = await self._poll(connection)
                span = polled.union(span) if polled is not None else span
            if span is not None:
                created = await evaluate(connection, span, QUERY_TIMEOUT_SECONDS)
                self._health.count("evaluations")
                self._health.count("alerts_created", created)
        except BaseException:
            if span is not None:
                self._pending = span.union(self._pending)
            raise

    async def _poll(self, connection: asyncpg.Connection) -> TimeRange | None:
        if self._poll_mark is None:
            now = await connection.fetchval("SELECT now()", timeout=QUERY_TIMEOUT_SECONDS)
            since = now - timedelta(seconds=self._config.startup_lookback)
        else:
            since = self._poll_mark - POLL_OVERLAP
        span, now = await recently_inserted(connection, since, QUERY_TIMEOUT_SECONDS)
        self._poll_mark = now
        self._poll_requested = False
        self._health.count("polls")
        return span


class NotificationListener:
    """LISTEN on a connection of its own: a pooled connection's reset() would drop the
    LISTEN. Reconnects and re-LISTENs after any loss; its state is the readiness check
    "listener"."""

    def __init__(self, config: EvaluatorConfig, health: HealthState, evaluator: Evaluator):
        self._config = config
        self._health = health
        self._evaluator = evaluator
        self._listening = False

    def check(self) -> CheckResult:
        return CheckResult.passing("listening") if self._listening else CheckResult.failing(
            "not listening")

    async def run(self) -> None:
        backoff = Backoff(initial=0.2, maximum=5.0)
        while True:
            connection = await db.connect_with_retry(
                self._config.database.url, "evaluator_iot-listener", what="listener")
            lost = asyncio.Event()
            connection.add_termination_listener(lambda _connection, lost=lost: lost.set())
            try:
                await connection.add_listener(CHANNEL, self._on_notification)
                self._set_listening(True)
                backoff.reset()
                # Notifications sent while we were not listening are gone: poll for them.
                self._evaluator.request_poll()
                await self._watch(connection, lost)
            except (*db.UNAVAILABLE, asyncpg.PostgresError) as error:
                log.warning("listener connection lost (%s)", describe_error(error))
            finally:
                self._set_listening(False)
                connection.terminate()
            await backoff.wait()

    async def _watch(self, connection: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Until the connection is lost: a closed socket shows at once; a silent server
        shows as a round trip that does not come back in time."""
        interval = self._config.listener_check_interval
        while not lost.is_set():
            try:
                await asyncio.wait_for(lost.wait(), interval)
            except TimeoutError:
                await connection.fetchval("SELECT 1", timeout=min(interval, 2.0))
        log.warning("listener connection closed")

    def _on_notification(self, _connection, _pid, _channel, payload: str) -> None:
        span = parse_notification(payload)
        if span is None:
            log.warning("ignoring a malformed %s notification", CHANNEL)
            return
        self._health.count("notifications")
        self._evaluator.notify(span)

    def _set_listening(self, listening: bool) -> None:
        if listening != self._listening:
            self._listening = listening
            self._health.refresh()
