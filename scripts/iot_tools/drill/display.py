"""The live view: a table per service (startup/live/ready state, restarts, last probe
latency, work counter), redrawn in place on a terminal; on anything else (CI logs, pipes),
timeline events as they happen and the table as plain lines every few seconds."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Callable, Mapping
from typing import TextIO

from iot_tools.drill.counters import HealthCounters
from iot_tools.drill.kubelet import Container, ProbeWorker
from iot_tools.drill.spec import ProbeKind
from iot_tools.drill.timeline import Event, Timeline

TTY_REFRESH_SECONDS = 0.5
PLAIN_REFRESH_SECONDS = 10.0
RECENT_EVENTS = 8
COLUMNS = ("service", "process", "startup", "live", "ready", "restarts", "last probe", "work")


def probe_cell(container: Container, kind: ProbeKind) -> str:
    """One probe's state: ok, failing n/N, gated (startup not passed yet), or — (none)."""
    worker: ProbeWorker | None = container.workers.get(kind)
    if worker is None:
        return "ok" if kind == "startup" and container.started else "—"
    if kind == "startup" and container.started:
        return "ok"
    if kind != "startup" and not container.started:
        return "gated"
    streak = worker.failing_streak
    if streak:
        return f"fail {streak}/{worker.spec.failure_threshold}"
    if worker.result is None or worker.last is None:
        return "wait"
    return "ok" if worker.result else "failed"


def table_rows(containers: Mapping[str, Container], counters: HealthCounters) -> list[tuple]:
    rows = []
    for name, container in containers.items():
        last = "—"
        if container.last_probe is not None:
            kind, outcome = container.last_probe
            last = f"{kind} {outcome.latency * 1000:.0f} ms {outcome.detail}"
        rows.append((name, container.state.value, probe_cell(container, "startup"),
                     probe_cell(container, "liveness"),
                     "Ready" if container.ready else "NotReady", str(container.restarts), last,
                     counters.headline(name)))
    return rows


def format_table(rows: list[tuple], header: tuple = COLUMNS) -> list[str]:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
            .rstrip() for row in [header, *rows]]


def format_event(event: Event) -> str:
    who = f"{event.service}: " if event.service else ""
    return f"{event.t:7.1f}s  {event.kind:<13} {who}{event.detail}"


class LiveView:
    def __init__(self, containers: Mapping[str, Container], counters: HealthCounters,
                 timeline: Timeline, status: Callable[[], str], *,
                 stream: TextIO = sys.stdout, tty: bool | None = None) -> None:
        self._containers = containers
        self._counters = counters
        self._timeline = timeline
        self._status = status
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._drawn = 0
        if not self._tty:
            timeline.subscribe(lambda event: self._print(format_event(event)))

    async def run(self) -> None:
        refresh = TTY_REFRESH_SECONDS if self._tty else PLAIN_REFRESH_SECONDS
        while True:
            self.draw()
            await asyncio.sleep(refresh)

    def draw(self) -> None:
        header = f"probe drill {self._timeline.now():7.1f}s  {self._status()}"
        table = format_table(table_rows(self._containers, self._counters))
        if not self._tty:
            self._print("\n".join([header, *(f"  {line}" for line in table)]))
            return
        recent = [format_event(e) for e in self._timeline.events[-RECENT_EVENTS:]]
        # One screen line per line, or the cursor arithmetic below goes wrong.
        width = shutil.get_terminal_size().columns - 1
        lines = [line[:width] for line in [header, "", *table, "", "recent events:", *recent]]
        # Move up over the previous drawing, clear it, draw again.
        prefix = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
        self._stream.write(prefix + "\n".join(lines) + "\n")
        self._stream.flush()
        self._drawn = len(lines)

    def _print(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()
