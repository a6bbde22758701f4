"""PostgreSQL refusing, rejecting or turning read-only under evaluator_iot, ui_iot and
ops_worker: readiness follows within a stated bound, liveness never does, the same process
recovers by itself and does its work again; and the evaluator's persisted position and time
window.

Each service logs in as a non-superuser role (`service_role`): superusers are exempt from
connection limits. Bounds: not ready within 5 s of the fault (the database probe sees its
session cut at once), ready within 15 s of the repair (backoff is capped at 5 s plus jitter).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from iot_tools.faults import Invariants
from iot_tools.services import ServiceProcess, wait_until

from .conftest import Database, ServiceRole, service_env

NOT_READY_WITHIN = 5.0
READY_AGAIN_WITHIN = 15.0
DB_USERS = ("evaluator_iot", "ui_iot", "ops_worker")
FAST = {"POLL_INTERVAL_SECONDS": "0.5", "MAINTENANCE_INTERVAL_SECONDS": "0.5",
        "OFFLINE_AFTER_SECONDS": "600"}


def ready_checks(service: ServiceProcess) -> dict:
    return json.loads(service.get("/ready").body)["checks"]


def add_rule(db: Database) -> None:
    db.sql("INSERT INTO alert_rules (name, metric, operator, threshold, window_seconds) "
           "VALUES ('too hot', 'temperature', '>', 30, 60)")


def insert_breach(db: Database, device: str, ts: str = "now()", inserted_at: str = "now()",
                  notify: bool = True) -> None:
    db.sql(f"INSERT INTO telemetry (device_id, ts, metrics, inserted_at) VALUES "
           f"('{device}', {ts}, '{{\"temperature\": 99}}', {inserted_at})")
    if notify:
        db.sql(f"SELECT pg_notify('telemetry_inserted', json_build_object("
               f"'from', {ts}, 'to', {ts}, 'rows', 1)::text)")


def alerted(db: Database, device: str) -> bool:
    return db.count("alerts", f"device_id = '{device}'") == 1


def works_again(name: str, service: ServiceProcess, db: Database) -> bool:
    """After recovery the service does its work, not just answers /ready."""
    if name == "evaluator_iot":
        insert_breach(db, "dev-after")
        return wait_until(lambda: alerted(db, "dev-after"), timeout=10) is not None
    if name == "ops_worker":
        db.sql("INSERT INTO devices (device_id, status, last_seen) "
               "VALUES ('quiet-after', 'online', now() - interval '1 hour')")
        return wait_until(lambda: db.count("devices", "device_id = 'quiet-after' AND "
                                           "status = 'offline'") == 1, timeout=10) is not None
    return service.status("/api/devices") == 200


def prepare(name: str, db: Database) -> None:
    if name == "evaluator_iot":
        add_rule(db)


def fault_then_repair(
    name: str, launch, role: ServiceRole, fault: Callable[[], None],
    repair: Callable[[], None], *,
    while_failing: Callable[[ServiceProcess], None] = lambda _service: None,
) -> tuple[float, float]:
    """Start `name` as `role`, apply `fault`, wait for 503 (then `while_failing(service)`),
    `repair`, wait for 200; /health stays 200 throughout and the process is the same.
    Returns (detected, recovered) s."""
    prepare(name, role.database)
    service = launch(name, role.env(**FAST))
    service.wait_ready()
    pid = service.pid
    with Invariants(service) as watch:
        fault()
        detected = service.wait_status("/ready", 503, timeout=NOT_READY_WITHIN + 5)
        assert detected is not None and detected <= NOT_READY_WITHIN, f"took {detected}"
        assert ready_checks(service)["database"]["status"] == "fail"
        while_failing(service)
        time.sleep(3)  # several retries into the outage: nothing may have died meanwhile
        assert service.status("/ready") == 503
        repair()
        recovered = service.wait_status("/ready", 200, timeout=READY_AGAIN_WITHIN + 10)
        assert recovered is not None and recovered <= READY_AGAIN_WITHIN, f"took {recovered}"
    watch.assert_live()  # I1: /health 200 at every sample
    assert service.pid == pid and service.returncode() is None
    assert works_again(name, service, role.database)
    print(f"{name}: not ready after {detected:.2f} s, ready again after {recovered:.2f} s")
    return detected, recovered


@pytest.mark.parametrize("name", DB_USERS)
def test_too_many_connections_fails_readiness_not_liveness_and_heals_in_the_same_process(
        name, launch, service_role):
    fault_then_repair(name, launch, service_role, service_role.refuse_connections,
                      service_role.allow_connections)


@pytest.mark.parametrize("name", DB_USERS)
def test_authentication_failure_fails_readiness_not_liveness_and_heals_in_the_same_process(
        name, launch, service_role):
    fault_then_repair(name, launch, service_role, service_role.break_password,
                      service_role.restore_password)


@pytest.mark.parametrize("name, worker", [("evaluator_iot", "evaluator"),
                                          ("ops_worker", "maintenance")])
def test_a_read_only_database_fails_readiness_of_writers_naming_the_worker(
        name, worker, launch, service_role):
    def names_the_worker(service: ServiceProcess) -> None:
        # The probe says read-only, and the worker whose write was refused is named too.
        refused = f"{worker}: ReadOnlySQLTransactionError"
        assert wait_until(lambda: refused in ready_checks(service)["database"]["detail"],
                          timeout=10) is not None

    fault_then_repair(name, launch, service_role, lambda: service_role.set_read_only(True),
                      lambda: service_role.set_read_only(False),
                      while_failing=names_the_worker)


def test_a_read_only_database_leaves_ui_ready_and_serving(launch, service_role):
    ui = launch("ui_iot", service_role.env())
    ui.wait_ready()
    with Invariants(ui) as watch:
        service_role.set_read_only(True)  # cuts the sessions, as a failover would
        # It only reads: once reconnected (the cut sessions may show for a moment), nothing
        # to be unready about.
        time.sleep(1)
        recovered = ui.wait_status("/ready", 200, timeout=READY_AGAIN_WITHIN)
        assert recovered is not None
        assert service_role.database.server.psql(
            "SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
            f"WHERE r.rolname = '{service_role.name}'", database="postgres").strip() == (
            "{default_transaction_read_only=on}")
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            assert ui.status("/ready") == 200
            assert ui.status("/api/devices") == 200
            time.sleep(0.2)
    watch.assert_live()  # I1: /health 200 at every sample


def test_ui_started_while_the_database_refuses_serves_its_api_once_it_accepts(
        launch, service_role):
    service_role.database.sql("INSERT INTO devices (device_id) VALUES ('dev-ui')")
    service_role.refuse_connections()
    ui = launch("ui_iot", service_role.env())
    assert ui.wait_status("/health", 200, timeout=15) is not None
    with Invariants(ui) as watch:
        time.sleep(3)  # several refused attempts at creating the pool
        assert ui.status("/ready") == 503
        assert ready_checks(ui)["api_pool"]["detail"] == "pool not open"
        assert ui.status("/api/devices") == 503
        service_role.allow_connections()
        recovered = ui.wait_status("/ready", 200, timeout=READY_AGAIN_WITHIN + 10)
        assert recovered is not None and recovered <= READY_AGAIN_WITHIN, f"took {recovered}"
    answer = ui.get("/api/devices")
    assert answer.status == 200
    assert [device["device_id"] for device in json.loads(answer.body)] == ["dev-ui"]
    watch.assert_live()  # I1: /health 200 at every sample
    print(f"ui_iot ready {recovered:.2f} s after the database accepted")


def test_ui_readiness_fails_when_its_pool_cannot_reach_the_database(launch, service_role):
    """The check covers the API's pool itself, not only the probe's own connection."""
    ui = launch("ui_iot", service_role.env())
    ui.wait_ready()
    assert ready_checks(ui)["api_pool"]["status"] == "pass"
    service_role.refuse_connections()
    assert wait_until(lambda: ready_checks(ui)["api_pool"]["status"] == "fail",
                      timeout=NOT_READY_WITHIN) is not None
    assert ready_checks(ui)["api_pool"]["detail"].startswith("unreachable")


def test_evaluator_resumes_from_its_persisted_position_after_hours_of_downtime(
        launch, database):
    add_rule(database)
    env = {"POLL_INTERVAL_SECONDS": "0.5", "STARTUP_LOOKBACK_SECONDS": "1"}
    evaluator = launch("evaluator_iot", service_env(database, None, **env))
    evaluator.wait_ready()
    assert wait_until(lambda: database.count("evaluator_position") == 1, timeout=10) is not None
    assert evaluator.stop() == 0
    # Stopped three hours ago, as far as its position says; a breach stored two hours ago
    # (far outside the 1 s start-up look-back, which is all a fresh start would evaluate).
    database.sql("UPDATE evaluator_position SET polled_to = now() - interval '3 hours'")
    insert_breach(database, "dev-down", ts="now() - interval '2 hours'",
                  inserted_at="now() - interval '2 hours'", notify=False)
    time.sleep(1.5)
    evaluator = launch("evaluator_iot", service_env(database, None, **env))
    evaluator.wait_ready()
    assert wait_until(lambda: alerted(database, "dev-down"), timeout=15) is not None
    # ...and the position caught up to now, in chunks.
    assert wait_until(lambda: database.sql(
        "SELECT polled_to > now() - interval '1 minute' FROM evaluator_position") == "t",
        timeout=10) is not None


def test_evaluator_bounds_what_it_evaluates_despite_clock_skewed_devices(launch, database):
    add_rule(database)
    # A breach stored two hours ago, before the evaluator's first start (outside its
    # 600 s look-back): a notified range stretched by a skewed device would cover it.
    insert_breach(database, "dev-history", ts="now() - interval '2 hours'",
                  inserted_at="now() - interval '2 hours'", notify=False)
    evaluator = launch("evaluator_iot", service_env(
        database, None, POLL_INTERVAL_SECONDS="0.5", EVALUATION_MAX_AGE_SECONDS="86400"))
    evaluator.wait_ready()
    # One batch as ingest would store it: a 1970 clock, a 2100 clock and a good one, all
    # breaching, announced as one range from 1970 to 2100.
    for device, ts in [("dev-1970", "'1970-01-01T00:00:00Z'"),
                       ("dev-2100", "'2100-01-01T00:00:00Z'"), ("dev-ok", "now()")]:
        insert_breach(database, device, ts=ts, notify=False)
    database.sql("SELECT pg_notify('telemetry_inserted', json_build_object('from', "
                 "'1970-01-01T00:00:00Z'::timestamptz, 'to', '2100-01-01T00:00:00Z'"
                 "::timestamptz, 'rows', 3)::text)")
    assert wait_until(lambda: alerted(database, "dev-ok"), timeout=10) is not None
    polls = json.loads(evaluator.get("/health").body)["polls"]
    assert wait_until(lambda: json.loads(evaluator.get("/health").body)["polls"] >= polls + 3,
                      timeout=10) is not None
    # Only the good reading alerted: the skewed ones are outside [now - 1 day, now + 300 s],
    # and the notified 1970..2100 range did not reach rows stored before the position.
    assert database.sql("SELECT string_agg(device_id, ',') FROM alerts") == "dev-ok"


def test_evaluator_position_is_written_with_each_poll(launch, database):
    evaluator = launch("evaluator_iot", service_env(database, None, POLL_INTERVAL_SECONDS="0.5"))
    evaluator.wait_ready()
    assert wait_until(lambda: database.count("evaluator_position") == 1, timeout=10) is not None
    first = database.sql("SELECT polled_to FROM evaluator_position")
    assert wait_until(lambda: database.sql("SELECT polled_to FROM evaluator_position") != first,
                      timeout=10) is not None
    lag = float(database.sql("SELECT extract(epoch FROM now() - polled_to) "
                             "FROM evaluator_position"))
    assert lag < 5
