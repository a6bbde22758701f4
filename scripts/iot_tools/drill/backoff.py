"""The kubelet's crash-loop back-off for one container (pkg/util/flowcontrol.Backoff as the
kubelet uses it): the first restart is immediate; each later one waits, counted from when
the container finished, 10 s doubling up to 300 s; a container that finishes more than
2 x 300 s after its previous finish starts over at an immediate restart. A container the
kubelet kills itself is checked against the container before it (`delay_after_kill`)."""

from __future__ import annotations

from dataclasses import dataclass, field

INITIAL_SECONDS = 10.0
MAXIMUM_SECONDS = 300.0


@dataclass
class CrashLoopBackoff:
    """Times in seconds of one clock; `initial` and `maximum` already time-scaled."""

    initial: float = INITIAL_SECONDS
    maximum: float = MAXIMUM_SECONDS
    _backoff: float | None = field(default=None, init=False)
    _last_update: float | None = field(default=None, init=False)

    def _expired(self, finished_at: float) -> bool:
        return self._last_update is None or finished_at - self._last_update > 2 * self.maximum

    def delay(self, finished_at: float) -> float:
        """Seconds after `finished_at` before the container may start again; records the
        restart (the kubelet's IsInBackOffSince followed by Next)."""
        if self._backoff is None or self._expired(finished_at):
            wait = 0.0
            self._backoff = self.initial
        else:
            wait = self._backoff
            self._backoff = min(self._backoff * 2, self.maximum)
        self._last_update = finished_at
        return wait

    def delay_after_kill(self, finished_at: float, previous_exit: float | None) -> float:
        """The same for a container the kubelet killed (liveness or startup probe): it kills
        and starts again in one sync, and that sync's back-off check looks at the container
        that had exited before (`previous_exit`; None: there was none), not this one. Only
        when that one finished within the current back-off does this start wait — the full
        back-off, from this exit (the next sync sees this container exited)."""
        if previous_exit is None:
            return 0.0  # no exited container: no check, nothing recorded
        if (self._backoff is None or self._expired(previous_exit)
                or finished_at - previous_exit >= self._backoff):
            self._backoff = self.initial if self._backoff is None or self._expired(
                previous_exit) else min(self._backoff * 2, self.maximum)
            self._last_update = finished_at
            return 0.0
        return self.delay(finished_at)
