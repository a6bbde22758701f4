"""The kubelet's crash-loop back-off for one container (pkg/util/flowcontrol.Backoff as the
kubelet uses it): the first restart is immediate; each later one waits, counted from when
the container finished, 10 s doubling up to 300 s; a container that finishes more than
2 x 300 s after its previous finish starts over at an immediate restart."""

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
