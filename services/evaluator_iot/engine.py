"""The evaluator's two workers: the LISTEN connection, and the loop that evaluates what it
(or the fallback poll) reports.

Both talk to PostgreSQL through `Attempts`: every dependency error (connection lost or
refused, too many connections, authentication failure, read-only database, timeouts) is
retried with backoff while readiness names it; anything else is a bug and crashes the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

import asyncpg

from services.common import db
from services.common.faults import Fault, classify
from services.common.health import CheckResult, HealthState
from services.common.retry import Attempts
from services.evaluator_iot.config import EvaluatorConfig
from services.evaluator_iot.rules import (
    CHANNEL,
    TimeRange,
    Window,
    evaluate,
    parse_notification,
    read_position,
    save_position,
)

log = logging.getLogger("evaluator")

QUERY_TIMEOUT_SECONDS = 30.0
# Rows become visible at commit, which can be later than their inserted_at (the time their
# transaction started): each poll looks back this much before the previous one's end. An
# ingest commit may take up to its 60 s timeout; the overlap leaves a margin above that.
POLL_OVERLAP = timedelta(seconds=90)
# A poll evaluates at most this much insertion time per transaction, saving the position
# after each: catching up after hours of downtime is a series of bounded statements, and
# what was done survives a crash half-way.
CATCH_UP_CHUNK = timedelta(minutes=10)


class Evaluator:
    """Evaluates notified ranges as they come, and polls by insertion time from the
    persisted position (on start-up, after LISTEN was down, and every poll interval)."""

    def __init__(self, config: EvaluatorConfig, health: HealthState) -> None:
        self._config = config
        self._health = health
        self._window = Window(config.evaluation_max_age, config.evaluation_max_future)
        self._connection = db.DedicatedConnection(config.database.url, "evaluator_iot")
        self._progress = health.progress("evaluator")
        self._attempts = Attempts(health.dependency("database"), "evaluator",
                                  progress=self._progress)
        self._pending: TimeRange | None = None
        self._poll_requested = True  # the first pass catches up from the persisted position
        self._next_poll = 0.0  # loop time of the next interval poll
        self._wake = asyncio.Event()
        # inserted_at from which the next poll evaluates; read from evaluator_position on
        # the first pass.
        self._since: datetime | None = None

    def notify(self, span: TimeRange) -> None:
        self._pending = span.union(self._pending)
        self._wake.set()

    def request_poll(self) -> None:
        """Evaluate everything inserted since the last poll (e.g. after LISTEN was down)."""
        self._poll_requested = True
        self._wake.set()

    def _due(self) -> bool:
        return self._poll_requested or self._pending is not None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._due():
                remaining = self._next_poll - loop.time()
                if remaining > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), remaining)
                # By the clock, not by silence: a steady stream of notifications must not
                # hold back the poll (and with it the persisted position).
                if loop.time() >= self._next_poll:
                    self._poll_requested = True
            self._wake.clear()
            if not self._due():
                continue
            with self._progress.working():
                await self._progress.checkpoint()
                await self._attempts.run(self._step, on_failure=self._connection.discard)

    def close(self) -> None:
        # Terminate, not close: a cancelled evaluation may have left a statement in flight.
        self._connection.discard()

    async def _step(self) -> None:
        """One unit of evaluation: a poll chunk if a poll is due, else the notified range."""
        connection = await self._connection.get()
        if self._since is None:
            self._since = await self._start_position(connection)
        if self._poll_requested:
            await self._poll_chunk(connection)
            return
        span, self._pending = self._pending, None
        if span is None:
            return
        try:
            # Rows before the poll position were covered by a poll: a notified range only
            # needs the rows inserted since, whatever their timestamps say.
            created = await evaluate(
                connection, inserted_from=self._since, inserted_to=None, span=span,
                window=self._window, timeout=QUERY_TIMEOUT_SECONDS)
        except BaseException:
            self._pending = span.union(self._pending)  # kept for the next attempt
            raise
        self._counted(created)

    async def _start_position(self, connection: asyncpg.Connection) -> datetime:
        position = await read_position(connection, QUERY_TIMEOUT_SECONDS)
        if position is not None:
            log.info("resuming from the persisted position %s", position.isoformat())
            return position - POLL_OVERLAP
        now = await connection.fetchval("SELECT now()", timeout=QUERY_TIMEOUT_SECONDS)
        log.info("no persisted position: evaluating rows inserted in the last %g s",
                 self._config.startup_lookback)
        return now - timedelta(seconds=self._config.startup_lookback)

    async def _poll_chunk(self, connection: asyncpg.Connection) -> None:
        assert self._since is not None
        # Evaluation and position commit together: the position never runs ahead of what
        # was evaluated, and a re-run after a crash is idempotent (alerts' unique key).
        async with connection.transaction():
            now = await connection.fetchval("SELECT now()", timeout=QUERY_TIMEOUT_SECONDS)
            since = max(self._since, now - timedelta(seconds=self._window.max_age))
            upto = min(since + CATCH_UP_CHUNK, now)
            created = await evaluate(
                connection, inserted_from=since, inserted_to=upto, span=None,
                window=self._window, timeout=QUERY_TIMEOUT_SECONDS)
            await save_position(connection, upto, QUERY_TIMEOUT_SECONDS)
        self._since = upto - POLL_OVERLAP
        if upto >= now:
            self._poll_requested = False
            self._next_poll = asyncio.get_running_loop().time() + self._config.poll_interval
            self._health.count("polls")
        self._counted(created)

    def _counted(self, created: int) -> None:
        self._health.count("evaluations")
        self._health.count("alerts_created", created)


class NotificationListener:
    """LISTEN on a connection of its own: a pooled connection's reset() would drop the
    LISTEN. Reconnects and re-LISTENs after any dependency error; its state is the
    readiness check "listener" (and, while it cannot connect, "database" names it)."""

    def __init__(self, config: EvaluatorConfig, health: HealthState, evaluator: Evaluator):
        self._config = config
        self._health = health
        self._evaluator = evaluator
        self._attempts = Attempts(health.dependency("database"), "listener")
        self._listening = False

    def check(self) -> CheckResult:
        return CheckResult.passing("listening") if self._listening else CheckResult.failing(
            "not listening")

    async def run(self) -> None:
        while True:
            connection, lost = await self._attempts.run(self._listen)
            self._set_listening(True)
            # Notifications sent while we were not listening are gone: poll for them.
            self._evaluator.request_poll()
            try:
                await self._watch(connection, lost)
                failure: BaseException = ConnectionError("listener connection closed")
            except Exception as error:
                if classify(error) is not Fault.DEPENDENCY:
                    raise
                failure = error
            finally:
                self._set_listening(False)
                connection.terminate()
            self._attempts.failed(failure)
            await self._attempts.wait()

    async def _listen(self) -> tuple[asyncpg.Connection, asyncio.Event]:
        connection = await db.connect(self._config.database.url, "evaluator_iot-listener")
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        try:
            await connection.add_listener(CHANNEL, self._on_notification)
        except BaseException:
            connection.terminate()
            raise
        return connection, lost

    async def _watch(self, connection: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Until the connection is lost: a closed socket shows at once; a silent server
        shows as a round trip that does not come back in time (TimeoutError)."""
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
