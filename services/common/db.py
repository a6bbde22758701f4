"""PostgreSQL: connecting with retries, and the background round trip behind the
"database" readiness check.

The password never travels in DATABASE_URL: asyncpg reads PGPASSWORD (set from a Secret).
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from services.common.config import DatabaseSettings
from services.common.faults import Fault, classify
from services.common.health import CheckResult, HealthState
from services.common.logs import describe_error

log = logging.getLogger("database")

# True when this session may write: false on a standby and under default_transaction_read_only.
WRITABLE = "SELECT current_setting('transaction_read_only') = 'off'"


async def connect(
    url: str, application_name: str, connect_timeout: float = 5.0
) -> asyncpg.Connection:
    return await asyncpg.connect(
        url, timeout=connect_timeout, server_settings={"application_name": application_name}
    )


def failed_round_trip(error: Exception, timeout: float) -> CheckResult:
    """The failing check a readiness round trip's error means; a bug propagates."""
    if classify(error) is Fault.BUG:
        raise error
    if isinstance(error, TimeoutError):
        return CheckResult.failing(f"no answer within {timeout:g} s")
    return CheckResult.failing(f"unreachable ({describe_error(error)})")


class DedicatedConnection:
    """One connection for one worker, opened on first use and after every failure.

    A worker calls `get()` inside its attempt and `discard()` when the database fails it
    (`Attempts.run(..., on_failure=connection.discard)`); the next `get()` reconnects.
    (A pool would add a reset round trip per use, and its reset drops LISTENs.)
    """

    def __init__(self, url: str, application_name: str, connect_timeout: float = 5.0) -> None:
        self._url = url
        self._application_name = application_name
        self._connect_timeout = connect_timeout
        self._connection: asyncpg.Connection | None = None
        self._on_lost: list = []

    def on_lost(self, callback) -> None:
        """Call `callback()` as soon as a connection's socket closes."""
        self._on_lost.append(callback)

    async def get(self) -> asyncpg.Connection:
        if self._connection is None or self._connection.is_closed():
            self._connection = await connect(self._url, self._application_name,
                                             self._connect_timeout)
            self._connection.add_termination_listener(self._lost)
        return self._connection

    def _lost(self, connection: asyncpg.Connection) -> None:
        if connection is self._connection:
            for callback in self._on_lost:
                callback()

    def discard(self) -> None:
        if self._connection is not None:
            self._connection.terminate()
            self._connection = None

    async def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                await connection.close(timeout=2)
            except Exception as error:
                if classify(error) is Fault.BUG:
                    raise
                connection.terminate()


class DatabaseProbe:
    """The probe behind the "database" readiness check (which workers report into too).

    A dedicated connection asks every `check_interval`, with a timeout, whether it may write
    (or, for a service that only reads, whether it answers); the check reads the last
    outcome. Probe traffic therefore never reaches the database,
    /ready never waits on it, and a pool exhausted by slow queries does not hide a
    reachable database (or the reverse).
    """

    def __init__(
        self,
        settings: DatabaseSettings,
        health: HealthState,
        application_name: str,
        *,
        writes: bool = True,
    ) -> None:
        self._settings = settings
        self._health = health
        # A service that writes is not ready on a database that only reads (a standby after
        # a failover, default_transaction_read_only): the round trip asks, at no extra cost.
        self._query = WRITABLE if writes else "SELECT true"
        self._connection = DedicatedConnection(settings.url, application_name,
                                               settings.check_timeout)
        # A closed socket (server shut down, backend killed) shows at once rather than at
        # the next round trip.
        self._connection.on_lost(lambda: self._set(CheckResult.failing("connection lost")))
        self._result = CheckResult.failing("connecting")
        health.dependency("database").attach_probe(self.check)

    def check(self) -> CheckResult:
        return self._result

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            self._set(await self._round_trip())
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self._settings.check_interval - elapsed))

    async def close(self) -> None:
        self._connection.discard()

    async def _round_trip(self) -> CheckResult:
        timeout = self._settings.check_timeout
        try:
            connection = await self._connection.get()
            answer = await connection.fetchval(self._query, timeout=timeout)
        except Exception as error:
            self._connection.discard()
            return failed_round_trip(error, timeout)
        if not answer:
            return CheckResult.failing("read-only")
        return CheckResult.passing("reachable")

    def _set(self, result: CheckResult) -> None:
        if result != self._result:
            self._result = result
            self._health.refresh()
