"""The failure taxonomy and the kit pieces built on it, in-process: classification by
SQLSTATE class, the shared dependency state, the one retry loop, and the worker watchdog."""

import asyncio
import json

import aiohttp
import asyncpg
import nats.errors
import nats.js.errors
import pytest
from iot_tools.servers import free_port

from services.common.faults import REMOTE_PEER_FAILURES, Fault, classify
from services.common.health import CheckResult, HealthState
from services.common.retry import Attempts

from .test_health_state import FakeClock


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (asyncpg.TooManyConnectionsError(), Fault.DEPENDENCY),  # 53300
        (asyncpg.exceptions.DiskFullError(), Fault.DEPENDENCY),  # 53100
        (asyncpg.ReadOnlySQLTransactionError(), Fault.DEPENDENCY),  # 25006
        (asyncpg.InvalidPasswordError(), Fault.DEPENDENCY),  # 28P01
        (asyncpg.InvalidAuthorizationSpecificationError(), Fault.DEPENDENCY),  # 28000
        (asyncpg.AdminShutdownError(), Fault.DEPENDENCY),  # 57P01
        (asyncpg.CannotConnectNowError(), Fault.DEPENDENCY),  # 57P03
        (asyncpg.QueryCanceledError(), Fault.DEPENDENCY),  # 57014
        (asyncpg.ConnectionDoesNotExistError(), Fault.DEPENDENCY),  # 08003
        (asyncpg.InvalidCatalogNameError(), Fault.DEPENDENCY),  # 3D000
        (asyncpg.SerializationError(), Fault.DEPENDENCY),  # 40001
        (asyncpg.DeadlockDetectedError(), Fault.DEPENDENCY),  # 40P01
        (asyncpg.LockNotAvailableError(), Fault.DEPENDENCY),  # 55P03
        (asyncpg.InternalServerError(), Fault.DEPENDENCY),  # XX000
        (asyncpg.InterfaceError("cannot call Connection.fetch(): connection is closed"),
         Fault.DEPENDENCY),
        # The server ending the session mid-operation (asyncpg's protocol state error).
        (asyncpg.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"),
         Fault.DEPENDENCY),
        (ConnectionRefusedError(), Fault.DEPENDENCY),
        (TimeoutError(), Fault.DEPENDENCY),
        (nats.errors.ConnectionClosedError(), Fault.DEPENDENCY),
        (nats.errors.NoRespondersError(), Fault.DEPENDENCY),
        (nats.errors.AuthorizationError(), Fault.DEPENDENCY),
        (nats.js.errors.NotFoundError(), Fault.DEPENDENCY),
        (asyncpg.UntranslatableCharacterError(), Fault.BAD_MESSAGE),  # 22P05
        (asyncpg.DatetimeFieldOverflowError(), Fault.BAD_MESSAGE),  # 22008
        (asyncpg.InvalidTextRepresentationError(), Fault.BAD_MESSAGE),  # 22P02
        (asyncpg.NotNullViolationError(), Fault.BAD_MESSAGE),  # 23502
        (asyncpg.ProgramLimitExceededError(), Fault.BAD_MESSAGE),  # 54000
        # Client-side: asyncpg could not encode an argument (the data's fault).
        (asyncpg.exceptions._base.DataError("invalid input for query argument $2"),
         Fault.BAD_MESSAGE),
        (asyncpg.UndefinedTableError(), Fault.BUG),  # 42P01
        (asyncpg.PostgresSyntaxError(), Fault.BUG),  # 42601
        (asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
         Fault.BUG),
        (KeyError("x"), Fault.BUG),
        (AssertionError(), Fault.BUG),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value.name,
)
def test_every_error_has_one_class(error, fault):
    assert classify(error) is fault


def test_a_worker_failure_fails_the_dependency_check_even_while_its_probe_passes():
    """A read-only database answers SELECT 1: the writer's failure must still show."""
    health = HealthState("svc")
    database = health.dependency("database")
    database.attach_probe(lambda: CheckResult.passing("reachable"))
    health.mark_started()
    assert health.readiness().status == 200
    database.failed("writer", "ReadOnlySQLTransactionError")
    answer = json.loads(health.readiness().body)
    assert health.readiness().status == 503
    assert answer["checks"]["database"]["detail"] == "writer: ReadOnlySQLTransactionError"
    database.recovered("writer")
    assert health.readiness().status == 200


def test_attempts_retry_a_dependency_error_until_it_succeeds_and_report_it_meanwhile():
    health = HealthState("svc")
    database = health.dependency("database")
    attempts = Attempts(database, "writer", initial=0.001, maximum=0.002)
    outcomes = [asyncpg.TooManyConnectionsError(), asyncpg.ReadOnlySQLTransactionError(), 42]
    seen_failing = []
    discarded = []

    async def operation():
        seen_failing.append(database.check().ok is False)
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    result = asyncio.run(attempts.run(operation, on_failure=lambda: discarded.append(1)))
    assert result == 42
    assert seen_failing == [False, True, True]
    assert len(discarded) == 2
    assert database.check().ok


@pytest.mark.parametrize("error", [asyncpg.UntranslatableCharacterError(), KeyError("bug")])
def test_attempts_let_bad_message_and_bug_errors_through_at_once(error):
    health = HealthState("svc")
    attempts = Attempts(health.dependency("database"), "writer", initial=0.001)
    calls = []

    async def operation():
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        asyncio.run(attempts.run(operation))
    assert calls == [1]


def test_liveness_fails_when_a_worker_holds_work_without_progress_while_dependencies_are_healthy():
    clock = FakeClock()
    health = HealthState("svc", worker_stall_threshold=30, clock=clock)
    health.dependency("database").attach_probe(CheckResult.passing)
    writer = health.progress("writer")
    with writer.working():
        clock.now += 29
        health._last_beat = clock.now  # the event loop itself is fine
        assert health.liveness().status == 200
        clock.now += 2
        health._last_beat = clock.now
        answer = health.liveness()
        assert answer.status == 503
        assert json.loads(answer.body)["worker"] == "writer"
    assert health.liveness().status == 200  # the unit finished: progress


def test_a_worker_waiting_on_a_dependency_outage_never_fails_liveness():
    clock = FakeClock()
    state = {"ok": False}
    health = HealthState("svc", worker_stall_threshold=30, clock=clock)
    health.dependency("database").attach_probe(lambda: CheckResult(state["ok"], "x"))
    writer = health.progress("writer")
    with writer.working():
        for _ in range(10):  # 100 s of outage, no beat at all
            clock.now += 10
            health._last_beat = clock.now
            health.refresh()
            assert health.liveness().status == 200
        state["ok"] = True  # the dependency is back: the worker gets the stall time again
        clock.now += 29
        health._last_beat = clock.now
        health.refresh()
        assert health.liveness().status == 200


def test_an_idle_worker_is_never_stuck():
    clock = FakeClock()
    health = HealthState("svc", worker_stall_threshold=30, clock=clock)
    health.progress("writer")
    clock.now += 3600
    health._last_beat = clock.now
    assert health.liveness().status == 200


async def _remote_peer_failure(url: str, timeout: float = 5.0) -> BaseException:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        try:
            async with session.get(url) as answer:
                await answer.json(content_type=None)
        except BaseException as error:
            return error
    raise AssertionError(f"GET {url} succeeded")


def test_every_way_a_remote_http_peer_fails_is_one_remote_peer_failure():
    """Refused, hung past the timeout, cut off mid-answer, not JSON, or a URL aiohttp cannot
    use: the caller's one `except REMOTE_PEER_FAILURES` sees each (webhooks, JWKS fetch)."""
    for error in asyncio.run(_remote_peer_failures()):
        assert isinstance(error, REMOTE_PEER_FAILURES), repr(error)


async def _remote_peer_failures() -> list[BaseException]:
    refused = await _remote_peer_failure(f"http://127.0.0.1:{free_port()}/")

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    async def garble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nnot json")
        await writer.drain()
        writer.close()

    hanging = await asyncio.start_server(hang, "127.0.0.1", 0)
    cutting = await asyncio.start_server(cut, "127.0.0.1", 0)
    garbling = await asyncio.start_server(garble, "127.0.0.1", 0)
    async with hanging, cutting, garbling:
        hung = await _remote_peer_failure(
            f"http://127.0.0.1:{hanging.sockets[0].getsockname()[1]}/", timeout=0.3)
        cut_off = await _remote_peer_failure(
            f"http://127.0.0.1:{cutting.sockets[0].getsockname()[1]}/")
        garbled = await _remote_peer_failure(
            f"http://127.0.0.1:{garbling.sockets[0].getsockname()[1]}/")
    unusable = await _remote_peer_failure("http://[::1/")
    return [refused, hung, cut_off, garbled, unusable]


def test_a_bug_near_a_remote_call_is_no_remote_peer_failure():
    assert not isinstance(KeyError("route"), REMOTE_PEER_FAILURES)
    assert not isinstance(AttributeError("session"), REMOTE_PEER_FAILURES)
