"""A run's commits over time, and their split between alternating windows (probe traffic on,
probe traffic off), read from the rows: `inserted_at` is the start of the transaction that
wrote a row, so the rows of the run group into its transactions, each with its start time."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

TRANSACTIONS_SQL = """
SELECT extract(epoch FROM inserted_at), count(*) FROM telemetry
GROUP BY inserted_at ORDER BY inserted_at
"""


@dataclass(frozen=True)
class Transaction:
    start: float  # epoch seconds, as PostgreSQL's now() (same clock as time.time())
    rows: int


def transactions(psql: Callable[[str], str]) -> list[Transaction]:
    return [Transaction(float(start), int(rows)) for start, rows in
            (line.split("|") for line in psql(TRANSACTIONS_SQL).splitlines() if line)]


def steady_rate(run: list[Transaction]) -> float:
    """Rows per second from the first transaction's start to the last one's, the last
    transaction's rows not counted (they were written after that moment)."""
    if len(run) < 2:
        return 0.0
    return sum(t.rows for t in run[:-1]) / (run[-1].start - run[0].start)


@dataclass(frozen=True)
class Window:
    """A stretch of wall-clock time (epoch seconds)."""

    start: float
    end: float
    probing: bool


def alternating(start: float, length: float, count: int, start_on: bool) -> list[Window]:
    return [Window(start + index * length, start + (index + 1) * length,
                   (index % 2 == 0) == start_on) for index in range(count)]


@dataclass(frozen=True)
class Split:
    """Rows committed while probe traffic was on, and while it was off, and for how long."""

    on_rows: float
    on_seconds: float
    off_rows: float
    off_seconds: float

    @property
    def ratio(self) -> float:
        """Rate while on ÷ rate while off."""
        return (self.on_rows / self.on_seconds) / (self.off_rows / self.off_seconds)


def pooled(splits: list[Split]) -> Split:
    return Split(sum(s.on_rows for s in splits), sum(s.on_seconds for s in splits),
                 sum(s.off_rows for s in splits), sum(s.off_seconds for s in splits))


def split(run: list[Transaction], windows: list[Window]) -> Split:
    """Rows per window state, time-weighted: a transaction's rows are spread evenly over the
    time until the next one starts (the time it took to produce them), so a window holds
    fractions of the transactions at its edges rather than all or nothing (which would make
    a short window's rate jump by a whole batch). Only windows wholly inside the run count."""
    first, last = run[0].start, run[-1].start
    rows = {True: 0.0, False: 0.0}
    seconds = {True: 0.0, False: 0.0}
    for window in windows:
        if not (first <= window.start and window.end <= last):
            continue
        seconds[window.probing] += window.end - window.start
        for current, following in itertools.pairwise(run):
            overlap = min(window.end, following.start) - max(window.start, current.start)
            if overlap > 0:
                rows[window.probing] += current.rows * overlap / (following.start - current.start)
    if not (seconds[True] and seconds[False]):
        raise ValueError("the run was too short for windows both on and off")
    return Split(rows[True], seconds[True], rows[False], seconds[False])
