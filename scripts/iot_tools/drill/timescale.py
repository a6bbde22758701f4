"""One factor for every timing the drill controls, so that a scenario runs fast while its
ratios stay those of the values.

Scaled: probe timings (initialDelay, period, timeout), the crash-loop back-off and every
scenario duration. Not scaled: what the services do by themselves (reconnect back-off, DB
check interval, drain delay, JetStream ack wait) — that is the real behaviour under test,
and it runs at real speed — and so neither terminationGracePeriodSeconds, the budget for
the process's own shutdown: a scaled grace would SIGKILL a healthy process mid-drain.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TimeScale:
    factor: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.factor <= 10:
            raise ValueError(f"time scale must be in (0, 10], got {self.factor}")

    def __call__(self, seconds: float) -> float:
        """Seconds of the values (the cluster's time) → seconds of the drill's wall clock."""
        return seconds * self.factor

    def unscaled(self, wall_seconds: float) -> float:
        """Drill wall-clock seconds → the equivalent seconds at real speed."""
        return wall_seconds / self.factor
