"""The maintenance pass: SQL only, one replica at a time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

# Several ops_worker replicas may run; the first to take this lock does the pass.
MAINTENANCE_LOCK_KEY = 7_400_002

MARK_OFFLINE = """
UPDATE devices SET status = 'offline'
WHERE status = 'online' AND last_seen < now() - make_interval(secs => $1)
"""

# ctid batches keep each DELETE short, so retention never blocks ingest for long.
PRUNE_BATCH = """
DELETE FROM telemetry WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM telemetry WHERE ts < now() - make_interval(days => $1) LIMIT $2
))
"""


@dataclass(frozen=True)
class PassResult:
    ran: bool
    marked_offline: int = 0
    pruned: int = 0


def _affected(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def maintenance_pass(
    connection: asyncpg.Connection,
    *,
    offline_after: float,
    retention_days: int,
    prune_batch_rows: int,
    statement_timeout: float,
    on_statement: Callable[[], None] = lambda: None,
) -> PassResult:
    """One pass under the maintenance lock; `on_statement` runs after each statement (the
    progress watchdog's beat: a long retention pass is many short statements).

    The lock is a session lock, released here only when the pass succeeds. On any error the
    caller must discard the connection: ending the session releases the lock, whereas an
    unlock on a broken connection would fail and hide the error that broke it.
    """
    if not await connection.fetchval(
        "SELECT pg_try_advisory_lock($1)", MAINTENANCE_LOCK_KEY, timeout=statement_timeout
    ):
        return PassResult(ran=False)
    marked = _affected(
        await connection.execute(MARK_OFFLINE, offline_after, timeout=statement_timeout))
    on_statement()
    pruned = 0
    while True:
        deleted = _affected(await connection.execute(
            PRUNE_BATCH, retention_days, prune_batch_rows, timeout=statement_timeout))
        on_statement()
        pruned += deleted
        if deleted < prune_batch_rows:
            break
    await connection.execute(
        "SELECT pg_advisory_unlock($1)", MAINTENANCE_LOCK_KEY, timeout=statement_timeout)
    return PassResult(ran=True, marked_offline=marked, pruned=pruned)
