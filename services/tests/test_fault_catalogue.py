"""The fault catalogue: each fault against real NATS and PostgreSQL, with the four invariants
watched throughout (iot_tools.faults.Invariants samples /health, /ready and RSS every 0.15 s):

  I1 liveness (/health) never fails because of a dependency or a message;
  I2 readiness answers 503 within a stated bound once the service cannot work, and a stable
     200 within a stated bound once it can again;
  I3 every published reading is stored or quarantined exactly once;
  I4 the service's memory (RSS) stays under a bound.

ingest_iot unless a test says otherwise. The README's "Fault catalogue" lists each fault with
the bounds asserted here and the figures measured.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import nats
import pytest
from iot_tools.faults import Invariants, TcpProxy, publish_raw, wait_accounted
from iot_tools.feed import SteadyFeed, encode, publish_batch, reading
from iot_tools.servers import NatsServer, temp_workdir
from iot_tools.services import wait_until
from nats.js.errors import NotFoundError

from services.migrate.nats import create_streams

from .conftest import Database, service_env

# I4 for every fault: ingest idles at roughly 60-80 MiB.
RSS_BOUND_MB = 200
# Short timings so that the catalogue runs in minutes (the defaults are the chart's).
FAST = {"DB_CHECK_INTERVAL_SECONDS": "0.5"}
READINGS = 200  # per phase (before, during, after a fault)


# -- helpers ---------------------------------------------------------------------------


def readings(first: int, count: int) -> list[tuple[str, bytes]]:
    return [(f"telemetry.{doc['device_id']}", encode(doc))
            for doc in (reading(i) for i in range(first, first + count))]


def publish(url: str, payloads: list[tuple[str, bytes]]) -> None:
    asyncio.run(publish_batch(url, payloads))


def accounted(db: Database) -> int:
    """Rows stored plus rows quarantined (as the superuser: unaffected by role faults)."""
    return int(db.sql(
        "SELECT (SELECT count(*) FROM telemetry) + (SELECT count(*) FROM quarantine)"))


def assert_exactly_once(db: Database, expected: int, quarantined: int = 0,
                        timeout: float = 60) -> None:
    """I3: `expected` messages published, each a telemetry row or a quarantine row, once."""
    total = wait_accounted(lambda: accounted(db), expected, timeout)
    assert total == expected, (f"{total} of {expected} accounted for: "
                               f"{db.count('telemetry')} stored, {db.count('quarantine')} "
                               "quarantined")
    assert db.count("quarantine") == quarantined


def ingest_env(db: Database, nats_url: str, role=None, **extra: str) -> dict[str, str]:
    env = service_env(db, None, **FAST, **extra)
    env["NATS_URL"] = nats_url
    if role is not None:  # the non-superuser role: connection limits and auth apply to it
        env["DATABASE_URL"], env["PGPASSWORD"] = role.url, role.password
    return env


def assert_same_process_live_and_small(service, watch: Invariants) -> None:
    watch.assert_live()  # I1
    assert service.returncode() is None, service.log_text()[-3000:]
    assert watch.max_rss_mb() <= RSS_BOUND_MB, f"RSS {watch.max_rss_mb():.0f} MiB"  # I4


def record(name: str, **figures: float | None) -> None:
    """Print the measured figures (pytest -s shows them; the README table came from these)."""
    shown = ", ".join(f"{key}={value:.2f}" if isinstance(value, float) else f"{key}={value}"
                      for key, value in figures.items())
    print(f"\n[fault] {name}: {shown}")


async def _jetstream(url: str, action: Callable) -> object:
    connection = await nats.connect(url)
    try:
        return await action(connection.jetstream(timeout=5))
    finally:
        await connection.close()


def jetstream(url: str, action: Callable) -> object:
    return asyncio.run(_jetstream(url, action))


# -- dependency outages: one shape, many faults ----------------------------------------


@dataclass
class Rig:
    db: Database
    nats: NatsServer
    role: object | None


@dataclass(frozen=True)
class Outage:
    name: str
    inject: Callable[[Rig], None]
    recover: Callable[[Rig], None]
    # I2 bounds, seconds from the fault / from the recovery. None: a transient fault the
    # service may absorb without ever being seen NotReady (a reconnect within a sample).
    ready_503_within: float | None
    ready_200_within: float
    private_postgres: bool = False  # the fault breaks the server: a server of its own
    role: bool = False  # the fault acts on the service's database role
    publish_during: bool = True  # JetStream takes readings during the fault
    hold: float = 2.0  # seconds the fault lasts once readiness shows it


def _nothing(_rig: Rig) -> None:
    pass


def _read_only(rig: Rig) -> None:
    # Cuts the role's sessions too, as a failover would: the new ones are read-only.
    rig.role.set_read_only(True)


OUTAGES = [
    Outage("postgres-stopped-then-restarted", lambda r: r.db.server.stop(mode="fast"),
           lambda r: r.db.server.start(), ready_503_within=3, ready_200_within=10,
           private_postgres=True, publish_during=True),
    Outage("postgres-killed-then-restarted", lambda r: r.db.server.stop(mode="kill"),
           lambda r: r.db.server.start(), ready_503_within=3, ready_200_within=10,
           private_postgres=True),
    Outage("postgres-frozen-then-thawed", lambda r: r.db.server.freeze(),
           lambda r: r.db.server.thaw(), ready_503_within=5, ready_200_within=10,
           private_postgres=True),
    Outage("every-session-terminated", lambda r: r.role.terminate_sessions(), _nothing,
           ready_503_within=None, ready_200_within=10, role=True, hold=0),
    Outage("too-many-connections-then-allowed", lambda r: r.role.refuse_connections(),
           lambda r: r.role.allow_connections(), ready_503_within=3, ready_200_within=10,
           role=True),
    Outage("authentication-failure-then-recovery", lambda r: r.role.break_password(),
           lambda r: r.role.restore_password(), ready_503_within=3, ready_200_within=10,
           role=True),
    # The probe asks transaction_read_only: a read-only server fails readiness at once and
    # without a blip, whether or not a write has been tried.
    Outage("read-only-database-then-writable", _read_only,
           lambda r: r.role.set_read_only(False), ready_503_within=3, ready_200_within=10,
           role=True, hold=3),
    Outage("nats-killed-then-restarted", lambda r: r.nats.kill(), lambda r: r.nats.start(),
           ready_503_within=1, ready_200_within=10, publish_during=False),
    # Pings every 2 s, 2 outstanding: a frozen server is flagged within about 6 s.
    Outage("nats-frozen-then-thawed", lambda r: r.nats.freeze(), lambda r: r.nats.thaw(),
           ready_503_within=30, ready_200_within=15, publish_during=False, hold=1),
]


@pytest.mark.parametrize("outage", OUTAGES, ids=lambda outage: outage.name)
def test_ingest_rides_out_a_dependency_fault_and_resumes_by_itself(outage, request, launch,
                                                                    nats_server):
    db: Database = request.getfixturevalue(
        "private_postgres" if outage.private_postgres else "database")
    role = request.getfixturevalue("service_role") if outage.role else None
    rig = Rig(db, nats_server, role)
    service = launch("ingest_iot", ingest_env(db, nats_server.url, role))
    service.wait_ready()
    with Invariants(service) as watch:
        publish(nats_server.url, readings(0, READINGS))
        assert wait_until(lambda: accounted(db) == READINGS, 20) is not None

        fault_at = watch.mark()
        outage.inject(rig)
        published = READINGS
        if outage.publish_during:
            publish(nats_server.url, readings(published, READINGS))
            published += READINGS
        not_ready = None
        if outage.ready_503_within is not None:
            not_ready = watch.wait_for("ready", 503, fault_at, outage.ready_503_within + 5)
            assert not_ready is not None and not_ready <= outage.ready_503_within, (
                f"503 after {not_ready} s\n{watch.describe()}\n{service.log_text()[-3000:]}")
        time.sleep(outage.hold)
        recovered_at = watch.mark()
        if not_ready is not None:
            # No 200 while the fault lasts: readiness does not flap back on a half-recovery.
            assert 200 not in watch.ready_statuses(fault_at + not_ready,
                                                   recovered_at), watch.describe()

        outage.recover(rig)
        ready = watch.wait_stable_ready(recovered_at, outage.ready_200_within + 10)
        assert ready is not None and ready <= outage.ready_200_within, (
            f"stable 200 after {ready} s\n{watch.describe()}\n{service.log_text()[-3000:]}")
        publish(nats_server.url, readings(published, READINGS))
        published += READINGS
        assert_exactly_once(db, published)
    assert_same_process_live_and_small(service, watch)
    record(outage.name, ready_503=not_ready, ready_200=ready, rss_mb=watch.max_rss_mb())


def test_probes_answer_within_1s_while_queries_are_blocked_by_a_lock(launch, database,
                                                                     nats_server):
    """Slow database: ingest's commits wait behind a lock for 6 s; the probes do not."""
    service = launch("ingest_iot", ingest_env(database, nats_server.url))
    service.wait_ready()
    with Invariants(service) as watch:
        locker = threading.Thread(target=database.sql, args=(
            "BEGIN; LOCK TABLE telemetry, devices, quarantine IN ACCESS EXCLUSIVE MODE; "
            "SELECT pg_sleep(6); COMMIT;",))
        locker.start()
        time.sleep(0.3)
        locked_at = watch.mark()
        publish(nats_server.url, readings(0, READINGS))  # commits queue behind the lock
        locker.join(30)
        released_at = watch.mark()
        slowest = watch.slowest_ready(locked_at, released_at)
        assert slowest < 1.0, f"/ready took {slowest:.2f} s"
        assert None not in watch.ready_statuses(locked_at, released_at)
        assert_exactly_once(database, READINGS)
    assert_same_process_live_and_small(service, watch)
    record("slow-database", slowest_ready=slowest, rss_mb=watch.max_rss_mb())


# -- JetStream objects deleted under the service ---------------------------------------


def test_deleted_durable_consumer_is_recreated_and_nothing_is_lost_or_stored_twice(
        launch, database, nats_server):
    service = launch("ingest_iot", ingest_env(database, nats_server.url))
    service.wait_ready()
    with Invariants(service) as watch:
        publish(nats_server.url, readings(0, READINGS))
        assert wait_until(lambda: accounted(database) == READINGS, 20) is not None

        deleted_at = watch.mark()
        jetstream(nats_server.url, lambda js: js.delete_consumer("TELEMETRY", "ingest"))
        # Published while nothing consumes: the re-created consumer must still get them.
        publish_raw(nats_server.url, readings(READINGS, READINGS))
        # NotReady while unbound, but ingest re-binds within milliseconds: usually between
        # two samples. The proof that it re-bound is the data below.
        not_ready = watch.wait_for("ready", 503, deleted_at, 0)
        ready = watch.wait_stable_ready(deleted_at, 20)
        assert ready is not None and ready <= 10, f"{ready}\n{watch.describe()}"
        info = jetstream(nats_server.url, lambda js: js.consumer_info("TELEMETRY", "ingest"))
        assert info.name == "ingest"
        publish_raw(nats_server.url, readings(2 * READINGS, READINGS))
        assert_exactly_once(database, 3 * READINGS)
    assert_same_process_live_and_small(service, watch)
    record("consumer-deleted", ready_503=not_ready, ready_200=ready, rss_mb=watch.max_rss_mb())


def test_deleted_stream_keeps_ingest_not_ready_until_the_owner_creates_it_again(
        launch, database, nats_server):
    """The stream's unconsumed messages go with it (an operator's act). Ingest may not create
    a stream (the chart's NATS user for it has no such permission, test_nats_permissions.py):
    it stays NotReady, its "consumer" check failing and its log naming the missing stream,
    until the owner (services.migrate.nats, the chart's `streams` init container) creates it
    again; then it binds and consumes the new stream by itself. One malformed message in
    each stream's life, at the same stream sequence: the new stream numbers from 1 again, and
    its quarantine row must not be taken for the old one's."""
    poison = ("telemetry.bad", b"{not json")
    service = launch("ingest_iot", ingest_env(database, nats_server.url))
    service.wait_ready()
    with Invariants(service) as watch:
        publish(nats_server.url, [poison, *readings(0, READINGS)])
        assert wait_until(lambda: accounted(database) == READINGS + 1, 20) is not None

        deleted_at = watch.mark()
        jetstream(nats_server.url, lambda js: js.delete_stream("TELEMETRY"))
        not_ready = watch.wait_for("ready", 503, deleted_at, 10)
        assert not_ready is not None and not_ready <= 5, watch.describe()
        time.sleep(3)
        waited_at = watch.mark()
        assert 200 not in watch.ready_statuses(deleted_at + not_ready, waited_at)
        checks = json.loads(service.get("/ready").body)["checks"]
        assert checks["consumer"]["status"] == "fail"
        assert "stream TELEMETRY missing: waiting for the owner to create it" in \
            service.log_text()
        with pytest.raises(NotFoundError):  # ingest did not create it
            jetstream(nats_server.url, lambda js: js.stream_info("TELEMETRY"))

        asyncio.run(create_streams(nats_server.url))
        ready = watch.wait_stable_ready(waited_at, 20)
        assert ready is not None and ready <= 10, f"{ready}\n{watch.describe()}"
        publish_raw(nats_server.url, [poison, *readings(READINGS, READINGS)])
        assert_exactly_once(database, 2 * READINGS + 2, quarantined=2, timeout=30)
    assert_same_process_live_and_small(service, watch)
    record("stream-deleted", ready_503=not_ready, ready_200=ready, rss_mb=watch.max_rss_mb())


@pytest.fixture
def nats_with_auth() -> Iterator[NatsServer]:
    server = NatsServer(temp_workdir("iot-test-nats-auth-"), user="ingest",
                        password="first-password").start()
    yield server
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


def test_nats_client_closed_by_the_server_is_replaced_and_nothing_is_lost(
        launch, database, nats_with_auth):
    """The server revokes the credentials: it sends the connection -ERR 'Authorization
    Violation' (what a server sends when credentials expire or are revoked; a proxy in
    between delivers it, as the stock server just drops the connection on a reload), and
    nats-py closes that client for good. Ingest must replace it; the replacement cannot
    authenticate until the password is restored."""
    server = nats_with_auth
    with TcpProxy(server.port) as proxy:
        url = f"nats://{server.user}:{server.password}@127.0.0.1:{proxy.port}"
        service = launch("ingest_iot", ingest_env(database, url))
        service.wait_ready()
        with Invariants(service) as watch:
            publish(server.url, readings(0, READINGS))
            assert wait_until(lambda: accounted(database) == READINGS, 20) is not None

            revoked_at = watch.mark()
            server.password = "second-password"
            assert proxy.send_to_clients(b"-ERR 'Authorization Violation'\r\n") >= 1
            server.reload()
            publish(server.url, readings(READINGS, READINGS))  # with the new password
            not_ready = watch.wait_for("ready", 503, revoked_at, 10)
            assert not_ready is not None and not_ready <= 2, (
                f"503 after {not_ready} s\n{watch.describe()}")
            time.sleep(2)
            restored_at = watch.mark()
            assert 200 not in watch.ready_statuses(revoked_at + not_ready, restored_at)

            server.password = "first-password"
            server.reload()
            ready = watch.wait_stable_ready(restored_at, 25)
            assert ready is not None and ready <= 15, (
                f"stable 200 after {ready} s\n{watch.describe()}\n{service.log_text()[-3000:]}")
            publish(server.url, readings(2 * READINGS, READINGS))
            assert_exactly_once(database, 3 * READINGS)
        assert_same_process_live_and_small(service, watch)
    record("nats-client-closed-by-server", ready_503=not_ready, ready_200=ready,
           rss_mb=watch.max_rss_mb())


# -- poison messages -------------------------------------------------------------------


def _recent(offset: timedelta = timedelta(0)) -> str:
    return (datetime.now(UTC) + offset).isoformat()


def _doc(metrics: str = '{"t":1}', ts: str | None = None) -> bytes:
    """A reading's JSON text, metrics given as raw JSON text (to say what json.dumps won't)."""
    return (f'{{"device_id":"poison","ts":"{ts or _recent()}","metrics":{metrics}}}').encode()


# name -> (payload, reasons the quarantine row may give; None: any reason)
POISON: dict[str, tuple[Callable[[], bytes], set[str] | None]] = {
    "nul-in-metric-name": (lambda: _doc('{"t\\u0000":1}'), None),
    "lone-surrogate-in-metric-name": (lambda: _doc('{"t\\ud800":1}'), None),
    "3000-nested-brackets": (
        lambda: _doc('{"t":1},"x":' + "[" * 3000 + "]" * 3000), None),
    "year-1-timestamp-with-offset": (
        lambda: _doc(ts="0001-01-01T00:00:00+01:00"), {"invalid_ts", "ts_out_of_range"}),
    "clock-skewed-device-one-year-ahead": (
        lambda: _doc(ts=_recent(timedelta(days=365))), {"ts_out_of_range"}),
    "too-old-timestamp": (lambda: _doc(ts=_recent(-timedelta(days=60))), {"ts_out_of_range"}),
    "number-1e400": (lambda: _doc('{"t":1e400}'), None),
    "huge-integer": (lambda: _doc('{"t":' + "9" * 400 + "}"), None),
    "invalid-utf8": (lambda: _doc('{"t\xff":1}').replace(b"\xc3\xbf", b"\xff"), None),
    "empty-payload": (lambda: b"", None),
    "payload-over-max-payload-bytes": (
        lambda: _doc('{"t":1},"pad":"' + "x" * 70_000 + '"'), {"payload_too_large"}),
}


@pytest.mark.parametrize("poison", list(POISON), ids=list(POISON))
def test_poison_message_is_quarantined_and_ingest_stays_ready(poison, launch, database,
                                                              nats_server):
    """Three copies of one poison message among 300 good readings, in the same batches:
    the good ones are stored, each poison copy quarantined once, readiness never wavers."""
    make, reasons = POISON[poison]
    payload = make()
    good = readings(0, 300)
    mixed = [*good[:100], ("telemetry.poison", payload), *good[100:200],
             ("telemetry.poison", payload), ("telemetry.poison", payload), *good[200:]]
    service = launch("ingest_iot", ingest_env(database, nats_server.url))
    service.wait_ready()
    with Invariants(service) as watch:
        started = watch.mark()
        publish(nats_server.url, mixed)
        assert_exactly_once(database, len(mixed), quarantined=3)
        assert database.count("telemetry") == 300
        assert watch.ready_statuses(started, watch.mark()) == {200}, watch.describe()
    assert_same_process_live_and_small(service, watch)
    found = set(database.sql("SELECT DISTINCT reason FROM quarantine").split())
    assert len(found) == 1 and all(found), found
    if reasons is not None:
        assert found <= reasons, found
    record(f"poison {poison}", reason=found.pop(), rss_mb=watch.max_rss_mb())


# -- the process itself ----------------------------------------------------------------


def test_worker_stuck_in_an_await_fails_liveness_while_dependencies_are_healthy(
        launch, database, nats_server):
    """The one fault where liveness must fail: a restart is what helps a stuck process."""
    stall = 3
    service = launch("ingest_iot", ingest_env(database, nats_server.url, IOT_TEST_HOOKS="true",
                                              WORKER_STALL_SECONDS=str(stall)))
    service.wait_ready()
    with Invariants(service) as watch:
        service.send(signal.SIGUSR2)  # test hook: every worker's next unit of work hangs
        time.sleep(0.2)
        work_at = watch.mark()
        publish(nats_server.url, readings(0, 1))
        dead = watch.wait_for("health", 503, work_at, stall + 10)
        assert dead is not None and dead <= stall + 4, f"{dead}\n{watch.describe()}"
        checks = json.loads(service.get("/ready").body)["checks"]
        assert checks["database"]["status"] == "pass", checks
        assert checks["nats"]["status"] == "pass", checks
    record("worker-stuck", health_503=dead)


def test_sigterm_during_sustained_ingest_exits_0_and_loses_nothing(launch, database,
                                                                  nats_server):
    env = ingest_env(database, nats_server.url)
    first = launch("ingest_iot", env)
    first.wait_ready()
    with SteadyFeed(nats_server.url, rate=200) as feed:
        with Invariants(first) as watch:
            time.sleep(2)
            term_at = watch.mark()
            first.send(signal.SIGTERM)
            not_ready = watch.wait_for("ready", 503, term_at, 3)
            # At once; 1 s leaves room for one sample on a loaded machine.
            assert not_ready is not None and not_ready <= 1.0, watch.describe()
            assert first.process.wait(30) == 0
        # Serving (and alive) through the 1 s drain.
        watch.assert_live(until=term_at + 0.8)
        assert watch.max_rss_mb() <= RSS_BOUND_MB
        replacement = launch("ingest_iot", env)
        replacement.wait_ready()
        time.sleep(1)
    assert_exactly_once(database, feed.published)
    record("sigterm", ready_503=not_ready, rss_mb=watch.max_rss_mb(),
           published=feed.published)


def test_large_payloads_while_the_database_is_down_keep_memory_bounded(
        launch, private_postgres, nats_server):
    """2,000 readings of 60 KB (120 MB) arrive while PostgreSQL is down; ingest holds at
    most MAX_BUFFERED_BYTES of them, and stores them all once it is back."""
    count, size = 2000, 60_000
    service = launch("ingest_iot", ingest_env(private_postgres, nats_server.url,
                                              MAX_BUFFERED_BYTES=str(8 * 1024 * 1024)))
    service.wait_ready()
    with Invariants(service) as watch:
        stopped_at = watch.mark()
        private_postgres.server.stop()
        not_ready = watch.wait_for("ready", 503, stopped_at, 8)
        assert not_ready is not None and not_ready <= 3, watch.describe()
        large = []
        for index in range(count):
            document = reading(index)
            document["pad"] = "x" * size
            large.append((f"telemetry.{document['device_id']}", encode(document)))
        publish(nats_server.url, large)
        del large
        time.sleep(3)  # ingest fetches what its byte budget allows, and waits
        down_rss = watch.max_rss_mb()
        restarted_at = watch.mark()
        private_postgres.server.start()
        ready = watch.wait_stable_ready(restarted_at, 20)
        assert ready is not None and ready <= 10, watch.describe()
        assert_exactly_once(private_postgres, count, timeout=120)
    assert_same_process_live_and_small(service, watch)
    record("large-payloads-db-down", ready_503=not_ready, ready_200=ready,
           rss_mb_while_down=down_rss, rss_mb=watch.max_rss_mb())


# -- other services --------------------------------------------------------------------


def test_ui_iot_started_while_the_database_refuses_becomes_ready_and_serves_once_it_accepts(
        launch, database, service_role):
    service_role.refuse_connections()
    env = service_env(database, None, **FAST)
    env["DATABASE_URL"], env["PGPASSWORD"] = service_role.url, service_role.password
    service = launch("ui_iot", env)
    assert service.wait_status("/health", 200, timeout=20) is not None
    with Invariants(service) as watch:
        time.sleep(2)
        assert watch.ready_statuses(0, watch.mark()) == {503}, watch.describe()
        assert service.status("/api/devices", timeout=5) == 503
        allowed_at = watch.mark()
        service_role.allow_connections()
        ready = watch.wait_stable_ready(allowed_at, 20)
        assert ready is not None and ready <= 10, f"{ready}\n{watch.describe()}"
        assert service.status("/api/devices", timeout=5) == 200
    assert_same_process_live_and_small(service, watch)
    record("ui-started-db-refusing", ready_200=ready, rss_mb=watch.max_rss_mb())


def test_evaluator_stays_alive_when_sessions_are_cut_and_connections_refused(
        launch, database, service_role):
    env = service_env(database, None, **FAST)
    env["DATABASE_URL"], env["PGPASSWORD"] = service_role.url, service_role.password
    service = launch("evaluator_iot", env)
    service.wait_ready()
    with Invariants(service) as watch:
        fault_at = watch.mark()
        service_role.refuse_connections()  # and cuts every session of the role
        not_ready = watch.wait_for("ready", 503, fault_at, 10)
        assert not_ready is not None and not_ready <= 3, watch.describe()
        time.sleep(3)
        allowed_at = watch.mark()
        service_role.allow_connections()
        ready = watch.wait_stable_ready(allowed_at, 20)
        assert ready is not None and ready <= 10, f"{ready}\n{watch.describe()}"
    assert_same_process_live_and_small(service, watch)
    record("evaluator-connections-refused", ready_503=not_ready, ready_200=ready,
           rss_mb=watch.max_rss_mb())
