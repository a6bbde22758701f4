"""One container under the kubelet's rules: its process lifecycle and its probe workers.

Modelled on pkg/kubelet/prober/worker.go and the runtime manager:
  - each probe has a worker that ticks every periodSeconds from the moment the pod is
    created (restarts do not re-phase it) and skips ticks while the container runs for less
    than initialDelaySeconds;
  - until the startup probe has succeeded, liveness and readiness are not run; once it has,
    the startup probe is not run again (until the container restarts);
  - a result flips only after failureThreshold consecutive failures or successThreshold
    consecutive successes; readiness starts as Failure, liveness as Success;
  - a liveness or startup failure puts that worker on hold and restarts the container:
    SIGTERM, SIGKILL after the grace period (the probe's terminationGracePeriodSeconds,
    else the pod's); a process that exits by itself is restarted too (restartPolicy Always);
    the grace period is NOT time-scaled: it is the budget for the process's own shutdown
    (drain delay, flush), which runs at real speed;
  - whenever the kubelet syncs the pod while the container has started but is not Ready
    (the startup probe has just passed, readiness has just flipped to Failure) it runs the
    readiness probe at once and restarts its ticker from then (prober_manager.go
    UpdatePodStatus -> worker.manualTriggerCh, probeTicker.Reset);
  - every restart goes through the crash-loop back-off (backoff.py), with one difference
    for a container the kubelet kills (liveness/startup): it is started again in the same
    sync, whose back-off check sees the container that had exited BEFORE the kill, not the
    one just killed (kuberuntime doBackOff with the pre-kill pod status); a new container
    starts with fresh probe results.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from iot_tools.drill import timeline as events
from iot_tools.drill.backoff import CrashLoopBackoff
from iot_tools.drill.probes import ProbeExecutor, ProbeOutcome
from iot_tools.drill.spec import ProbeKind, ProbeSpec
from iot_tools.drill.timeline import Timeline
from iot_tools.drill.timescale import TimeScale
from services.common.workers import cancel_and_wait

EXIT_POLL_SECONDS = 0.02


class ProcessHandle(Protocol):
    """What the kubelet needs of a container's process (iot_tools.services.ServiceProcess
    has it)."""

    def start(self) -> object: ...

    def send(self, signum: int) -> None: ...

    def returncode(self) -> int | None: ...


class State(StrEnum):
    WAITING = "waiting"  # about to start
    RUNNING = "running"
    TERMINATING = "terminating"  # SIGTERM sent, waiting for the exit
    BACKOFF = "back-off"  # CrashLoopBackOff: waiting before the next start


@dataclass
class ProbeWorker:
    """One probe's result and its run of equal outcomes (worker.go's lastResult/resultRun)."""

    spec: ProbeSpec
    result: bool | None = None
    last_outcome_ok: bool | None = None
    run: int = 0
    on_hold: bool = False
    last: ProbeOutcome | None = None

    def __post_init__(self) -> None:
        # A manual run requested by a pod sync (worker.go's manualTriggerCh, buffer 1).
        self.triggered = asyncio.Event()
        self.reset()

    def reset(self) -> None:
        # Initial results: readiness Failure, liveness Success, startup Unknown.
        self.result = {"readiness": False, "liveness": True, "startup": None}[self.spec.kind]
        self.last_outcome_ok = None
        self.run = 0
        self.on_hold = False

    @property
    def failing_streak(self) -> int:
        return self.run if self.last_outcome_ok is False else 0


@dataclass(frozen=True)
class ProbeRecord:
    """One executed probe, for per-fault statistics."""

    t: float
    kind: ProbeKind
    ok: bool
    latency: float
    detail: str
    timed_out: bool


@dataclass
class Container:
    name: str
    process: ProcessHandle
    probes: dict[ProbeKind, ProbeSpec]
    executor: ProbeExecutor
    timeline: Timeline
    scale: TimeScale = field(default_factory=TimeScale)
    termination_grace: float = 30  # seconds, real: see the module docstring
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.state = State.WAITING
        self.restarts = 0
        self.started = False
        self.ready = False
        self.generation = 0
        self.launched_at = 0.0
        self.workers = {kind: ProbeWorker(spec) for kind, spec in self.probes.items()}
        self.records: list[ProbeRecord] = []
        self.last_probe: tuple[ProbeKind, ProbeOutcome] | None = None
        self.backoff = CrashLoopBackoff(self.scale(10.0), self.scale(300.0))
        self._restart_at = 0.0
        self._terminator: asyncio.Task | None = None
        # When the previous container of this one exited (the kubelet keeps the last dead
        # container; its finish is what a kill's back-off check sees).
        self._previous_exit: float | None = None

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Supervise the container until cancelled (the caller then stops the process)."""
        self._launch()
        workers = [asyncio.create_task(self._probe_worker(kind), name=f"{self.name}-{kind}")
                   for kind in self.probes]
        try:
            while True:
                await asyncio.sleep(EXIT_POLL_SECONDS)
                self._supervise()
        finally:
            if self._terminator is not None:
                self._terminator.cancel()
            await cancel_and_wait(workers)

    def send(self, signum: int) -> None:
        """Signal the running process (fault injection)."""
        if self.state in (State.RUNNING, State.TERMINATING):
            self.process.send(signum)

    def _supervise(self) -> None:
        if self.state in (State.RUNNING, State.TERMINATING):
            code = self.process.returncode()
            if code is not None:
                self._on_exit(code)
        elif self.clock() >= self._restart_at:
            self._launch()

    def _launch(self) -> None:
        first = self.generation == 0
        self.process.start()
        self.generation += 1
        self.launched_at = self.clock()
        self.state = State.RUNNING
        for worker in self.workers.values():
            worker.reset()
        if first:
            self.timeline.record(events.LAUNCHED, "started", self.name)
        else:
            self.restarts += 1
            self.timeline.record(events.LAUNCHED, f"restarted (restart {self.restarts})",
                                 self.name)
        if "startup" not in self.probes:
            self._mark_started("no startup probe")

    def _on_exit(self, code: int) -> None:
        finished = self.clock()
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
        killed = self.state is State.TERMINATING  # only a probe's kill terminates
        kind = events.EXITED if killed else events.CRASHED
        self.timeline.record(kind, how, self.name)
        self._set_ready(False, "container exited")
        self.started = False
        if killed:
            delay = self.backoff.delay_after_kill(finished, self._previous_exit)
        else:
            delay = self.backoff.delay(finished)
        self._previous_exit = finished
        self._restart_at = finished + delay
        self.state = State.BACKOFF if delay > 0 else State.WAITING
        if delay > 0:
            self.timeline.record(events.PHASE, f"CrashLoopBackOff: restart in {delay:.1f} s",
                                 self.name)

    def _kill(self, reason: str, grace: float) -> None:
        if self.state is not State.RUNNING:
            return
        self.state = State.TERMINATING
        self.timeline.record(events.KILL, reason, self.name)
        self._terminator = asyncio.create_task(self._terminate(grace, self.generation))

    async def _terminate(self, grace: float, generation: int) -> None:
        self.process.send(signal.SIGTERM)
        deadline = self.clock() + grace
        while self.generation == generation and self.process.returncode() is None:
            if self.clock() >= deadline:
                self.timeline.record(events.PHASE, f"grace period ({grace:.1f} s) over: "
                                     "SIGKILL", self.name)
                self.process.send(signal.SIGKILL)
                return
            await asyncio.sleep(EXIT_POLL_SECONDS)

    # -- probing ---------------------------------------------------------------------------

    async def _probe_worker(self, kind: ProbeKind) -> None:
        period = self.scale(self.probes[kind].period)
        triggered = self.workers[kind].triggered
        tick = self.clock()
        while True:
            await self._probe_once(kind)
            tick += period
            now = self.clock()
            if tick < now:  # like a Go ticker, drop the ticks a slow probe missed
                tick += math.ceil((now - tick) / period) * period
            try:
                await asyncio.wait_for(triggered.wait(), tick - now)
            except TimeoutError:
                continue
            # A manual run: probe now, and the ticker restarts from this moment.
            triggered.clear()
            tick = self.clock() - period

    async def _probe_once(self, kind: ProbeKind) -> None:
        worker = self.workers[kind]
        if self.state not in (State.RUNNING, State.TERMINATING) or worker.on_hold:
            return
        if self.clock() - self.launched_at < self.scale(worker.spec.initial_delay):
            return
        # Startup gates the others; once it has passed it is not run again.
        if (kind == "startup") == self.started:
            return
        generation = self.generation
        outcome = await self.executor.run(worker.spec, self.scale(worker.spec.timeout))
        if generation == self.generation:  # else the container restarted meanwhile
            self._record(worker, outcome)

    def _record(self, worker: ProbeWorker, outcome: ProbeOutcome) -> None:
        spec = worker.spec
        worker.last = outcome
        self.last_probe = (spec.kind, outcome)
        self.records.append(ProbeRecord(self.timeline.now(), spec.kind, outcome.success,
                                        outcome.latency, outcome.detail, outcome.timed_out))
        if worker.last_outcome_ok == outcome.success:
            worker.run += 1
        else:
            worker.last_outcome_ok = outcome.success
            worker.run = 1
            if not outcome.success:
                self.timeline.record(events.PROBE_FAILED,
                                     f"{spec.kind} probe failed: {outcome.detail}", self.name)
        threshold = spec.success_threshold if outcome.success else spec.failure_threshold
        if worker.run < threshold:
            return
        worker.result = outcome.success
        if spec.kind == "readiness":
            self._set_ready(outcome.success, f"readiness {outcome.detail} ×{worker.run}")
        elif spec.kind == "startup" and outcome.success:
            self._mark_started(f"startup probe passed ({outcome.detail})")
        elif not outcome.success:  # liveness or startup failed: restart the container
            worker.on_hold = True
            worker.run = 0
            grace = spec.termination_grace
            if grace is None:
                grace = self.termination_grace
            self._kill(f"{spec.kind} probe failed {spec.failure_threshold}×: "
                       f"{outcome.detail}; SIGTERM, SIGKILL after {grace:g} s", grace)

    def _mark_started(self, why: str) -> None:
        self.started = True
        self.timeline.record(events.STARTED, why, self.name)
        if "readiness" not in self.probes:
            self._set_ready(True, "started, no readiness probe")
        self._sync_pod()

    def _set_ready(self, ready: bool, why: str) -> None:
        if ready != self.ready:
            self.ready = ready
            self.timeline.record(events.READY if ready else events.NOT_READY, why, self.name)
            self._sync_pod()

    def _sync_pod(self) -> None:
        """A probe result changed, so the kubelet syncs the pod: a started container that is
        not Ready gets its readiness probe run at once."""
        worker = self.workers.get("readiness")
        if worker is not None and self.started and not self.ready:
            worker.triggered.set()

    # -- stopping --------------------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL the process now (the drill is over or interrupted)."""
        with contextlib.suppress(ProcessLookupError, AssertionError):
            if self.process.returncode() is None:
                self.process.send(signal.SIGKILL)

    def wait_exited(self, timeout: float) -> bool:
        """Block until the process has exited (and is reaped); False at the timeout."""
        deadline = self.clock() + timeout
        while self.process.returncode() is None:
            if self.clock() >= deadline:
                return False
            time.sleep(EXIT_POLL_SECONDS)
        return True

