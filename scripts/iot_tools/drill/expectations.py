"""What the drill observed during one phase, per service, and the checks that must hold.

Observations are read from the timeline and the containers' probe records after the phase;
limits come from each container's rendered (and time-scaled) probes, so a user's override
moves the limits with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from iot_tools.drill import timeline as events
from iot_tools.drill.kubelet import Container
from iot_tools.drill.timeline import Timeline

RESTART_CAUSES = (events.KILL, events.CRASHED)


@dataclass(frozen=True)
class ProbeStats:
    count: int
    failures: int
    timeouts: int
    max_latency: float

    def as_json(self) -> dict:
        return {"count": self.count, "failures": self.failures, "timeouts": self.timeouts,
                "max_latency": round(self.max_latency, 4)}


@dataclass(frozen=True)
class ServiceObservation:
    """Seconds are measured from the phase's reference points (injection, recovery)."""

    not_ready_after: float | None  # first NotReady after the injection
    ready_again_after: float | None  # last Ready after recovery, if Ready at the end
    ready_at_end: bool
    restarts: int  # containers killed by a probe or ended by themselves
    first_restart_after: float | None  # first kill/crash after the injection
    relaunched_at: float | None  # first process restart in the phase (timeline seconds)
    probes: dict[str, ProbeStats]

    def as_json(self) -> dict:
        return {
            "not_ready_after": rounded(self.not_ready_after),
            "ready_again_after": rounded(self.ready_again_after),
            "ready_at_end": self.ready_at_end,
            "restarts": self.restarts,
            "first_restart_after": rounded(self.first_restart_after),
            "probes": {kind: stats.as_json() for kind, stats in self.probes.items()},
        }


def observe(container: Container, timeline: Timeline, *, start: float, end: float,
            recovered_at: float | None) -> ServiceObservation:
    """`start`: the injection (or the launch, for the warm-up); `recovered_at`: when the
    dependency came back (None: measure Ready again from the first restart, if any)."""
    name = container.name

    def first(kind: str | tuple[str, ...], after: float) -> float | None:
        kinds = (kind,) if isinstance(kind, str) else kind
        times = [e.t for e in timeline.between(after, end, service=name) if e.kind in kinds]
        return min(times) if times else None

    not_ready = first(events.NOT_READY, start)
    causes = [e for e in timeline.between(start, end, service=name) if e.kind in RESTART_CAUSES]
    first_restart = min((e.t for e in causes), default=None)
    relaunched = next((e.t for e in timeline.between(start, end, kind=events.LAUNCHED,
                                                      service=name)), None)
    reference = recovered_at if recovered_at is not None else relaunched
    ready_again = None
    if container.ready and reference is not None:
        ready_events = timeline.between(reference, end, kind=events.READY, service=name)
        # Ready throughout (never NotReady since the reference) reads as 0.
        ready_again = (ready_events[-1].t - reference) if ready_events else 0.0
    records = [r for r in container.records if start <= r.t <= end]
    probes = {}
    for kind in container.probes:
        own = [r for r in records if r.kind == kind]
        probes[kind] = ProbeStats(
            count=len(own), failures=sum(not r.ok for r in own),
            timeouts=sum(r.timed_out for r in own),
            max_latency=max((r.latency for r in own), default=0.0))
    return ServiceObservation(
        not_ready_after=None if not_ready is None else not_ready - start,
        ready_again_after=ready_again,
        ready_at_end=container.ready,
        restarts=len(causes),
        first_restart_after=None if first_restart is None else first_restart - start,
        relaunched_at=relaunched,
        probes=probes,
    )


@dataclass(frozen=True)
class Verdict:
    check: str
    service: str | None
    expected: str
    observed: str
    ok: bool

    def as_json(self) -> dict:
        return {"check": self.check, "service": self.service, "expected": self.expected,
                "observed": self.observed, "ok": self.ok}

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        who = f"{self.service}: " if self.service else ""
        return f"{mark} {who}{self.check} — expected {self.expected}, observed {self.observed}"


@dataclass
class Checks:
    """The verdicts of one phase, added check by check."""

    observations: dict[str, ServiceObservation]
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(verdict.ok for verdict in self.verdicts)

    def _add(self, check: str, service: str | None, expected: str, observed: str,
             ok: bool) -> None:
        self.verdicts.append(Verdict(check, service, expected, observed, ok))

    def not_ready_within(self, service: str, limit: float | None) -> None:
        seen = self.observations[service].not_ready_after
        if limit is None:
            self._add("not_ready_within", service, "NotReady (needs a readiness probe)",
                      _seconds(seen), False)
            return
        self._add("not_ready_within", service, f"NotReady within {limit:.1f} s",
                  _seconds(seen), seen is not None and seen <= limit)

    def stays_ready(self, services: Iterable[str]) -> None:
        for service in services:
            seen = self.observations[service].not_ready_after
            self._add("stays_ready", service, "Ready throughout",
                      "Ready throughout" if seen is None else f"NotReady after {seen:.1f} s",
                      seen is None)

    def no_restarts(self, services: Iterable[str]) -> None:
        for service in services:
            restarts = self.observations[service].restarts
            self._add("no_restarts", service, "0 restarts", f"{restarts} restarts",
                      restarts == 0)

    def ready_again_within(self, service: str, limit: float,
                           check: str = "ready_again_within") -> None:
        seen = self.observations[service]
        observed = _seconds(seen.ready_again_after) if seen.ready_at_end else "not Ready"
        self._add(check, service, f"Ready within {limit:.1f} s", observed,
                  seen.ready_again_after is not None and seen.ready_again_after <= limit)

    def restarted_between(self, service: str, lower: float | None, upper: float | None,
                          ) -> None:
        seen = self.observations[service].first_restart_after
        if lower is None or upper is None:
            self._add("restarted_between", service, "a restart (needs a liveness probe)",
                      _seconds(seen), False)
            return
        self._add("restarted_between", service,
                  f"restart decided {lower:.1f}–{upper:.1f} s after the fault", _seconds(seen),
                  seen is not None and lower <= seen <= upper)

    def probes_answered(self, services: Iterable[str], kinds: tuple[str, ...]) -> None:
        for service in services:
            stats = {k: s for k, s in self.observations[service].probes.items() if k in kinds}
            timeouts = sum(s.timeouts for s in stats.values())
            slowest = max((s.max_latency for s in stats.values()), default=0.0)
            self._add("probes_answered", service, f"every {'/'.join(kinds)} probe answered "
                      "within its timeout", f"{timeouts} timeouts, slowest {slowest:.3f} s",
                      timeouts == 0)

    def telemetry_lost(self, lost: int) -> None:
        self._add("no_telemetry_lost", None, "0 readings lost", f"{lost} lost", lost == 0)

    def telemetry_repeated(self, repeated: int) -> None:
        self._add("no_telemetry_repeated", None, "every reading stored once",
                  f"{repeated} stored more than once", repeated == 0)

    def liveness_never_failed(self, services: Iterable[str]) -> None:
        for service in services:
            stats = self.observations[service].probes.get("liveness")
            failures = 0 if stats is None else stats.failures
            self._add("liveness_never_failed", service, "0 liveness probe failures",
                      f"{failures} failures", stats is not None and failures == 0)

    def ready_at_end(self, services: Iterable[str]) -> None:
        for service in services:
            ready = self.observations[service].ready_at_end
            self._add("ready_at_end", service, "Ready", "Ready" if ready else "not Ready",
                      ready)

    def verdict(self, check: str, service: str | None, expected: str, observed: str,
                ok: bool) -> None:
        """A fault's own check (what only that fault can observe, e.g. quarantine rows)."""
        self._add(check, service, expected, observed, ok)


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def rounded(value: float | None) -> float | None:
    """Seconds to the millisecond for the report (None stays None)."""
    return None if value is None else round(value, 3)
