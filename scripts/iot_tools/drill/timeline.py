"""What happened when: events in seconds since the drill started, for the live view, the
closing timeline, the expectations and the JSON report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

# Event kinds the expectations read; others (probe failures, phases) are informational.
NOT_READY = "not_ready"
READY = "ready"
STARTED = "started"  # the startup probe passed (or there is none)
KILL = "kill"  # the kubelet decided to restart the container (liveness/startup failure)
EXITED = "exited"  # the process ended after the kubelet killed it
CRASHED = "crashed"  # the process ended by itself
LAUNCHED = "launched"  # the process was (re)started
FAULT = "fault"
RECOVERY = "recovery"
PHASE = "phase"
PROBE_FAILED = "probe_failed"


@dataclass(frozen=True)
class Event:
    t: float
    kind: str
    service: str | None
    detail: str

    def as_json(self) -> dict:
        return {**asdict(self), "t": round(self.t, 3)}


class Timeline:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.origin = clock()
        self.events: list[Event] = []
        self._listeners: list[Callable[[Event], None]] = []

    def now(self) -> float:
        """Seconds since the drill started."""
        return self._clock() - self.origin

    def record(self, kind: str, detail: str, service: str | None = None) -> Event:
        event = Event(self.now(), kind, service, detail)
        self.events.append(event)
        for listener in self._listeners:
            listener(event)
        return event

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def between(self, start: float, end: float, *, kind: str | None = None,
                service: str | None = None) -> list[Event]:
        return [event for event in self.events
                if start <= event.t <= end and (kind is None or event.kind == kind)
                and (service is None or event.service == service)]
