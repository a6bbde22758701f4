"""The drill's kubelet model against small local HTTP servers: thresholds, startup gating,
restarts with grace and back-off, probe resets, time scaling, and the probe handlers."""

from __future__ import annotations

import asyncio
import itertools
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from iot_tools.drill import timeline as events
from iot_tools.drill.backoff import CrashLoopBackoff
from iot_tools.drill.kubelet import Container
from iot_tools.drill.probes import ProbeExecutor
from iot_tools.drill.spec import Exec, HttpGet, ProbeKind, ProbeSpec, TcpSocket
from iot_tools.drill.timeline import Timeline
from iot_tools.drill.timescale import TimeScale
from iot_tools.servers import free_port

from .doubles import ScriptedServer, ServerProcess, run_until, running, until


@pytest.fixture
def pool():
    with ThreadPoolExecutor(8) as executor:
        yield executor


@pytest.fixture
def server():
    scripted = ScriptedServer()
    yield scripted
    scripted.stop()


def probe(kind: ProbeKind, path: str, **timings) -> ProbeSpec:
    return ProbeSpec(kind=kind, handler=HttpGet(path, 8080), **timings)


def make_container(process: ServerProcess, probes: list[ProbeSpec], pool, *,
                   scale: float = 1.0, grace: float = 0.3) -> Container:
    port = process.server.port
    return Container(
        "svc", process, {spec.kind: spec for spec in probes},
        ProbeExecutor(lambda _port: port, pool), Timeline(), TimeScale(scale), grace)


def times(container: Container, kind: str) -> list[float]:
    return [event.t for event in container.timeline.events if event.kind == kind]


def readiness_records(container: Container) -> list:
    return [record for record in container.records if record.kind == "readiness"]


def test_readiness_flips_after_failure_threshold_consecutive_failures(server, pool):
    container = make_container(ServerProcess(server), [
        probe("readiness", "/ready", period=0.1, timeout=0.05, failure_threshold=3)], pool)

    async def scenario() -> None:
        async with running(container):
            assert await until(lambda: container.ready, 5)
            server.answer("/ready", 503)
            assert await until(lambda: not container.ready, 5)

    asyncio.run(scenario())
    not_ready_at = times(container, events.NOT_READY)[0]
    failing = [r for r in readiness_records(container) if not r.ok and r.t <= not_ready_at]
    assert len(failing) == 3, "NotReady exactly at the third consecutive failure"
    assert all(r.detail == "503" for r in failing)


def test_a_success_between_failures_starts_the_count_over(server, pool):
    server.answer_in_turn("/ready", [200, 503, 503, 200, 503, 503])
    container = make_container(ServerProcess(server), [
        probe("readiness", "/ready", period=0.05, timeout=0.04, failure_threshold=3)], pool)
    run_until(container, lambda: len(readiness_records(container)) >= 18, 10)
    assert len(readiness_records(container)) >= 18
    assert sum(not r.ok for r in readiness_records(container)) >= 10
    assert times(container, events.NOT_READY) == [], "two failures never reach threshold 3"
    assert container.ready


def test_ready_only_after_success_threshold_passes(server, pool):
    server.answer_in_turn("/ready", [503, 200, 503, 200, 200])
    container = make_container(ServerProcess(server), [
        probe("readiness", "/ready", period=0.05, timeout=0.04, success_threshold=2,
              failure_threshold=5)], pool)
    assert run_until(container, lambda: container.ready, 5)
    ready_at = times(container, events.READY)[0]
    before = [r.ok for r in readiness_records(container) if r.t <= ready_at]
    assert before[-2:] == [True, True] and before.count(True) == 3


def test_readiness_runs_at_once_when_the_startup_probe_passes(server, pool):
    # The kubelet syncs the pod on the startup result and triggers readiness (prober_manager
    # UpdatePodStatus): Ready right after start-up, not a readiness period later.
    server.answer("/health", 503)
    container = make_container(ServerProcess(server), [
        probe("startup", "/health", period=0.05, timeout=0.04, failure_threshold=1000),
        probe("readiness", "/ready", period=2.0, timeout=0.5)], pool)

    async def scenario() -> None:
        async with running(container):
            await asyncio.sleep(0.3)
            server.answer("/health", 200)
            assert await until(lambda: container.ready, 1.5)

    asyncio.run(scenario())
    started_at = times(container, events.STARTED)[0]
    assert times(container, events.READY)[0] - started_at < 0.3


def test_readiness_runs_again_at_once_when_it_flips_to_failure_and_reticks_from_then(
        server, pool):
    container = make_container(ServerProcess(server), [
        probe("readiness", "/ready", period=0.4, timeout=0.1, failure_threshold=2)], pool)

    async def scenario() -> None:
        async with running(container):
            assert await until(lambda: container.ready, 5)
            server.answer("/ready", 503)
            assert await until(lambda: not container.ready, 5)
            await asyncio.sleep(1.0)

    asyncio.run(scenario())
    not_ready_at = times(container, events.NOT_READY)[0]
    after = [r.t for r in readiness_records(container) if r.t > not_ready_at]
    assert after[0] - not_ready_at < 0.15, "the sync's manual run, at once"
    # The ticker restarted from the manual run: the next probe one period after it.
    assert 0.3 <= after[1] - after[0] <= 0.55, after


def test_startup_gates_liveness_and_readiness_until_it_passes(server, pool):
    server.answer("/health", 503)
    container = make_container(ServerProcess(server), [
        probe("startup", "/health", period=0.05, timeout=0.04, failure_threshold=1000),
        probe("liveness", "/health", period=0.05, timeout=0.04),
        probe("readiness", "/ready", period=0.05, timeout=0.04)], pool)

    async def scenario() -> None:
        async with running(container):
            await asyncio.sleep(0.5)
            server.answer("/health", 200)
            await asyncio.sleep(0.5)

    asyncio.run(scenario())
    started_at = times(container, events.STARTED)[0]
    kinds_before = {r.kind for r in container.records if r.t < started_at}
    assert kinds_before == {"startup"}, "liveness and readiness wait for startup"
    after = [r for r in container.records if r.t > started_at]
    assert {r.kind for r in after} == {"liveness", "readiness"}, "startup is not run again"
    assert container.ready and container.restarts == 0


def test_startup_failure_threshold_restarts_the_container(server, pool):
    server.answer("/health", 503)
    process = ServerProcess(server)
    container = make_container(process, [
        probe("startup", "/health", period=0.05, timeout=0.04, failure_threshold=4)], pool)
    assert run_until(container, lambda: container.restarts >= 1, 5)
    kill = next(e for e in container.timeline.events if e.kind == events.KILL)
    assert "startup probe failed 4" in kill.detail
    assert process.signals[0][1] == signal.SIGTERM
    exited = next(e for e in container.timeline.events if e.kind == events.EXITED)
    assert exited.detail == "exit 0", "a process that honours SIGTERM is not SIGKILLed"
    failures = [r for r in container.records if r.t <= kill.t]
    assert len(failures) == 4 and not any(r.ok for r in failures)


def test_liveness_failure_kills_after_grace_restarts_and_resets_probes(server, pool):
    process = ServerProcess(server, ignores_sigterm=True)  # a hung process
    container = make_container(process, [
        probe("liveness", "/health", period=0.2, timeout=0.1, failure_threshold=2),
        probe("readiness", "/ready", period=0.1, timeout=0.08)], pool, grace=0.4, scale=0.5)

    async def scenario() -> None:
        async with running(container):
            assert await until(lambda: container.ready, 5)
            server.delay = 0.2  # longer than either timeout: the process hangs
            assert await until(lambda: container.restarts == 1, 10)
            server.delay = 0.0
            assert await until(lambda: container.ready, 5)

    asyncio.run(scenario())
    assert [signum for _t, signum in process.signals][:2] == [signal.SIGTERM, signal.SIGKILL]
    (term_at, _), (kill_at, _) = process.signals[:2]
    assert 0.35 <= kill_at - term_at <= 1.0, "SIGKILL after the grace period, not scaled"
    kill = next(e for e in container.timeline.events if e.kind == events.KILL)
    assert "liveness probe failed 2" in kill.detail and "timeout" in kill.detail
    # The new container starts NotReady and needs a passing readiness probe again.
    relaunch = times(container, events.LAUNCHED)[1]
    assert [t for t in times(container, events.NOT_READY) if t <= relaunch]
    assert [t for t in times(container, events.READY) if t > relaunch]


def test_crash_loop_back_off_doubles_and_is_time_scaled(server, pool):
    process = ServerProcess(server, crashes=True)
    container = make_container(process, [], pool, scale=0.01)  # 10 s → 0.1 s
    assert run_until(container, lambda: len(process.starts) >= 5, 10)
    gaps = [b - a for a, b in itertools.pairwise(process.starts)]
    # Immediate first restart, then 10, 20, 40 s (x 0.01).
    assert gaps[0] < 0.08
    for gap, expected in zip(gaps[1:4], (0.1, 0.2, 0.4), strict=True):
        assert expected - 0.01 <= gap <= expected + 0.15, gaps
    assert len(times(container, events.CRASHED)) >= 4


def test_back_off_sequence_cap_and_reset():
    backoff = CrashLoopBackoff(initial=10, maximum=300)
    delays = [backoff.delay(finished_at=t) for t in range(0, 100, 10)]
    assert delays == [0, 10, 20, 40, 80, 160, 300, 300, 300, 300]
    # A container that ran more than 2 x 300 s since the last finish starts over.
    assert backoff.delay(finished_at=90 + 601) == 0
    assert backoff.delay(finished_at=700) == 10


def test_a_kill_restarts_at_once_unless_the_container_before_it_exited_within_back_off():
    # The kubelet kills and starts in one sync whose back-off check sees the container that
    # exited before the kill (kuberuntime doBackOff with the pre-kill pod status).
    backoff = CrashLoopBackoff(initial=10, maximum=300)
    assert backoff.delay_after_kill(finished_at=40, previous_exit=None) == 0
    assert backoff.delay_after_kill(finished_at=80, previous_exit=40) == 0  # first record: 10
    assert backoff.delay_after_kill(finished_at=100, previous_exit=80) == 0  # 20 s ago >= 10
    # The previous one exited 5 s before this exit, within the 20 s now in force: wait 20 s.
    assert backoff.delay_after_kill(finished_at=105, previous_exit=100) == 20
    # A crash (an exit of its own) is checked against itself, as before.
    assert backoff.delay(finished_at=130) == 40


def test_time_scale_multiplies_period_and_initial_delay(server, pool):
    container = make_container(ServerProcess(server), [
        probe("readiness", "/ready", initial_delay=2.0, period=0.4, timeout=0.2,
              failure_threshold=3)], pool, scale=0.5)
    run_until(container, lambda: len(readiness_records(container)) >= 6, 10)
    launched = times(container, events.LAUNCHED)[0]
    records = readiness_records(container)
    assert records[0].t - launched >= 1.0, "initialDelaySeconds 2 x 0.5"
    gaps = [b.t - a.t for a, b in itertools.pairwise(records)]
    assert 0.17 <= sum(gaps) / len(gaps) <= 0.25, "periodSeconds 0.4 x 0.5"


def run_probe(spec: ProbeSpec, port: int, pool, timeout: float = 0.3):
    return asyncio.run(ProbeExecutor(lambda _port: port, pool).run(spec, timeout))


@pytest.mark.parametrize(("status", "passes"), [(200, True), (302, True), (399, True),
                                                 (404, False), (503, False)])
def test_http_get_passes_on_200_to_399(server, pool, status, passes):
    server.answer("/x", status)
    server.start()
    outcome = run_probe(ProbeSpec("readiness", HttpGet("/x", 8080)), server.port, pool)
    assert outcome.success is passes and outcome.detail == str(status)


def test_http_get_fails_on_timeout_and_refused(server, pool):
    outcome = run_probe(ProbeSpec("liveness", HttpGet("/health", 8080)), server.port, pool)
    assert not outcome.success and outcome.detail == "refused" and not outcome.timed_out
    server.delay = 1.0
    server.start()
    outcome = run_probe(ProbeSpec("liveness", HttpGet("/health", 8080)), server.port, pool,
                        timeout=0.2)
    assert not outcome.success and outcome.timed_out and outcome.latency < 0.9


def test_tcp_socket_passes_when_a_connection_opens(server, pool):
    spec = ProbeSpec("liveness", TcpSocket(8080))
    assert not run_probe(spec, free_port(), pool).success
    server.start()
    assert run_probe(spec, server.port, pool).success


def test_exec_passes_on_exit_zero_and_fails_on_timeout(pool):
    def outcome(code: str, timeout: float = 2.0):
        spec = ProbeSpec("liveness", Exec((sys.executable, "-c", code)))
        return run_probe(spec, 0, pool, timeout)

    assert outcome("pass").success
    assert outcome("raise SystemExit(1)").detail == "exit 1"
    slow = outcome("import time; time.sleep(5)", timeout=0.3)
    assert not slow.success and slow.timed_out
