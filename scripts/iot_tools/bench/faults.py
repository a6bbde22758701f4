"""Detection and recovery: a dependency fails (NATS killed, NATS frozen with SIGSTOP,
PostgreSQL killed), how long until each service that needs it answers /ready 503; the
dependency comes back, how long until /ready answers 200 again.

Each service is watched by its own poller (a probe on a new connection every POLL_SECONDS),
started before the fault, and a time is taken when the answer arrives, so a figure is at most
one poll interval plus one request late, never early. Detection counts from the signal;
recovery counts from the restart command (so it includes the dependency's own start-up, which
is reported beside it), or from SIGCONT for a frozen server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from iot_tools.bench.stack import Stack
from iot_tools.services import NATS_USERS, ServiceProcess, http_get

POLL_SECONDS = 0.01


class _Watch:
    """Pollers that note when each service's /ready first answers `status`."""

    def __init__(self, services: list[ServiceProcess], status: int, timeout: float) -> None:
        self.seen: dict[str, float] = {}
        self._status = status
        self._deadline = time.monotonic() + timeout
        self._threads = [threading.Thread(target=self._poll, args=(service,), daemon=True)
                         for service in services]
        for thread in self._threads:
            thread.start()

    def _poll(self, service: ServiceProcess) -> None:
        while time.monotonic() < self._deadline:
            if http_get(service.port, "/ready", timeout=1.0).status == self._status:
                self.seen[service.name] = time.monotonic()
                return
            time.sleep(POLL_SECONDS)

    def wait(self) -> dict[str, float]:
        for thread in self._threads:
            thread.join()
        return self.seen


def _timed(services: list[ServiceProcess], status: int, action: Callable[[], None],
           timeout: float) -> tuple[dict[str, float | None], float, float]:
    """Start watching, run `action`; (seconds from the action's start to each service's
    `status`, or None; the action's start; its end)."""
    watch = _Watch(services, status, timeout)
    began = time.monotonic()
    action()
    ended = time.monotonic()
    seen = watch.wait()
    return ({service.name: (seen[service.name] - began if service.name in seen else None)
             for service in services}, began, ended)


@dataclass
class FaultTimings:
    """Per service, one figure per repetition (None: did not happen within the timeout)."""

    detection: dict[str, list[float | None]] = field(default_factory=dict)
    recovery: dict[str, list[float | None]] = field(default_factory=dict)
    dependency_start: list[float] = field(default_factory=list)

    def add(self, detection: dict[str, float | None], recovery: dict[str, float | None],
            dependency_start: float) -> None:
        for name, seconds in detection.items():
            self.detection.setdefault(name, []).append(seconds)
        for name, seconds in recovery.items():
            self.recovery.setdefault(name, []).append(seconds)
        self.dependency_start.append(dependency_start)


DETECT_TIMEOUT = 45.0
RECOVER_TIMEOUT = 60.0


def _repeat(stack: Stack, users: list[ServiceProcess], fail: Callable[[], None],
            repair: Callable[[], None], repeats: int, *, restarts: bool) -> FaultTimings:
    """`fail` then `repair`, `repeats` times, timing `users`; `restarts`: the repair starts
    the dependency again (its start-up time is recorded) rather than resuming it."""
    timings = FaultTimings()
    for _ in range(repeats):
        detection, _, _ = _timed(users, 503, fail, DETECT_TIMEOUT)
        recovery, began, ended = _timed(users, 200, repair, RECOVER_TIMEOUT)
        timings.add(detection, recovery, ended - began if restarts else 0.0)
        stack.wait_ready()
    return timings


def nats_killed(stack: Stack, repeats: int) -> FaultTimings:
    assert stack.nats is not None
    users = [stack.services[name] for name in NATS_USERS]
    return _repeat(stack, users, stack.nats.kill, stack.nats.start, repeats, restarts=True)


def nats_frozen(stack: Stack, repeats: int) -> FaultTimings:
    assert stack.nats is not None
    users = [stack.services[name] for name in NATS_USERS]
    return _repeat(stack, users, stack.nats.freeze, stack.nats.thaw, repeats, restarts=False)


def postgres_killed(stack: Stack, repeats: int) -> FaultTimings:
    assert stack.postgres is not None
    postgres = stack.postgres
    users = list(stack.services.values())  # every service needs the database
    return _repeat(stack, users, lambda: postgres.stop(mode="kill"), postgres.start, repeats,
                   restarts=True)
