"""Every service, as a real subprocess against real NATS and PostgreSQL: probes at start-up,
configuration errors, secrets, access logs, and the SIGTERM drain."""

import json
import signal
import subprocess
import sys
import time

import pytest
from iot_tools.services import NATS_USERS, SERVICES

from .conftest import service_env


@pytest.mark.parametrize("name", SERVICES)
def test_health_answers_at_once_and_ready_follows_the_connections(name, launch, database,
                                                                   nats_server):
    service = launch(name, service_env(database, nats_server))
    health_after = service.wait_status("/health", 200, timeout=10)
    service.wait_ready(timeout=30)
    # /health must not wait for anything: it answers before (or when) /ready does, and
    # within the first seconds (generous bound for a loaded 2-core machine; the benchmark
    # has the real figure).
    assert health_after is not None and health_after < 5
    assert json.loads(service.get("/health").body)["status"] == "ok"
    ready = json.loads(service.get("/ready").body)
    assert ready["status"] == "ready"
    expected = {"startup", "shutdown", "database"} | ({"nats"} if name in NATS_USERS else set())
    assert expected <= set(ready["checks"])


@pytest.mark.parametrize("name", SERVICES)
def test_health_is_up_and_ready_is_503_while_the_database_is_unreachable(name, launch,
                                                                         database,
                                                                         nats_server):
    env = service_env(database, nats_server,
                      DATABASE_URL="postgresql://iot@127.0.0.1:1/iot")
    service = launch(name, env)
    assert service.wait_status("/health", 200, timeout=10) is not None
    time.sleep(1.5)  # several readiness ticks and failed connection attempts
    ready = service.get("/ready")
    assert ready.status == 503
    assert json.loads(ready.body)["checks"]["database"]["status"] == "fail"
    assert service.status("/health") == 200
    assert service.returncode() is None  # retries; never crash-loops


@pytest.mark.parametrize(
    ("name", "variable", "value"),
    [
        ("ingest_iot", "BATCH_SIZE", "many"),
        ("ingest_iot", "NATS_URL", None),
        ("evaluator_iot", "POLL_INTERVAL_SECONDS", "-1"),
        ("ops_worker", "RETENTION_DAYS", "0"),
        ("route_delivery", "MAX_ATTEMPTS", "x"),
        ("ui_iot", "HEALTH_PORT", "http"),
        ("ui_iot", "DATABASE_URL", None),
    ],
)
def test_bad_configuration_exits_2_naming_the_variable(name, variable, value, database):
    env = service_env(database, None)
    if value is None:
        env.pop(variable)
    else:
        env[variable] = value
    result = subprocess.run([sys.executable, "-m", f"services.{name}"], env=env,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"configuration error: {variable}:" in lines[0]


def test_migrate_exits_2_on_a_bad_database_url():
    result = subprocess.run([sys.executable, "-m", "services.migrate"],
                            env={"DATABASE_URL": "ftp://x", "PATH": "/usr/bin"},
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_sigterm_fails_readiness_at_once_keeps_serving_through_the_drain_and_exits_0(
        name, launch, database, nats_server):
    service = launch(name, service_env(database, nats_server, DRAIN_DELAY_SECONDS="3"))
    service.wait_ready()
    service.send(signal.SIGTERM)
    not_ready_after = service.wait_status("/ready", 503, timeout=5)
    assert not_ready_after is not None and not_ready_after < 0.5
    # Still serving during the drain: liveness stays up, readiness explains why it fails.
    time.sleep(1)
    assert service.status("/health") == 200
    assert json.loads(service.get("/ready").body)["checks"]["shutdown"]["detail"] == "draining"
    assert service.process.wait(30) == 0


@pytest.mark.parametrize("name", ["ingest_iot", "ui_iot"])
def test_probe_requests_do_not_reach_the_access_log(name, launch, database, nats_server):
    service = launch(name, service_env(database, nats_server))
    service.wait_ready()
    before = service.log_text().count("\n")
    for _ in range(50):
        service.get("/health")
        service.get("/ready")
    time.sleep(0.3)
    assert service.log_text().count("\n") == before


def test_secrets_stay_out_of_probe_bodies_and_logs(launch, private_postgres, nats_server):
    password = private_postgres.server.password
    service = launch("ingest_iot", service_env(private_postgres, nats_server))
    service.wait_ready()
    private_postgres.server.stop()
    service.wait_status("/ready", 503, timeout=10)
    bodies = [service.get(path).body for path in ("/health", "/ready", "/ready?verbose")]
    for text in [*bodies, service.log_text()]:
        assert password not in text
        assert "postgresql://" not in text or "postgresql://iot@" in text  # never with a password
    assert all("127.0.0.1" not in body for body in bodies)
