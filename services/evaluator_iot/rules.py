"""Alert rule evaluation: SQL over a set of readings, the notification payload it reacts to,
and the evaluator's persisted position.

A rule fires for a (device, window) when any reading in that window breaches it; windows
are aligned to the epoch. Breaching is monotone (more readings can only add breaches), so
evaluating any subset of a window's readings is correct, and the unique (rule, device,
window) key makes every evaluation idempotent: re-running a set never duplicates an alert.

Which readings: those inserted (by `inserted_at`, the database's clock) in
[inserted_from, inserted_to), narrowed to a notified ts range when there is one, and always
clamped to ts in [now - max_age, now + max_future]. Selecting by insertion time means one
device with a skewed clock (a reading from 1970 or 2100) cannot stretch an evaluation over
the whole table: it only adds its own row, which the ts clamp then ignores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import asyncpg

CHANNEL = "telemetry_inserted"

# $1/$2: notified ts range, or NULL (GREATEST/LEAST ignore NULLs); $3/$4: inserted_at range
# ($4 NULL: open); $5/$6: max age / max future in seconds. The clamps use the database's
# clock, the same clock as inserted_at.
_READINGS_SELECTED = """
  t.inserted_at >= greatest($3::timestamptz, now() - make_interval(secs => $5))
  AND t.inserted_at < coalesce($4::timestamptz, 'infinity')
  AND t.ts >= greatest($1::timestamptz, now() - make_interval(secs => $5))
  AND t.ts <= least($2::timestamptz, now() + make_interval(secs => $6))
  AND CASE r.operator WHEN '>' THEN (t.metrics ->> r.metric)::float8 > r.threshold
                      ELSE (t.metrics ->> r.metric)::float8 < r.threshold END"""
_ALERT_ROW = """
SELECT r.id,
       t.device_id,
       to_timestamp(floor(extract(epoch FROM t.ts) / r.window_seconds) * r.window_seconds),
       CASE r.operator WHEN '>' THEN max((t.metrics ->> r.metric)::float8)
                       ELSE min((t.metrics ->> r.metric)::float8) END"""
# Two halves, so that each reads only what its rules need. A rule naming a device reads that
# device's rows through the primary key (device_id, ts): an index range per rule, whatever
# the table's size. Fleet-wide rules read every row selected, and only when one exists: the
# uncorrelated EXISTS is a one-time filter, so without such a rule the half reads nothing
# (one `device_id IS NULL OR …` join condition used to let the planner walk the whole
# primary key on every notification, rules or none). A rule is in exactly one half, and each
# half groups by (rule, device, window): no alert is proposed twice.
EVALUATE = f"""
INSERT INTO alerts (rule_id, device_id, window_start, observed)
{_ALERT_ROW}
FROM alert_rules r
JOIN telemetry t ON t.device_id = r.device_id
WHERE r.enabled AND r.device_id IS NOT NULL AND {_READINGS_SELECTED}
GROUP BY r.id, t.device_id, 3
UNION ALL
{_ALERT_ROW}
FROM alert_rules r
CROSS JOIN telemetry t
WHERE EXISTS (SELECT 1 FROM alert_rules WHERE enabled AND device_id IS NULL)
  AND r.enabled AND r.device_id IS NULL AND {_READINGS_SELECTED}
GROUP BY r.id, t.device_id, 3
ON CONFLICT (rule_id, device_id, window_start) DO NOTHING
"""

READ_POSITION = "SELECT polled_to FROM evaluator_position"
# GREATEST: with more than one replica the position only moves forward.
SAVE_POSITION = """
INSERT INTO evaluator_position (polled_to, updated_at) VALUES ($1, now())
ON CONFLICT (id) DO UPDATE
SET polled_to = greatest(evaluator_position.polled_to, excluded.polled_to), updated_at = now()
"""


@dataclass(frozen=True, slots=True)
class TimeRange:
    first: datetime
    last: datetime

    def union(self, other: TimeRange | None) -> TimeRange:
        if other is None:
            return self
        return TimeRange(min(self.first, other.first), max(self.last, other.last))


@dataclass(frozen=True, slots=True)
class Window:
    """How far back and ahead of the database's clock readings are evaluated."""

    max_age: float
    max_future: float


def parse_notification(payload: str) -> TimeRange | None:
    """The range a `telemetry_inserted` notification announces; None if malformed."""
    try:
        document = json.loads(payload)
        first = datetime.fromisoformat(document["from"])
        last = datetime.fromisoformat(document["to"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return None  # anyone allowed to NOTIFY may send anything: never a crash
    if first.tzinfo is None or last.tzinfo is None or first > last:
        return None
    return TimeRange(first, last)


async def evaluate(
    connection: asyncpg.Connection,
    *,
    inserted_from: datetime,
    inserted_to: datetime | None,
    span: TimeRange | None,
    window: Window,
    timeout: float,
) -> int:
    """Evaluate every enabled rule over the readings selected (see the module docstring);
    returns alerts created."""
    status = await connection.execute(
        EVALUATE, span.first if span else None, span.last if span else None,
        inserted_from, inserted_to, window.max_age, window.max_future, timeout=timeout)
    return int(status.rsplit(" ", 1)[-1])


async def read_position(connection: asyncpg.Connection, timeout: float) -> datetime | None:
    return await connection.fetchval(READ_POSITION, timeout=timeout)


async def save_position(
    connection: asyncpg.Connection, polled_to: datetime, timeout: float
) -> None:
    await connection.execute(SAVE_POSITION, polled_to, timeout=timeout)
