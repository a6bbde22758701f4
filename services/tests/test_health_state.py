"""The health kit's state machine, in-process: readiness composition, draining, the stall
watchdog, critical tasks, transition logging, and the aiohttp probe server."""

import asyncio
import concurrent.futures
import json
import logging
import socket
import time

import pytest
from iot_tools.servers import free_port
from iot_tools.services import http_get

from services.common.health import CheckResult, HealthState
from services.common.probe_server import AiohttpProbeServer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def body(answer) -> dict:
    return json.loads(answer.body)


def test_not_ready_until_start_up_completes():
    health = HealthState("svc")
    health.add_check("database", lambda: CheckResult.passing("reachable"))
    assert health.readiness().status == 503
    assert body(health.readiness())["checks"]["startup"] == {"status": "fail",
                                                             "detail": "starting"}
    health.mark_started()
    assert health.readiness().status == 200
    assert body(health.readiness())["status"] == "ready"


def test_one_failing_check_makes_readiness_503_and_names_it():
    state = {"ok": True}
    health = HealthState("svc")
    health.add_check("nats", lambda: CheckResult(state["ok"], "connected" if state["ok"]
                                                 else "reconnecting"))
    health.mark_started()
    state["ok"] = False
    health.refresh()
    answer = health.readiness()
    assert answer.status == 503
    assert body(answer)["checks"]["nats"] == {"status": "fail", "detail": "reconnecting"}
    assert b"[-]nats failed: reconnecting" in answer.verbose


def test_draining_fails_readiness_at_once_but_not_liveness():
    health = HealthState("svc")
    health.mark_started()
    health.begin_draining()
    assert health.readiness().status == 503
    assert body(health.readiness())["checks"]["shutdown"]["detail"] == "draining"
    assert health.liveness().status == 200


def test_liveness_fails_when_the_heartbeat_is_older_than_the_stall_threshold():
    clock = FakeClock()
    health = HealthState("svc", stall_threshold=10, clock=clock)
    clock.now += 9.9
    assert health.liveness().status == 200
    clock.now += 0.2
    answer = health.liveness()
    assert answer.status == 503
    assert body(answer)["reason"] == "event loop stalled"


def test_liveness_reports_counters_and_never_looks_at_checks():
    health = HealthState("svc")
    health.add_check("database", lambda: CheckResult.failing("unreachable"))
    health.declare_counters("delivered", "failed")
    health.count("delivered", 3)
    answer = health.liveness()
    assert answer.status == 200
    assert body(answer)["delivered"] == 3
    assert body(answer)["failed"] == 0


def test_a_crashed_critical_task_fails_liveness():
    async def scenario() -> HealthState:
        health = HealthState("svc")
        health.mark_started()

        async def worker() -> None:
            raise RuntimeError("bug")

        health.watch("writer", asyncio.create_task(worker()))
        await asyncio.sleep(0.01)
        return health

    health = asyncio.run(scenario())
    answer = health.liveness()
    assert answer.status == 503
    assert body(answer)["task"] == "writer crashed"


def test_a_task_ending_during_shutdown_is_not_a_failure():
    async def scenario() -> HealthState:
        health = HealthState("svc")
        health.mark_started()
        task = health.watch("writer", asyncio.create_task(asyncio.sleep(3600)))
        health.begin_draining()
        task.cancel()
        await asyncio.sleep(0.01)
        return health

    assert asyncio.run(scenario()).liveness().status == 200


def test_a_raising_check_reads_as_failing_instead_of_breaking_the_probe():
    def broken() -> CheckResult:
        raise KeyError("oops")

    health = HealthState("svc")
    health.add_check("broken", broken)
    health.mark_started()
    assert health.readiness().status == 503
    assert body(health.readiness())["checks"]["broken"]["detail"] == "check raised KeyError"


def test_each_readiness_transition_is_logged_once(caplog):
    state = {"ok": True}
    health = HealthState("svc")
    health.add_check("nats", lambda: CheckResult(state["ok"], "x"))
    with caplog.at_level(logging.INFO, logger="health"):
        health.mark_started()
        for _ in range(5):
            health.refresh()
        state["ok"] = False
        for _ in range(5):
            health.refresh()
        state["ok"] = True
        for _ in range(5):
            health.refresh()
    transitions = [r.getMessage() for r in caplog.records if "readiness:" in r.getMessage()]
    assert transitions == ["readiness: ready", "readiness: not ready: nats (x)",
                           "readiness: ready"]


def test_probe_server_serves_both_probes_and_the_verbose_form():
    port = free_port()

    async def scenario():
        health = HealthState("svc")
        health.add_check("database", lambda: CheckResult.failing("unreachable"))
        health.mark_started()
        server = AiohttpProbeServer(health, port, host="127.0.0.1")
        await server.start()
        try:
            return await asyncio.gather(*(asyncio.to_thread(http_get, port, path)
                                          for path in ("/health", "/ready", "/ready?verbose")))
        finally:
            await server.stop()

    live, ready, verbose = asyncio.run(scenario())
    assert live.status == 200 and json.loads(live.body)["status"] == "ok"
    assert ready.status == 503 and json.loads(ready.body)["status"] == "not_ready"
    assert verbose.status == 503
    assert "[-]database failed: unreachable" in verbose.body
    assert verbose.body.rstrip().endswith("readyz check failed")


def block(seconds: float) -> None:
    """What a CPU-bound bug or a blocking call does to the loop that runs it."""
    time.sleep(seconds)


def probe_while_the_loop_is_blocked(
    block_seconds: float, path: str, after: float, stall_threshold: float = 10.0
):
    """Start the probe server, block the service's loop (as a CPU-bound bug would), and GET
    `path` from another thread `after` seconds into the block: its answer and latency."""
    port = free_port()
    executor = concurrent.futures.ThreadPoolExecutor(1)

    async def scenario():
        health = HealthState("svc", tick=0.2)
        health.add_check("database", lambda: CheckResult.passing("reachable"))
        health.mark_started()
        server = AiohttpProbeServer(health, port, host="127.0.0.1",
                                    stall_threshold=stall_threshold)
        await server.start()
        monitor = asyncio.create_task(health.run_monitor())
        try:
            await asyncio.sleep(0.5)  # a few monitor beats
            def get():
                time.sleep(after)
                return http_get(port, path, timeout=10)
            answer = executor.submit(get)
            block(block_seconds)
            return await asyncio.wrap_future(answer)
        finally:
            monitor.cancel()
            await server.stop()

    try:
        return asyncio.run(scenario())
    finally:
        executor.shutdown()


def test_ready_is_answered_at_once_while_the_service_loop_is_busy():
    # Busy for 0.6 s, under the loop-turn limit (1 s): still ready, and not kept waiting.
    answer = probe_while_the_loop_is_blocked(0.6, "/ready", after=0.1)
    assert answer.status == 200
    assert answer.seconds < 0.3


def test_ready_turns_503_once_the_service_loop_has_not_turned_for_a_second():
    answer = probe_while_the_loop_is_blocked(2.5, "/ready?verbose", after=1.5)
    assert answer.status == 503
    assert "[-]event_loop failed: has not turned for" in answer.body
    assert answer.seconds < 0.5


def test_health_is_answered_by_the_service_loop_so_a_blocked_loop_holds_it():
    answer = probe_while_the_loop_is_blocked(1.5, "/health", after=0.2)
    assert answer.status == 200
    assert answer.seconds > 1.0  # it waited for the loop: the answer proves the loop turns


def test_health_fails_past_the_stall_threshold_without_waiting_for_the_loop():
    answer = probe_while_the_loop_is_blocked(3.0, "/health", after=0.2, stall_threshold=1.0)
    assert answer.status == 503
    assert json.loads(answer.body)["reason"] == "event loop did not answer"
    assert 0.9 < answer.seconds < 2.0


def test_probe_server_start_fails_when_the_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def scenario():
            server = AiohttpProbeServer(HealthState("svc"), port, host="127.0.0.1")
            await server.start()

        with pytest.raises(OSError):
            asyncio.run(scenario())


def test_cancel_and_wait_ends_a_task_that_swallowed_its_first_cancellation():
    """What Python 3.11's wait_for does when the cancel meets its inner future's completion:
    the task carries on. Stopping a service must still end it."""
    from services.common.workers import cancel_and_wait

    async def scenario() -> int:
        cancellations = 0

        async def stubborn() -> None:
            nonlocal cancellations
            while True:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    cancellations += 1
                    if cancellations > 1:
                        raise

        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        await asyncio.wait_for(cancel_and_wait([task]), 5)
        assert task.cancelled()
        return cancellations

    assert asyncio.run(scenario()) == 2
