"""Device readings published versus stored.

SteadyFeed numbers its readings and gives reading n the timestamp EPOCH + n ms (unique per
reading), so a stored row says which reading it is. The drill starts numbering at the
current time (`index_now()`): readings then carry recent timestamps, which the platform's
retention (ops_worker deletes telemetry older than RETENTION_DAYS) leaves alone. At the end,
once ingest has caught up, every reading JetStream acknowledged (`SteadyFeed.published`)
must be a row in telemetry or quarantine; the ones that are not are lost, and each is
attributed to the phase during which it was published; so is every reading stored more
than once (twice in quarantine, or both stored and quarantined).

Only the feed's rows count (devices `dev-*`, subjects `telemetry.dev-*`): a fault may
publish messages of its own (the poison storm's telemetry.poison.*), which it accounts for
itself.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from iot_tools.feed import EPOCH
from iot_tools.servers import PostgresServer

_INDEX_OF_TS = (f"round(extract(epoch FROM ts - TIMESTAMPTZ '{EPOCH.isoformat()}') * 1000)"
                "::bigint")
# The feed's rows (iot_tools.feed.reading: device dev-NNNN on subject telemetry.dev-NNNN).
FEED_TELEMETRY = "device_id LIKE 'dev-%'"
FEED_QUARANTINE = "subject LIKE 'telemetry.dev-%'"


def index_now() -> int:
    """The feed index whose timestamp is now (0 if the clock is before the feed's epoch)."""
    return max(0, int((datetime.now(UTC) - EPOCH).total_seconds() * 1000))


def index_of(timestamp: str) -> int | None:
    """The feed index of an ISO timestamp (as the feed writes it), or None."""
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return round((moment - EPOCH).total_seconds() * 1000)


@dataclass(frozen=True)
class Stored:
    indices: frozenset[int]
    telemetry_rows: int
    quarantine_rows: int
    repeated: frozenset[int] = frozenset()  # indices with more than one row


class TelemetryLedger:
    """Readings first_index, first_index + 1, ... published by one feed."""

    def __init__(self, postgres: PostgresServer, first_index: int,
                 published: Callable[[], int]) -> None:
        self._postgres = postgres
        self.first_index = first_index
        self._published = published

    @property
    def published(self) -> int:
        return self._published()

    @property
    def next_index(self) -> int:
        """The index of the next reading to be acknowledged (a phase boundary)."""
        return self.first_index + self._published()

    def stored_count(self) -> int:
        rows = self._postgres.psql(
            f"SELECT (SELECT count(*) FROM telemetry WHERE {FEED_TELEMETRY}) + "
            f"(SELECT count(*) FROM quarantine WHERE {FEED_QUARANTINE})")
        return int(rows.strip())

    def wait_caught_up(self, timeout: float, poll: float = 0.5) -> float | None:
        """Seconds until every published reading is stored, or None at the timeout (e.g.
        messages a killed consumer held wait for JetStream's ack wait to be redelivered)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.stored_count() >= self.published:
                return time.monotonic() - started
            time.sleep(poll)
        return None

    def stored(self) -> Stored:
        telemetry = [int(line) for line in self._postgres.psql(
            f"SELECT {_INDEX_OF_TS} FROM telemetry WHERE {FEED_TELEMETRY}").split()]
        quarantined: list[int] = []
        payloads = self._postgres.psql(
            "SELECT convert_from(payload, 'UTF8') FROM quarantine "
            f"WHERE {FEED_QUARANTINE}").splitlines()
        for payload in payloads:
            try:
                index = index_of(str(json.loads(payload).get("ts", "")))
            except (ValueError, AttributeError):
                index = None
            if index is not None:
                quarantined.append(index)
        counts = Counter(telemetry) + Counter(quarantined)
        return Stored(frozenset(counts), len(telemetry), len(payloads),
                      frozenset(index for index, n in counts.items() if n > 1))

    @staticmethod
    def lost_between(stored: Stored, first: int, end: int) -> int:
        """Readings first..end-1 that are not stored."""
        return sum(1 for index in range(first, end) if index not in stored.indices)

    @staticmethod
    def repeated_between(stored: Stored, first: int, end: int) -> int:
        """Readings first..end-1 stored more than once."""
        return sum(1 for index in stored.repeated if first <= index < end)
