"""The read model: a pool created in the background and kept honest by a background ping,
and the queries the API serves.

The pool is created with `Attempts`: every dependency error (refused, too many connections,
authentication failure, missing database, ...) is retried with backoff, and readiness names
it meanwhile, so ui_iot started while PostgreSQL refuses serves its API once it accepts.
The readiness check "api_pool" covers the pool the API uses (not just some connection to
the database): it fails until the pool exists, and while the ping cannot get a connection
from the pool and a `SELECT 1` through it in time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from services.common.config import DatabaseSettings
from services.common.db import failed_round_trip
from services.common.faults import Fault, classify
from services.common.health import CheckResult, HealthState
from services.common.logs import describe_error
from services.common.retry import Attempts

log = logging.getLogger("queries")

DEVICES = "SELECT device_id, status, first_seen, last_seen FROM devices ORDER BY device_id LIMIT $1"
DEVICE_TELEMETRY = """
SELECT ts, metrics::text AS metrics FROM telemetry WHERE device_id = $1 ORDER BY ts DESC LIMIT $2
"""
ALERTS = """
SELECT a.id, a.rule_id, r.name AS rule, a.device_id, a.window_start, a.observed, a.created_at
FROM alerts a JOIN alert_rules r ON r.id = a.rule_id
ORDER BY a.created_at DESC, a.id DESC LIMIT $1
"""


class DatabaseUnavailableError(RuntimeError):
    pass


class ReadModel:
    def __init__(
        self,
        database: DatabaseSettings,
        health: HealthState,
        pool_size: int,
        query_timeout: float,
    ) -> None:
        self._database = database
        self._health = health
        self._pool_size = pool_size
        self._timeout = query_timeout
        self._pool: asyncpg.Pool | None = None
        self._state = CheckResult.failing("pool not open")
        self._attempts = Attempts(health.dependency("database"), "api_pool")
        health.add_check("api_pool", self.check)

    def check(self) -> CheckResult:
        return self._state

    async def run(self) -> None:
        """Create the pool (retrying every dependency error), then ping through it every
        DB_CHECK_INTERVAL_SECONDS for as long as the service runs."""
        self._pool = await self._attempts.run(self._create_pool)
        log.info("API pool open (up to %d connections)", self._pool_size)
        interval = self._database.check_interval
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            result = await self._ping(self._pool)
            if not result.ok:
                # A pooled connection the server closed fails once and is replaced at the
                # next acquire: only a second failure in a row says the pool cannot serve.
                result = await self._ping(self._pool)
            self._set(result)
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))

    async def _create_pool(self) -> asyncpg.Pool:
        # min_size=1: creating the pool proves the database accepts us. A pool whose
        # creation fails terminates the connections it opened.
        return await asyncpg.create_pool(
            self._database.url, min_size=1, max_size=self._pool_size, timeout=5,
            server_settings={"application_name": "ui_iot"},
        )

    async def _ping(self, pool: asyncpg.Pool) -> CheckResult:
        """A connection from the pool and a round trip through it, each with a timeout.
        asyncpg replaces a pooled connection that was closed (terminated by the server,
        socket lost) when it is next acquired, and discards one that breaks while in use,
        so the ping also walks the pool back to health."""
        timeout = self._database.check_timeout
        try:
            # The API's own budget for getting a connection: a fresh connection (TLS, SCRAM)
            # may take longer than a round trip.
            connection = await pool.acquire(timeout=self._timeout)
        except TimeoutError:
            if pool.get_idle_size() == 0 and pool.get_size() >= self._pool_size:
                return CheckResult.failing(
                    f"pool exhausted (no free connection within {self._timeout:g} s)")
            return CheckResult.failing(f"unreachable (no connection within {self._timeout:g} s)")
        except Exception as error:
            return failed_round_trip(error, self._timeout)
        try:
            await connection.fetchval("SELECT 1", timeout=timeout)
        except Exception as error:
            return failed_round_trip(error, timeout)
        finally:
            await self._release(pool, connection)
        return CheckResult.passing(f"open ({pool.get_size()} of {self._pool_size} connected)")

    async def _release(self, pool: asyncpg.Pool, connection: asyncpg.Connection) -> None:
        try:
            await pool.release(connection, timeout=self._timeout)
        except Exception as error:
            if classify(error) is Fault.BUG:
                raise
            # The pool already dropped a connection whose release failed; nothing to add.
            log.debug("releasing a pooled connection failed (%s)", describe_error(error))

    def _set(self, result: CheckResult) -> None:
        if result != self._state:
            self._state = result
            self._health.refresh()

    async def close(self) -> None:
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), 5)
            except TimeoutError:
                self._pool.terminate()

    async def _fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        pool = self._pool
        if pool is None:
            raise DatabaseUnavailableError
        try:
            # Bounded twice: waiting for a connection (pool exhausted, database refusing)
            # and the query itself.
            async with pool.acquire(timeout=self._timeout) as connection:
                rows = await connection.fetch(query, *args, timeout=self._timeout)
        except Exception as error:
            if classify(error) is not Fault.DEPENDENCY:
                raise  # a bug: HTTP 500, and the log says which
            log.warning("query failed (%s)", describe_error(error))
            raise DatabaseUnavailableError from None
        return [dict(row) for row in rows]

    async def devices(self, limit: int) -> list[dict[str, Any]]:
        return await self._fetch(DEVICES, limit)

    async def telemetry(self, device_id: str, limit: int) -> list[dict[str, Any]]:
        return await self._fetch(DEVICE_TELEMETRY, device_id, limit)

    async def alerts(self, limit: int) -> list[dict[str, Any]]:
        return await self._fetch(ALERTS, limit)
