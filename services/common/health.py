"""Liveness and readiness state, kept in memory so that every probe answer is O(1).

Nothing here does I/O on a probe's request path. Checks are cheap callables that read
state other components keep current (a connection's status, the last result of a
background database round trip); a monitor task re-evaluates them on a short tick, logs
each readiness transition once, and caches the rendered /ready answer. Events that must
show at once (SIGTERM, a lost connection) call `refresh()` themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import Counter

from services.common.metrics import HealthSnapshot, Metrics

log = logging.getLogger("health")


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    detail: str

    @classmethod
    def passing(cls, detail: str = "ok") -> CheckResult:
        return cls(True, detail)

    @classmethod
    def failing(cls, detail: str) -> CheckResult:
        return cls(False, detail)


Check = Callable[[], CheckResult]


class DependencyState:
    """One dependency ("database", "nats") as the whole process sees it: the readiness check
    of that name.

    Several components use a dependency: a background probe (a connection's status, a
    round trip) and every worker that talks to it. Each reports the outcome of its last
    attempt; the check fails while any of them last failed. So a database the probe reaches
    but a worker cannot (a role at its connection limit while the probe keeps its session)
    still shows as not ready, named by the worker it stops.
    """

    def __init__(self, name: str, on_change: Callable[[], None]) -> None:
        self.name = name
        self._on_change = on_change
        self._probe: Check | None = None
        self._failures: dict[str, str] = {}

    def attach_probe(self, probe: Check) -> None:
        self._probe = probe
        self._on_change()

    def failed(self, reporter: str, detail: str) -> None:
        if self._failures.get(reporter) != detail:
            self._failures[reporter] = detail
            self._on_change()

    def recovered(self, reporter: str) -> None:
        if self._failures.pop(reporter, None) is not None:
            self._on_change()

    def check(self) -> CheckResult:
        probe = _evaluate(self._probe) if self._probe is not None else CheckResult.passing()
        if not self._failures:
            return probe
        details = [] if probe.ok else [probe.detail]
        details += [f"{reporter}: {detail}" for reporter, detail in sorted(self._failures.items())]
        return CheckResult.failing("; ".join(details))


class Progress:
    """A worker's progress, for the watchdog: `working()` around each unit of work it
    takes, `beat()` whenever it gets somewhere (a retry attempt counts: retrying is not
    being stuck). A unit that sees no beat for the stall threshold while every dependency
    is healthy is a stuck worker, and liveness fails."""

    def __init__(self, name: str, clock: Callable[[], float], hang: asyncio.Event) -> None:
        self.name = name
        self._clock = clock
        self._hang = hang
        self._busy = False
        self._last_beat = clock()

    def beat(self) -> None:
        self._last_beat = self._clock()

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        self._busy = True
        self.beat()
        try:
            yield
        finally:
            self._busy = False
            self.beat()

    def idle_for(self, now: float) -> float | None:
        """Seconds without a beat inside a unit of work; None when idle (no work waiting)."""
        return now - self._last_beat if self._busy else None

    async def checkpoint(self) -> None:
        """Test hook: with IOT_TEST_HOOKS, SIGUSR2 makes every worker's next unit of work
        wait forever here, the way an await on a lost reply would."""
        if self._hang.is_set():
            await asyncio.Event().wait()


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    """A rendered probe response: status code and JSON body, plus a text form for ?verbose."""

    status: int
    body: bytes
    verbose: bytes


class HealthState:
    """What /health and /ready report for one process."""

    def __init__(
        self,
        service: str,
        *,
        stall_threshold: float = 10.0,
        worker_stall_threshold: float = 120.0,
        tick: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.counters: dict[str, int] = {}
        self.metrics = Metrics()
        self._transitions = {
            kind: self.metrics.counter(
                f"iot_{kind}_check_transitions",
                f"Times a {kind} check changed state, by the state it entered.",
                ["check", "to"])
            for kind in ("readiness", "liveness")
        }
        self._results: dict[str, CheckResult] = {}
        self._live: dict[str, bool] = {}
        self._stall_threshold = stall_threshold
        self._worker_stall_threshold = worker_stall_threshold
        self._dependencies: dict[str, DependencyState] = {}
        self._progress: list[Progress] = []
        self._hang = asyncio.Event()
        self._dependencies_healthy_since = clock()
        self._tick = tick
        # The monitor beats every tick; a loop that has not beaten for this long is stuck
        # (under full load it beats within tens of milliseconds).
        self.loop_turn_limit = max(1.0, 3 * tick)
        self._clock = clock
        self._born = clock()
        self._last_beat = self._born
        self._loop_lag = 0.0
        self._checks: dict[str, Check] = {}
        self._started = False
        self._draining = False
        self._dead_task: str | None = None
        self._failing: tuple[str, ...] | None = None
        self._ready_answer = ProbeAnswer(503, b"", b"")
        self.refresh()
        self.metrics.watch_health(self._snapshot)

    # -- what services tell the kit --------------------------------------------------

    def add_check(self, name: str, check: Check) -> None:
        if name in {"startup", "shutdown"}:
            raise ValueError(f"check name {name!r} is reserved")
        self._checks[name] = check
        self.refresh()

    def dependency(self, name: str) -> DependencyState:
        """The shared state of dependency `name`, registered as the readiness check `name`."""
        state = self._dependencies.get(name)
        if state is None:
            state = DependencyState(name, self.refresh)
            self._dependencies[name] = state
            self.add_check(name, state.check)
        return state

    def progress(self, worker: str) -> Progress:
        """A progress tracker for `worker`, watched by liveness (see Progress)."""
        tracker = Progress(worker, self._clock, self._hang)
        self._progress.append(tracker)
        return tracker

    def hang_workers(self) -> None:
        """Test hook: every worker's next Progress.checkpoint() waits forever."""
        self._hang.set()

    def declare_counters(self, *counters: str) -> None:
        """Counters /health reports from the start, at 0 until counted."""
        for counter in counters:
            self.counters.setdefault(counter, 0)

    def count(self, counter: str, amount: int = 1) -> None:
        self.counters[counter] = self.counters.get(counter, 0) + amount

    def mark_started(self) -> None:
        self._started = True
        log.info("start-up complete")
        self._failing = None  # log the state start-up ends in, whatever it is
        self.refresh()

    def begin_draining(self) -> None:
        if self._draining:
            return
        self._draining = True
        log.info("shutdown requested: readiness fails from now on, liveness stays up")
        self.refresh()

    def watch(self, name: str, task: asyncio.Task) -> asyncio.Task:
        """Treat `task` as critical: if it ends before shutdown, liveness fails, so that a
        dead worker cannot leave a live-looking pod behind."""
        task.add_done_callback(lambda done: self._on_critical_task_done(name, done))
        return task

    def _on_critical_task_done(self, name: str, task: asyncio.Task) -> None:
        if self._draining:
            return
        if task.cancelled():
            how = "was cancelled"
        elif task.exception() is not None:
            how = "crashed"
            log.error("critical task %s crashed", name, exc_info=task.exception())
        else:
            how = "returned"
        if self._dead_task is None:
            self._dead_task = f"{name} {how}"
            log.error("liveness now fails: critical task %s %s", name, how)
        self.refresh()

    # -- the monitor -------------------------------------------------------------------

    async def run_monitor(self) -> None:
        """Heartbeat (for the stall watchdog) and periodic readiness evaluation."""
        while True:
            before = self._clock()
            await asyncio.sleep(self._tick)
            now = self._clock()
            self._loop_lag = max(0.0, now - before - self._tick)
            if now - self._last_beat > self._stall_threshold:
                # Seen only afterwards (nothing runs while the loop is stalled), but seen:
                # the transition counters keep stalls no scrape could catch.
                self._note_liveness("event_loop", False)
            self._last_beat = now
            self.refresh()

    def refresh(self) -> None:
        results = {
            "startup": CheckResult(self._started, "complete" if self._started else "starting"),
            "shutdown": CheckResult(
                not self._draining, "draining" if self._draining else "running"
            ),
        }
        for name, check in self._checks.items():
            results[name] = _evaluate(check)
        if not all(results[name].ok for name in self._dependencies):
            self._dependencies_healthy_since = self._clock()
        failing = tuple(name for name, result in results.items() if not result.ok)
        if failing != self._failing:
            self._log_transition(failing, results)
            self._failing = failing
        for name, result in results.items():
            before = self._results.get(name)
            if before is None:
                _start_at_zero(self._transitions["readiness"], name)
            elif before.ok != result.ok and self._started:  # start-up is not news (above)
                self._transitions["readiness"].labels(name, _state(result.ok)).inc()
        self._results = results
        self._ready_answer = _render_readiness(self.service, results)
        for name, ok in self._liveness_checks().items():
            self._note_liveness(name, ok)

    def _note_liveness(self, check: str, ok: bool) -> None:
        before = self._live.get(check)
        if before is None:
            _start_at_zero(self._transitions["liveness"], check)
        elif before != ok:
            self._transitions["liveness"].labels(check, _state(ok)).inc()
        self._live[check] = ok

    def _log_transition(
        self, failing: tuple[str, ...], results: dict[str, CheckResult]
    ) -> None:
        if not self._started:
            return  # during start-up every dependency is still connecting: not news
        if not failing:
            log.info("readiness: ready")
            return
        reasons = ", ".join(f"{name} ({results[name].detail})" for name in failing)
        log.warning("readiness: not ready: %s", reasons)

    # -- what the probes read ------------------------------------------------------------

    def readiness(self) -> ProbeAnswer:
        """The last evaluation's answer, unless the event loop has not turned for
        `loop_turn_limit`: the probe server answers /ready from a thread of its own, so that
        a probe never waits behind work, and a stuck loop must not leave a 200 standing.
        Safe to call from any thread: it only reads references the loop replaces whole."""
        stalled_for = self._clock() - self._last_beat
        if stalled_for <= self.loop_turn_limit:
            return self._ready_answer
        results = {**self._results, "event_loop": CheckResult.failing(
            f"has not turned for {stalled_for:.1f}s")}
        return _render_readiness(self.service, results)

    def _liveness_checks(self) -> dict[str, bool]:
        """Liveness's three checks, as liveness() below decides them."""
        return {
            "event_loop": self._clock() - self._last_beat <= self._stall_threshold,
            "critical_tasks": self._dead_task is None,
            "worker_progress": self._stuck_worker() is None,
        }

    def _snapshot(self) -> HealthSnapshot:
        """For /metrics: readiness as the last evaluation left it (what /ready answers),
        liveness as of now (as /health decides it). Memory only."""
        return HealthSnapshot(
            service=self.service,
            ready={name: result.ok for name, result in self._results.items()},
            live=self._liveness_checks(),
            loop_lag_seconds=self._loop_lag,
        )

    def liveness(self) -> ProbeAnswer:
        stalled_for = self._clock() - self._last_beat
        if self._dead_task is not None:
            body = {"status": "failing", "service": self.service, "reason": "critical task ended",
                    "task": self._dead_task}
            return _render(503, body, f"[-]workers failed: {self._dead_task}\nlivez check failed")
        if stalled_for > self._stall_threshold:
            body = {"status": "failing", "service": self.service, "reason": "event loop stalled",
                    "stalled_seconds": round(stalled_for, 3)}
            verbose = f"[-]event loop stalled for {stalled_for:.1f}s\nlivez check failed"
            return _render(503, body, verbose)
        stuck = self._stuck_worker()
        if stuck is not None:
            worker, idle = stuck
            body = {"status": "failing", "service": self.service, "reason": "worker stuck",
                    "worker": worker, "stuck_seconds": round(idle, 3)}
            verbose = f"[-]worker {worker} made no progress for {idle:.1f}s\nlivez check failed"
            return _render(503, body, verbose)
        body: dict[str, object] = {
            "status": "ok",
            "service": self.service,
            "uptime_seconds": round(self._clock() - self._born, 3),
            "loop_lag_ms": round(self._loop_lag * 1000, 3),
        }
        body.update(self.counters)
        return _render(200, body, "[+]event loop ok\n[+]workers ok\nlivez check passed")

    def unanswered(self, waited: float) -> ProbeAnswer:
        """/health when the event loop, asked for the answer above, did not give it within
        `waited` seconds (the probe server's thread answers this itself)."""
        body = {"status": "failing", "service": self.service,
                "reason": "event loop did not answer", "waited_seconds": round(waited, 3)}
        verbose = f"[-]event loop did not answer within {waited:g}s\nlivez check failed"
        return _render(503, body, verbose)

    def _stuck_worker(self) -> tuple[str, float] | None:
        """A worker with work in hand and no progress for the worker stall threshold, while
        every dependency has been healthy at least that long (an outage is readiness's
        business, never liveness's)."""
        now = self._clock()
        threshold = self._worker_stall_threshold
        if now - self._dependencies_healthy_since < threshold:
            return None
        for tracker in self._progress:
            idle = tracker.idle_for(now)
            if idle is not None and idle > threshold:
                return tracker.name, idle
        return None


def _state(ok: bool) -> str:
    return "pass" if ok else "fail"


def _start_at_zero(transitions: Counter, check: str) -> None:
    """A check's transition series exist from the start, so that the first one shows as an
    increase rather than as a series appearing."""
    for state in ("pass", "fail"):
        transitions.labels(check, state)


def _evaluate(check: Check) -> CheckResult:
    try:
        return check()
    except Exception as error:  # a broken check must read as failing, not crash the probe
        log.exception("readiness check raised")
        return CheckResult.failing(f"check raised {type(error).__name__}")


def _render_readiness(service: str, results: dict[str, CheckResult]) -> ProbeAnswer:
    ready = all(result.ok for result in results.values())
    body = {
        "status": "ready" if ready else "not_ready",
        "service": service,
        "checks": {
            name: {"status": "pass" if result.ok else "fail", "detail": result.detail}
            for name, result in results.items()
        },
    }
    lines = [
        f"[{'+' if result.ok else '-'}]{name} {'ok' if result.ok else 'failed'}: {result.detail}"
        for name, result in results.items()
    ]
    lines.append("readyz check passed" if ready else "readyz check failed")
    return _render(200 if ready else 503, body, "\n".join(lines))


def _render(status: int, body: dict[str, object], verbose: str) -> ProbeAnswer:
    return ProbeAnswer(status, json.dumps(body).encode(), (verbose + "\n").encode())
