"""The read model: a pool opened in the background, and the queries the API serves."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from services.common import db
from services.common.logs import describe_error
from services.common.retry import Backoff

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
    def __init__(self, url: str, pool_size: int, query_timeout: float) -> None:
        self._url = url
        self._pool_size = pool_size
        self._timeout = query_timeout
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        """Create the pool once the database answers; until then queries raise
        DatabaseUnavailableError (HTTP 503)."""
        backoff = Backoff(initial=0.2, maximum=5.0)
        while self._pool is None:
            try:
                self._pool = await asyncpg.create_pool(
                    self._url, min_size=1, max_size=self._pool_size, timeout=5,
                    server_settings={"application_name": "ui_iot"},
                )
            except db.UNAVAILABLE as error:
                log.debug("pool not created yet (%s)", describe_error(error))
                await backoff.wait()

    async def close(self) -> None:
        if self._pool is not None:
            await asyncio.wait_for(self._pool.close(), 5)

    async def _fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        if self._pool is None:
            raise DatabaseUnavailableError
        try:
            rows = await self._pool.fetch(query, *args, timeout=self._timeout)
        except (*db.UNAVAILABLE, asyncpg.PostgresError) as error:
            log.warning("query failed (%s)", describe_error(error))
            raise DatabaseUnavailableError from None
        return [dict(row) for row in rows]

    async def devices(self, limit: int) -> list[dict[str, Any]]:
        return await self._fetch(DEVICES, limit)

    async def telemetry(self, device_id: str, limit: int) -> list[dict[str, Any]]:
        return await self._fetch(DEVICE_TELEMETRY, device_id, limit)

    async def alerts(self, limit: int) -> list[dict[str, Any]]:
        return await self._fetch(ALERTS, limit)
