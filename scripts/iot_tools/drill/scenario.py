"""The scripted scenario: warm-up, then each fault (inject, hold, recover, settle), then the
telemetry account. Every duration here is in values seconds and goes through the time scale.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from iot_tools.drill import timeline as events
from iot_tools.drill.expectations import Checks, ServiceObservation, observe
from iot_tools.drill.faults import Fault, FaultContext
from iot_tools.drill.kubelet import State
from iot_tools.drill.telemetry import TelemetryLedger
from iot_tools.drill.timeline import Timeline

POLL_SECONDS = 0.05
WARM_UP = "warm-up"


@dataclass(frozen=True)
class ScenarioSettings:
    faults: tuple[Fault, ...]
    # Steady running once everything is Ready, before the first fault (values seconds).
    warmup: float = 20.0
    # How long a dependency stays away (values seconds); None: Limits.dependency_hold().
    hold: float | None = None
    # Steady running after a recovery, before the next phase (values seconds).
    settle: float = 20.0
    # Real seconds ingest gets at the end to store every reading (unacked messages of a
    # killed consumer come back only after JetStream's ack wait, 30 s).
    catch_up_timeout: float = 90.0


@dataclass
class PhaseResult:
    name: str
    description: str
    started_at: float  # the injection (warm-up: the launch)
    recovered_at: float | None
    ended_at: float
    affected: tuple[str, ...]
    observations: dict[str, ServiceObservation]
    checks: Checks
    must_leave_rotation: bool = False
    published: tuple[int, int] = (0, 0)  # feed indices attributed to this phase
    lost: int | None = None
    repeated: int | None = None  # readings of this phase stored more than once
    details: dict = field(default_factory=dict)  # what only the fault observed
    # Summary cells the fault fills itself (e.g. times from the service's own readiness).
    summary: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.checks.ok


@dataclass
class TelemetryAccount:
    published: int = 0
    telemetry_rows: int = 0
    quarantine_rows: int = 0
    lost: int = 0
    repeated: int = 0
    caught_up_after: float | None = None


@dataclass
class ScenarioResult:
    phases: list[PhaseResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    telemetry: TelemetryAccount = field(default_factory=TelemetryAccount)

    @property
    def ok(self) -> bool:
        return not self.skipped and all(phase.ok for phase in self.phases)


class Scenario:
    def __init__(self, settings: ScenarioSettings, context: FaultContext, timeline: Timeline,
                 ledger: TelemetryLedger, stop_feed: Callable[[], None]) -> None:
        self.settings = settings
        self.context = context
        self.timeline = timeline
        self.ledger = ledger
        self._stop_feed = stop_feed
        self.phase = "starting"
        self.result = ScenarioResult()
        self._scale = context.limits.scale

    @property
    def hold(self) -> float:
        if self.settings.hold is not None:
            return self.settings.hold
        return self.context.limits.dependency_hold()

    async def run(self, launched_at: float) -> ScenarioResult:
        boundaries = [self.ledger.first_index]
        warm = await self._warm_up(launched_at)
        boundaries.append(self.ledger.next_index)
        if warm.ok:
            for fault in self.settings.faults:
                await self._fault(fault)
                boundaries.append(self.ledger.next_index)
        else:
            self.result.skipped = [fault.name for fault in self.settings.faults]
        await self._account(boundaries)
        return self.result

    # -- phases ----------------------------------------------------------------------------

    async def _warm_up(self, launched_at: float) -> PhaseResult:
        self.phase = WARM_UP
        limits = self.context.limits
        containers = self.context.containers
        deadline = launched_at + max(limits.started_and_ready(s) for s in containers)
        await self._wait(lambda: self._all_ready() or self._start_up_failed(), deadline)
        if self._all_ready():
            self.timeline.record(events.PHASE, "every service Ready")
            await asyncio.sleep(self._scale(self.settings.warmup))
        phase = self._close(WARM_UP, "start-up: every service started and Ready, no restarts",
                            launched_at, launched_at, ())
        for service in containers:
            phase.checks.ready_again_within(service, limits.started_and_ready(service),
                                            check="ready_within")
        phase.checks.no_restarts(containers)
        return phase

    async def _fault(self, fault: Fault) -> PhaseResult:
        self.phase = fault.name
        context = self.context
        injected = self.timeline.record(events.FAULT, f"{fault.name}: {fault.description}").t
        await fault.inject(context)
        recovered: float | None = None
        if fault.self_healing:
            target = fault.affected(context)[0]
            limits = context.limits
            _lower, upper = limits.hang_restart_window(target)
            deadline = injected + (upper or 0) + limits.termination(target) + \
                limits.started_and_ready(target)
            await self._wait(lambda: self._relaunched_since(target, injected)
                             and self._all_ready(), deadline)
        elif fault.heals_itself:
            # No recovery action: the service must deal with it; the fault knows when it has.
            await fault.follow(context)
            deadline = self.timeline.now() + max(context.limits.ready_again(s)
                                                 for s in context.containers)
            await self._wait(self._all_ready, deadline)
        else:
            await asyncio.sleep(self._scale(self.hold))
            await fault.recover(context)
            recovered = self.timeline.record(events.RECOVERY, f"{fault.name}: recovered").t
            deadline = recovered + max(context.limits.ready_again(s) for s in context.containers)
            await self._wait(self._all_ready, deadline)
        await asyncio.sleep(self._scale(self.settings.settle))
        await fault.finish(context)
        phase = self._close(fault.name, fault.description, injected, recovered,
                            fault.affected(context))
        phase.must_leave_rotation = fault.must_leave_rotation
        phase.details = fault.details()
        phase.summary = fault.summary_cells()
        fault.check(phase.checks, context)
        return phase

    def _close(self, name: str, description: str, started: float, recovered: float | None,
               affected: tuple[str, ...]) -> PhaseResult:
        ended = self.timeline.now()
        observations = {
            service: observe(container, self.timeline, start=started, end=ended,
                             recovered_at=recovered)
            for service, container in self.context.containers.items()}
        phase = PhaseResult(name, description, started, recovered, ended, affected,
                            observations, Checks(observations))
        self.result.phases.append(phase)
        return phase

    async def _account(self, boundaries: list[int]) -> None:
        """Stop the feed, let ingest catch up, and attribute every missing reading to the
        phase that published it (phase k owns the readings published since phase k-1
        ended; the last phase also owns the few published after it ended)."""
        self.phase = "catch-up"
        await asyncio.to_thread(self._stop_feed)
        account = self.result.telemetry
        account.published = self.ledger.published
        account.caught_up_after = await asyncio.to_thread(
            self.ledger.wait_caught_up, self.settings.catch_up_timeout)
        stored = await asyncio.to_thread(self.ledger.stored)
        account.telemetry_rows = stored.telemetry_rows
        account.quarantine_rows = stored.quarantine_rows
        account.lost = self.ledger.lost_between(stored, self.ledger.first_index,
                                                self.ledger.next_index)
        account.repeated = self.ledger.repeated_between(stored, self.ledger.first_index,
                                                        self.ledger.next_index)
        boundaries[-1] = self.ledger.next_index
        for phase, first, end in zip(self.result.phases, boundaries, boundaries[1:],
                                     strict=False):
            phase.published = (first, end)
            phase.lost = self.ledger.lost_between(stored, first, end)
            phase.repeated = self.ledger.repeated_between(stored, first, end)
            phase.checks.telemetry_lost(phase.lost)
            phase.checks.telemetry_repeated(phase.repeated)
        self.phase = "done"

    # -- waiting ---------------------------------------------------------------------------

    def _all_ready(self) -> bool:
        return all(container.ready for container in self.context.containers.values())

    def _start_up_failed(self) -> bool:
        """Some container restarted during start-up (the warm-up has failed: no need to
        wait longer) and every other one is Ready (nothing left to observe)."""
        restarted = {name for name, container in self.context.containers.items()
                     if container.restarts
                     or container.state in (State.TERMINATING, State.BACKOFF)}
        return bool(restarted) and all(container.ready for name, container in
                                       self.context.containers.items()
                                       if name not in restarted)

    def _relaunched_since(self, service: str, since: float) -> bool:
        return bool(self.timeline.between(since, self.timeline.now(), kind=events.LAUNCHED,
                                          service=service))

    async def _wait(self, condition: Callable[[], bool], deadline: float) -> bool:
        """Wait until `condition()` or the deadline (timeline seconds); True if it held."""
        while not condition():
            if self.timeline.now() >= deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)
        return True
