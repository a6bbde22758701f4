"""The fault matrix against real servers: readiness follows the dependency, liveness never
does, and the same process recovers."""

import json
import signal
import threading
import time

import pytest
from iot_tools.feed import publish_readings
from iot_tools.services import NATS_USERS, SERVICES, wait_until

from .conftest import service_env


@pytest.mark.parametrize("name", NATS_USERS)
def test_ready_turns_503_within_1s_when_nats_dies_and_recovers_in_the_same_process(
        name, launch, database, nats_server):
    service = launch(name, service_env(database, nats_server))
    service.wait_ready()
    pid = service.pid

    nats_server.kill()
    detected = service.wait_status("/ready", 503, timeout=10)
    assert detected is not None and detected <= 1.0, f"took {detected}"
    assert json.loads(service.get("/ready").body)["checks"]["nats"]["status"] == "fail"
    assert service.status("/health") == 200

    nats_server.start()
    assert service.wait_status("/ready", 200, timeout=15) is not None
    assert service.pid == pid and service.returncode() is None
    assert service.status("/health") == 200


@pytest.mark.slow
@pytest.mark.parametrize("name", NATS_USERS)
def test_ready_turns_503_within_30s_when_nats_freezes(name, launch, database, nats_server):
    service = launch(name, service_env(database, nats_server))
    service.wait_ready()
    nats_server.freeze()  # SIGSTOP: the TCP connection stays open, nothing answers
    try:
        detected = service.wait_status("/ready", 503, timeout=40)
        assert detected is not None and detected <= 30, f"took {detected}"
        assert service.status("/health") == 200
    finally:
        nats_server.thaw()
    assert service.wait_status("/ready", 200, timeout=20) is not None


@pytest.mark.parametrize("name", SERVICES)
def test_ready_turns_503_within_3s_when_postgres_stops_and_200_when_it_is_back(
        name, launch, private_postgres, nats_server):
    service = launch(name, service_env(private_postgres, nats_server))
    service.wait_ready()
    pid = service.pid

    private_postgres.server.stop()
    detected = service.wait_status("/ready", 503, timeout=10)
    assert detected is not None and detected <= 3.0, f"took {detected}"
    assert json.loads(service.get("/ready").body)["checks"]["database"]["status"] == "fail"
    assert service.status("/health") == 200

    private_postgres.server.start()
    assert service.wait_status("/ready", 200, timeout=20) is not None
    assert service.pid == pid and service.returncode() is None


@pytest.mark.slow
def test_probes_of_every_service_keep_answering_fast_while_the_database_is_slow(
        launch, database, nats_server):
    env = service_env(database, nats_server, MAINTENANCE_INTERVAL_SECONDS="0.5",
                      POLL_INTERVAL_SECONDS="0.5")
    services = [launch(name, env) for name in SERVICES]
    for service in services:
        service.wait_ready()
    # Every table the services query, locked for 10 s by another transaction.
    locker = threading.Thread(target=database.sql, args=(
        "BEGIN; LOCK TABLE telemetry, devices, alerts, message_routes, quarantine "
        "IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(10); COMMIT;",))
    locker.start()
    try:
        time.sleep(0.5)
        # Put the services' own work behind the lock: an ingest commit and an API query.
        publish_readings(nats_server.url, range(200))
        ui = services[SERVICES.index("ui_iot")]
        threading.Thread(target=ui.get, args=("/api/devices", 15), daemon=True).start()
        slowest = 0.0
        deadline = time.monotonic() + 8.5
        while time.monotonic() < deadline:
            for service in services:
                health = service.get("/health", timeout=5)
                ready = service.get("/ready", timeout=5)
                assert health.status == 200, (service.name, health)
                assert ready.status is not None, (service.name, ready)
                slowest = max(slowest, health.seconds, ready.seconds)
            time.sleep(0.1)
        assert slowest < 1.0
    finally:
        locker.join(30)
    # The work queued behind the lock completes afterwards.
    assert wait_until(lambda: database.count("telemetry") == 200, timeout=15) is not None
    assert all(service.returncode() is None for service in services)


@pytest.mark.parametrize("name", ["ingest_iot", "ui_iot"])
def test_health_stops_answering_when_the_event_loop_is_blocked(name, launch, database,
                                                                nats_server):
    service = launch(name, service_env(database, nats_server, IOT_TEST_HOOKS="true",
                                       IOT_TEST_BLOCK_SECONDS="8"))
    service.wait_ready()
    service.send(signal.SIGUSR1)  # test hook: blocks the event loop for 8 s
    time.sleep(0.2)
    stuck = service.get("/health", timeout=5)  # the chart's liveness timeoutSeconds
    assert stuck.status is None, "a blocked loop must not look alive"
    # Once the loop runs again the service recovers by itself.
    assert service.wait_status("/health", 200, timeout=15) is not None


@pytest.mark.parametrize("name", NATS_USERS)
def test_sigterm_while_nats_is_down_still_exits_0_within_the_shutdown_budget(
        name, launch, database, nats_server):
    service = launch(name, service_env(database, nats_server))
    service.wait_ready()
    nats_server.kill()
    service.wait_status("/ready", 503, timeout=5)
    started = time.monotonic()
    service.send(signal.SIGTERM)
    assert service.process.wait(30) == 0
    # drain (1 s) + stopping (bounded by one fetch timeout), far inside the 15 s budget
    assert time.monotonic() - started < 5
