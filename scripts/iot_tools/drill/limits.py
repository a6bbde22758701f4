"""The time limits the checks apply, derived from each container's rendered probes and the
time scale (so a user's override moves the limits with it).

Two allowances are real seconds, not scaled, because they bound what the services do by
themselves at real speed: reconnecting after a dependency returns (their reconnect
back-off is at most 5 s, the database check runs every second) and starting a Python
process (imports, first connections).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from iot_tools.drill.spec import ProbeKind, ProbeSpec
from iot_tools.drill.timescale import TimeScale

RECONNECT_ALLOWANCE_SECONDS = 15.0
START_ALLOWANCE_SECONDS = 15.0
# A dependency outage lasts at least this long (values seconds) ...
MINIMUM_HOLD_SECONDS = 60.0


@dataclass(frozen=True)
class Limits:
    probes: Mapping[str, Mapping[ProbeKind, ProbeSpec]]
    grace: Mapping[str, float]
    scale: TimeScale

    def not_ready(self, service: str) -> float | None:
        """readiness period x failureThreshold + one period (None: no readiness probe)."""
        readiness = self.probes[service].get("readiness")
        if readiness is None:
            return None
        return self.scale(readiness.failing_for + readiness.period)

    def ready_again(self, service: str) -> float:
        """After a dependency returns: the service reconnects (real time), then readiness
        needs successThreshold passes, one period apart, plus one period of phase."""
        readiness = self.probes[service].get("readiness")
        probing = 0.0 if readiness is None else readiness.period * (
            readiness.success_threshold + 1)
        return self.scale(probing) + RECONNECT_ALLOWANCE_SECONDS

    def started_and_ready(self, service: str) -> float:
        """From a (re)start to Ready: the start-up budget, readiness's initial delay and
        passes, and the process's own start."""
        probes = self.probes[service]
        startup = probes.get("startup")
        budget = 0.0 if startup is None else startup.initial_delay + startup.failing_for
        readiness = probes.get("readiness")
        probing = 0.0 if readiness is None else (
            readiness.initial_delay + readiness.period * (readiness.success_threshold + 1))
        return self.scale(budget + probing) + START_ALLOWANCE_SECONDS

    def hang_restart_window(self, service: str) -> tuple[float | None, float | None]:
        """When a liveness restart of a hung process is due, after the hang: at about
        period x failureThreshold - at least (threshold - 1) periods (the first failure can
        come right away), at most threshold + 1 periods (tick phase plus the timeouts)."""
        liveness = self.probes[service].get("liveness")
        if liveness is None:
            return None, None
        return (self.scale(liveness.period * (liveness.failure_threshold - 1)),
                self.scale(liveness.period * (liveness.failure_threshold + 1)))

    def termination(self, service: str) -> float:
        """The longest a kill can take: the grace period (a probe's own, if longer), in
        real seconds like the shutdown it bounds."""
        graces = [self.grace[service], *(p.termination_grace for p in
                                         self.probes[service].values()
                                         if p.termination_grace is not None)]
        return max(graces)

    def dependency_hold(self) -> float:
        """How long (values seconds) a dependency stays away: long enough that a liveness
        probe tied to it would fail threshold times (period x threshold + one period), so
        that "no restarts" means something; at least MINIMUM_HOLD_SECONDS."""
        holds = [probes["liveness"].failing_for + probes["liveness"].period
                 for probes in self.probes.values() if "liveness" in probes]
        return max([MINIMUM_HOLD_SECONDS, *holds])
