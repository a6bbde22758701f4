"""The faults the scenario injects, each with the checks the fault matrix (design.md) and
the probe values imply.

The slow database is PostgreSQL frozen with SIGSTOP (postmaster and every backend): the
server keeps its TCP connections open and answers nothing — no error, no reset — until it
is thawed, so every query in flight, including the services' own `SELECT 1` checks, simply
waits. It is the hardest kind of slow for a probe: a /ready that queried the database on
the request path would time out, and a liveness probe that looked at the database would
restart the pod. Locks would block only the tables they cover and leave the checks' round
trip fast, which shows less.

Two faults the service must heal by itself, with no recovery action and no restart: a
poison storm (messages built to break the parser, the driver or the database, published
among the feed's readings) and the deletion of ingest's durable consumer. The kubelet may
never see either (a consumer re-created within milliseconds is shorter than any readiness
period), so they are watched through the service's own readiness as well (watch.py).
"""

from __future__ import annotations

import asyncio
import signal
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import nats
from nats.js.errors import NotFoundError

from iot_tools.drill import poison
from iot_tools.drill.expectations import Checks
from iot_tools.drill.kubelet import Container
from iot_tools.drill.limits import Limits
from iot_tools.drill.platform import LocalPlatform
from iot_tools.drill.watch import ReadinessWatch
from iot_tools.feed import publish_batch
from services.common.messaging import TELEMETRY

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

    # True when the service must cope by itself: no recovery action, no restart. The
    # scenario then waits for follow() (the fault's own bounded wait for the outcome)
    # instead of holding and recovering.
    heals_itself = False

    async def follow(self, context: FaultContext) -> None:
        """Wait (bounded) until the service has dealt with the fault."""
        return None

    async def finish(self, context: FaultContext) -> None:
        """After the settle, before the checks: stop watching, take final counts."""
        return None

    def details(self) -> dict:
        """What only this fault observed, for the report's phase (`fault`)."""
        return {}

    def summary_cells(self) -> dict[str, str]:
        """Summary cells this fault fills itself ("to NotReady", "back to Ready")."""
        return {}

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


INGEST = "ingest_iot"
# Bounds of what ingest does by itself, in real seconds (not scaled: the service's own
# timings run at real speed). Generous for a loaded 2-core machine; the report has the
# measured times.
POISON_QUARANTINE_SECONDS = 30.0  # every poison message quarantined, from the publish
CONSUMER_NOTICE_SECONDS = 10.0  # deletion → its readiness names the consumer (checks every 2 s)
CONSUMER_REBIND_SECONDS = 15.0  # noticed → Ready again, the consumer re-created


def _watch(context: FaultContext, service: str) -> ReadinessWatch:
    platform = context.platform
    port = platform.networks[service].local(platform.rendered.container(service).health_port)
    container = context.containers[service]
    return ReadinessWatch(port, getattr(container.process, "log_path", None),
                          container.timeline)


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


class PoisonStorm(Fault):
    """A burst of poison among the feed's readings: ingest must quarantine each message
    once, with a reason, and neither leave rotation nor restart nor lose a reading."""

    name = "poison-storm"
    heals_itself = True
    must_leave_rotation = False

    def __init__(self, count: int = poison.DEFAULT_COUNT) -> None:
        self.count = count
        self.description = (
            f"{count} poison messages into telemetry.poison.* while the feed runs: "
            + ", ".join(poison.kind_names()))
        self._watch: ReadinessWatch | None = None
        self._published_at: float | None = None
        self.quarantined_after: float | None = None
        self.quarantine_rows = 0
        self.quarantined_messages = 0
        self.stored_rows = 0
        self.reasons: dict[str, int] = {}

    def affected(self, context: FaultContext) -> tuple[str, ...]:
        return (INGEST,)

    async def inject(self, context: FaultContext) -> None:
        self._watch = _watch(context, INGEST)
        self._watch.start()
        await publish_batch(_nats(context).url, poison.poison_messages(self.count))
        self._published_at = context.containers[INGEST].timeline.now()

    async def follow(self, context: FaultContext) -> None:
        timeline = context.containers[INGEST].timeline
        assert self._published_at is not None
        while timeline.now() - self._published_at < POISON_QUARANTINE_SECONDS:
            await self._count(context)
            if self.quarantined_messages >= self.count:
                self.quarantined_after = timeline.now() - self._published_at
                return
            await asyncio.sleep(0.25)

    async def finish(self, context: FaultContext) -> None:
        if self._watch is not None:
            await self._watch.stop()
        await self._count(context)

    async def _count(self, context: FaultContext) -> None:
        like = f"'{poison.SUBJECT_PREFIX}%'"
        rows = await asyncio.to_thread(_postgres(context).psql, (
            f"SELECT count(*), count(DISTINCT subject) FROM quarantine WHERE subject LIKE {like};"
            f"SELECT count(*) FROM telemetry WHERE device_id LIKE '{poison.DEVICE_PREFIX}%';"
            f"SELECT reason, count(*) FROM quarantine WHERE subject LIKE {like} GROUP BY 1"))
        lines = rows.splitlines()
        total, distinct = (int(n) for n in lines[0].split("|"))
        self.quarantine_rows, self.quarantined_messages = total, distinct
        self.stored_rows = int(lines[1])
        self.reasons = dict(Counter({reason: int(n) for reason, n in
                                     (line.split("|") for line in lines[2:] if line)}))

    def summary_cells(self) -> dict[str, str]:
        return {"back to Ready": "—"}  # never out, as the checks require

    def details(self) -> dict:
        return {"poison_published": self.count,
                "quarantined_messages": self.quarantined_messages,
                "quarantine_rows": self.quarantine_rows, "stored_rows": self.stored_rows,
                "quarantined_after": None if self.quarantined_after is None
                else round(self.quarantined_after, 3),
                "reasons": self.reasons}

    def check(self, checks: Checks, context: FaultContext) -> None:
        services = tuple(context.containers)
        checks.stays_ready(services)
        checks.no_restarts(services)
        checks.liveness_never_failed(services)
        failures = self._watch.failures() if self._watch else []
        checks.verdict("own_readiness_held", INGEST, "its /ready never failing",
                       "never failed" if not failures else
                       f"failing ({', '.join(sorted(failures[0].failing))}) at "
                       f"{failures[0].t:.1f} s", self._watch is not None and not failures)
        checks.verdict("poison_quarantined_within", None,
                       f"all {self.count} quarantined within {POISON_QUARANTINE_SECONDS:.0f} s",
                       f"{self.quarantined_messages} in {_seconds(self.quarantined_after)}",
                       self.quarantined_after is not None)
        checks.verdict("poison_quarantined_once", None,
                       f"{self.count} rows, one per message; none stored as a reading",
                       f"{self.quarantine_rows} rows for {self.quarantined_messages} messages; "
                       f"{self.stored_rows} stored",
                       self.quarantine_rows == self.quarantined_messages == self.count
                       and self.stored_rows == 0)


class ConsumerDeleted(Fault):
    """ingest's durable consumer deleted on the server (an operator, a bad migration, a
    stream re-created): ingest notices, goes NotReady, re-creates it from its ack floor,
    and is Ready again — without a restart, and without losing or repeating a reading."""

    name = "consumer-deleted"
    heals_itself = True
    # Its readiness must name the consumer (the watch checks it); whether the kubelet sees
    # the NotReady window depends on how it compares with the readiness period.
    must_leave_rotation = False
    CHECKS = frozenset({"consumer", "batch_writer"})

    def __init__(self) -> None:
        self._watch: ReadinessWatch | None = None
        self._deleted_at: float | None = None
        self.durable = "ingest"
        self.stream = TELEMETRY.name
        self.description = (f"durable consumer deleted through the JetStream API "
                            f"({self.stream}/{self.durable})")
        self.failing_after: float | None = None
        self.ready_after: float | None = None
        self.recreated = False

    def affected(self, context: FaultContext) -> tuple[str, ...]:
        return (INGEST,)

    async def inject(self, context: FaultContext) -> None:
        # The render may name another durable (INGEST_DURABLE).
        self.durable = context.platform.rendered.container(INGEST).env.get(
            "INGEST_DURABLE", self.durable)
        self._watch = _watch(context, INGEST)
        self._watch.start()
        connection = await nats.connect(_nats(context).url)
        try:
            await connection.jetstream().delete_consumer(self.stream, self.durable)
        finally:
            await connection.close()
        self._deleted_at = context.containers[INGEST].timeline.now()

    async def follow(self, context: FaultContext) -> None:
        timeline = context.containers[INGEST].timeline
        assert self._watch is not None and self._deleted_at is not None
        deadline = self._deleted_at + CONSUMER_NOTICE_SECONDS + CONSUMER_REBIND_SECONDS
        while timeline.now() < deadline:
            failed = self._watch.first_failure(self.CHECKS, since=self._deleted_at)
            if failed is not None and self._watch.ready_since(failed) is not None:
                return
            await asyncio.sleep(0.05)

    async def finish(self, context: FaultContext) -> None:
        assert self._watch is not None and self._deleted_at is not None
        await self._watch.stop()
        failed = self._watch.first_failure(self.CHECKS, since=self._deleted_at)
        ready = None if failed is None else self._watch.ready_since(failed)
        self.failing_after = None if failed is None else failed - self._deleted_at
        self.ready_after = None if ready is None or failed is None else ready - failed
        connection = await nats.connect(_nats(context).url)
        try:
            await connection.jetstream().consumer_info(self.stream, self.durable)
            self.recreated = True
        except NotFoundError:
            self.recreated = False
        finally:
            await connection.close()

    def summary_cells(self) -> dict[str, str]:
        # The service's own readiness: the kubelet's may never flip for so short a window.
        return {"to NotReady": f"{_seconds(self.failing_after)} (own)",
                "back to Ready": f"{_seconds(self.ready_after)} (own)"}

    def details(self) -> dict:
        return {"stream": self.stream, "durable": self.durable,
                "check_failing_after": None if self.failing_after is None
                else round(self.failing_after, 3),
                "ready_again_after": None if self.ready_after is None
                else round(self.ready_after, 3),
                "recreated": self.recreated}

    def check(self, checks: Checks, context: FaultContext) -> None:
        services = tuple(context.containers)
        others = [s for s in services if s != INGEST]
        checks.verdict("consumer_check_failed_within", INGEST,
                       f"its readiness check consumer failing within "
                       f"{CONSUMER_NOTICE_SECONDS:.0f} s", _seconds(self.failing_after),
                       self.failing_after is not None
                       and self.failing_after <= CONSUMER_NOTICE_SECONDS)
        checks.verdict("ready_again_by_itself", INGEST,
                       f"its /ready passing again within {CONSUMER_REBIND_SECONDS:.0f} s",
                       _seconds(self.ready_after), self.ready_after is not None
                       and self.ready_after <= CONSUMER_REBIND_SECONDS)
        checks.verdict("consumer_recreated", INGEST,
                       f"durable {self.durable} on {self.stream} exists again",
                       "exists" if self.recreated else "missing", self.recreated)
        checks.no_restarts(services)
        checks.liveness_never_failed(services)
        checks.stays_ready(others)
        checks.ready_at_end(services)


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
    PoisonStorm.name: PoisonStorm,
    ConsumerDeleted.name: ConsumerDeleted,
}
DEFAULT_FAULTS = (NatsOutage.name, PostgresOutage.name, SlowDatabase.name, HungService.name,
                  PoisonStorm.name, ConsumerDeleted.name)


def parse_fault(text: str) -> Fault:
    """`nats-outage`, `postgres-outage`, `slow-database`, `hung-service[=<service>]`,
    `poison-storm`, `consumer-deleted`."""
    name, _, argument = text.partition("=")
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; choose from {', '.join(FAULTS)}")
    if name == HungService.name:
        return HungService(argument) if argument else HungService()
    if argument:
        raise ValueError(f"fault {name} takes no argument")
    return FAULTS[name]()
