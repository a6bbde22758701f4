"""Device readings published versus stored.

SteadyFeed numbers its readings and gives reading n the timestamp EPOCH + n ms (unique per
reading), so a stored row says which reading it is. The drill starts numbering at the
current time (`index_now()`): readings then carry recent timestamps, which the platform's
retention (ops_worker deletes telemetry older than RETENTION_DAYS) leaves alone. At the end,
once ingest has caught up, every reading JetStream acknowledged (`SteadyFeed.published`)
must be a row in telemetry or quarantine; the ones that are not are lost, and each is
attributed to the phase during which it was published.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from iot_tools.feed import EPOCH
from iot_tools.servers import PostgresServer

_INDEX_OF_TS = (f"round(extract(epoch FROM ts - TIMESTAMPTZ '{EPOCH.isoformat()}') * 1000)"
                "::bigint")


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
            "SELECT (SELECT count(*) FROM telemetry) + (SELECT count(*) FROM quarantine)")
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
            f"SELECT {_INDEX_OF_TS} FROM telemetry").split()]
        quarantined: list[int] = []
        payloads = self._postgres.psql(
            "SELECT convert_from(payload, 'UTF8') FROM quarantine").splitlines()
        for payload in payloads:
            try:
                index = index_of(str(json.loads(payload).get("ts", "")))
            except (ValueError, AttributeError):
                index = None
            if index is not None:
                quarantined.append(index)
        return Stored(frozenset(telemetry) | frozenset(quarantined), len(telemetry),
                      len(payloads))

    @staticmethod
    def lost_between(stored: Stored, first: int, end: int) -> int:
        """Readings first..end-1 that are not stored."""
        return sum(1 for index in range(first, end) if index not in stored.indices)
