"""Alert rule evaluation: SQL over a time range, and the notification payload it reacts to.

A rule fires for a (device, window) when any reading in that window breaches it; windows
are aligned to the epoch. Breaching is monotone (more readings can only add breaches), so
evaluating any sub-range of a window is correct, and the unique (rule, device, window)
key makes every evaluation idempotent: re-running a range never duplicates an alert.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import asyncpg

CHANNEL = "telemetry_inserted"

EVALUATE_RANGE = """
INSERT INTO alerts (rule_id, device_id, window_start, observed)
SELECT r.id,
       t.device_id,
       to_timestamp(floor(extract(epoch FROM t.ts) / r.window_seconds) * r.window_seconds),
       CASE r.operator WHEN '>' THEN max((t.metrics ->> r.metric)::float8)
                       ELSE min((t.metrics ->> r.metric)::float8) END
FROM alert_rules r
JOIN telemetry t ON r.device_id IS NULL OR t.device_id = r.device_id
WHERE r.enabled
  AND t.ts BETWEEN $1 AND $2
  AND CASE r.operator WHEN '>' THEN (t.metrics ->> r.metric)::float8 > r.threshold
                      ELSE (t.metrics ->> r.metric)::float8 < r.threshold END
GROUP BY r.id, t.device_id, 3
ON CONFLICT (rule_id, device_id, window_start) DO NOTHING
"""

# The readings inserted since `since` (by the database's clock), and the clock now.
RECENTLY_INSERTED = """
SELECT min(ts) AS first, max(ts) AS last, now() AS now
FROM telemetry WHERE inserted_at >= $1
"""


@dataclass(frozen=True, slots=True)
class TimeRange:
    first: datetime
    last: datetime

    def union(self, other: TimeRange | None) -> TimeRange:
        if other is None:
            return self
        return TimeRange(min(self.first, other.first), max(self.last, other.last))


def parse_notification(payload: str) -> TimeRange | None:
    """The range a `telemetry_inserted` notification announces; None if malformed."""
    try:
        document = json.loads(payload)
        first = datetime.fromisoformat(document["from"])
        last = datetime.fromisoformat(document["to"])
    except (ValueError, KeyError, TypeError):
        return None
    if first.tzinfo is None or last.tzinfo is None or first > last:
        return None
    return TimeRange(first, last)


async def evaluate(connection: asyncpg.Connection, span: TimeRange, timeout: float) -> int:
    """Evaluate every enabled rule over readings in `span`; returns alerts created."""
    status = await connection.execute(EVALUATE_RANGE, span.first, span.last, timeout=timeout)
    return int(status.rsplit(" ", 1)[-1])


async def recently_inserted(
    connection: asyncpg.Connection, since: datetime, timeout: float
) -> tuple[TimeRange | None, datetime]:
    row = await connection.fetchrow(RECENTLY_INSERTED, since, timeout=timeout)
    assert row is not None
    span = TimeRange(row["first"], row["last"]) if row["first"] is not None else None
    return span, row["now"]
