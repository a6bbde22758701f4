"""The faults the scenario injects, each with the checks the fault matrix (design.md) and
the probe values imply.

The slow database is PostgreSQL frozen with SIGSTOP (postmaster and every backend): the
server keeps its TCP connections open and answers nothing — no error, no reset — until it
is thawed, so every query in flight, including the services' own `SELECT 1` checks, simply
waits. It is the hardest kind of slow for a probe: a /ready that queried the database on
the request path would time out, and a liveness probe that looked at the database would
restart the pod. Locks would block only the tables they cover and leave the checks' round
trip fast, which shows less.
"""

from __future__ import annotations

import asyncio
import signal
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from iot_tools.drill.expectations import Checks
from iot_tools.drill.kubelet import Container
from iot_tools.drill.limits import Limits
from iot_tools.drill.platform import LocalPlatform

# The services' documented test hook: SIGUSR1 blocks the event loop (see services/common).
HANG_HOOK_ENV = {"IOT_TEST_HOOKS": "true"}


@dataclass(frozen=True)
class FaultContext:
    platform: LocalPlatform
    containers: Mapping[str, Container]
    limits: Limits


class Fault(ABC):
    name: str
    description: str
    # True when nothing is undone after the hold: the kubelet has to heal it (a restart).
    self_healing = False
    # Whether the affected services must leave rotation (NotReady in time) — or only may.
    must_leave_rotation = True

    @abstractmethod
    def affected(self, context: FaultContext) -> tuple[str, ...]:
        """The services whose readiness depends on what this fault breaks."""

    def env_additions(self) -> dict[str, dict[str, str]]:
        """Documented drill additions to containers' env, by service."""
        return {}

    @abstractmethod
    async def inject(self, context: FaultContext) -> None: ...

    async def recover(self, context: FaultContext) -> None:
        return None

    @abstractmethod
    def check(self, checks: Checks, context: FaultContext) -> None:
        """Add this fault's checks (telemetry is checked by the scenario for all)."""


class DependencyOutage(Fault):
    """A dependency goes away: its users NotReady in time, no restarts, Ready again."""

    def check(self, checks: Checks, context: FaultContext) -> None:
        affected = self.affected(context)
        for service in affected:
            checks.not_ready_within(service, context.limits.not_ready(service))
        checks.stays_ready(s for s in context.containers if s not in affected)
        checks.no_restarts(context.containers)
        for service in context.containers:
            checks.ready_again_within(service, context.limits.ready_again(service))


class NatsOutage(DependencyOutage):
    name = "nats-outage"
    description = "NATS killed (SIGKILL: connections close at once), restarted on its store"

    def affected(self, context: FaultContext) -> tuple[str, ...]:
        return context.platform.rendered.nats_users

    async def inject(self, context: FaultContext) -> None:
        await asyncio.to_thread(_nats(context).kill)

    async def recover(self, context: FaultContext) -> None:
        await asyncio.to_thread(_nats(context).start)


class PostgresOutage(DependencyOutage):
    name = "postgres-outage"
    description = "PostgreSQL shut down (fast: sessions end), then started again"

    def affected(self, context: FaultContext) -> tuple[str, ...]:
        return context.platform.rendered.database_users

    async def inject(self, context: FaultContext) -> None:
        await asyncio.to_thread(_postgres(context).stop, "fast")

    async def recover(self, context: FaultContext) -> None:
        await asyncio.to_thread(_postgres(context).start)


class SlowDatabase(Fault):
    name = "slow-database"
    description = ("PostgreSQL frozen (SIGSTOP, connections stay open): every query waits "
                   "for longer than the readiness timeout")

    # Readiness may follow the database here (the services' checks time out); the fault
    # matrix does not require it, only that the probes keep answering and nothing restarts.
    must_leave_rotation = False

    def affected(self, context: FaultContext) -> tuple[str, ...]:
        return context.platform.rendered.database_users

    async def inject(self, context: FaultContext) -> None:
        _postgres(context).freeze()

    async def recover(self, context: FaultContext) -> None:
        _postgres(context).thaw()

    def check(self, checks: Checks, context: FaultContext) -> None:
        services = tuple(context.containers)
        checks.no_restarts(services)
        # "/ready still answers" — probes never wait on the database.
        checks.probes_answered(services, ("readiness", "liveness"))
        for service in services:
            checks.ready_again_within(service, context.limits.ready_again(service))


class HungService(Fault):
    name = "hung-service"
    self_healing = True

    def __init__(self, target: str = "ingest_iot") -> None:
        self.target = target
        self.description = f"{target}'s event loop blocked (SIGUSR1 test hook)"

    def affected(self, context: FaultContext) -> tuple[str, ...]:
        return (self.target,)

    def env_additions(self) -> dict[str, dict[str, str]]:
        # Without the hook enabled, SIGUSR1 would end the process instead of hanging it.
        return {self.target: dict(HANG_HOOK_ENV)}

    async def inject(self, context: FaultContext) -> None:
        context.containers[self.target].send(signal.SIGUSR1)

    def check(self, checks: Checks, context: FaultContext) -> None:
        limits = context.limits
        others = [s for s in context.containers if s != self.target]
        checks.not_ready_within(self.target, limits.not_ready(self.target))
        checks.restarted_between(self.target, *limits.hang_restart_window(self.target))
        checks.ready_again_within(self.target, limits.started_and_ready(self.target))
        checks.stays_ready(others)
        checks.no_restarts(others)


def _nats(context: FaultContext):
    if context.platform.nats is None:
        raise RuntimeError("the render runs no NATS user: a NATS outage shows nothing")
    return context.platform.nats


def _postgres(context: FaultContext):
    assert context.platform.postgres is not None
    return context.platform.postgres


FAULTS: dict[str, type[Fault]] = {
    NatsOutage.name: NatsOutage,
    PostgresOutage.name: PostgresOutage,
    SlowDatabase.name: SlowDatabase,
    HungService.name: HungService,
}
DEFAULT_FAULTS = (NatsOutage.name, PostgresOutage.name, SlowDatabase.name, HungService.name)


def parse_fault(text: str) -> Fault:
    """`nats-outage`, `postgres-outage`, `slow-database`, `hung-service[=<service>]`."""
    name, _, argument = text.partition("=")
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; choose from {', '.join(FAULTS)}")
    if name == HungService.name:
        return HungService(argument) if argument else HungService()
    if argument:
        raise ValueError(f"fault {name} takes no argument")
    return FAULTS[name]()
