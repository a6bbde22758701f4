"""What the four other services do, against real PostgreSQL (and NATS where they use it)."""

import asyncio
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import nats
import pytest
from iot_tools.feed import publish_readings
from iot_tools.servers import free_port
from iot_tools.services import wait_until

from services.common.messaging import ROUTES, ensure_stream

from .conftest import service_env

# -- evaluator_iot -----------------------------------------------------------------------


def recent_minute(minutes_ago: int = 10) -> datetime:
    """A minute boundary shortly before now: readings must fall inside the evaluator's time
    window (EVALUATION_MAX_AGE_SECONDS), so tests cannot use fixed dates."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(minutes=minutes_ago)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def insert_reading(db, device: str, ts: str, temperature: float, notify: bool = False) -> None:
    """A row as ingest writes it; with notify, also the notification ingest sends."""
    db.sql(f"INSERT INTO telemetry (device_id, ts, metrics) VALUES "
           f"('{device}', '{ts}', '{{\"temperature\": {temperature}}}')")
    if notify:
        db.sql(f"""SELECT pg_notify('telemetry_inserted', json_build_object(
                   'from', '{ts}'::timestamptz, 'to', '{ts}'::timestamptz, 'rows', 1)::text)""")


def add_rule(db, threshold: float = 30, window_seconds: int = 60, operator: str = ">") -> None:
    db.sql(f"INSERT INTO alert_rules (name, metric, operator, threshold, window_seconds) "
           f"VALUES ('too hot', 'temperature', '{operator}', {threshold}, {window_seconds})")


def test_evaluator_raises_one_alert_per_rule_device_and_window_from_notifications(
        launch, database):
    add_rule(database, threshold=30, window_seconds=60)
    # Poll only hourly: alerts within seconds prove the LISTEN path.
    evaluator = launch("evaluator_iot", service_env(database, None,
                                                    POLL_INTERVAL_SECONDS="3600"))
    evaluator.wait_ready()
    time.sleep(0.5)  # the start-up catch-up poll has run
    base = recent_minute()
    for second, temperature in [(1, 35), (2, 40), (3, 25), (61, 31)]:
        insert_reading(database, "dev-a", iso(base + timedelta(seconds=second)), temperature,
                       notify=True)
    insert_reading(database, "dev-b", iso(base + timedelta(seconds=5)), 20,
                   notify=True)  # no breach
    assert wait_until(lambda: database.count("alerts") == 2, timeout=10) is not None
    rows = [row.split("|") for row in database.sql(
        "SELECT device_id, extract(epoch FROM window_start)::bigint, observed FROM alerts "
        "ORDER BY window_start").splitlines()]
    start = int(base.timestamp())
    assert [(device, int(window)) for device, window, _ in rows] == [
        ("dev-a", start), ("dev-a", start + 60)]
    # The alert keeps the breaching value its first evaluation saw (35, or 40 when the two
    # notifications were evaluated together).
    assert rows[0][2] in {"35", "40"} and rows[1][2] == "31"
    # More breaches in an alerted window add nothing.
    insert_reading(database, "dev-a", iso(base + timedelta(seconds=30)), 50, notify=True)
    time.sleep(1.5)
    assert database.count("alerts") == 2
    assert json.loads(evaluator.get("/health").body)["alerts_created"] == 2


def test_evaluator_polls_for_rows_inserted_without_a_notification(launch, database):
    add_rule(database)
    evaluator = launch("evaluator_iot", service_env(database, None,
                                                    POLL_INTERVAL_SECONDS="0.5"))
    evaluator.wait_ready()
    insert_reading(database, "dev-p", iso(recent_minute()), 99)  # no NOTIFY
    assert wait_until(lambda: database.count("alerts") == 1, timeout=10) is not None


def test_evaluator_listens_again_after_its_listener_connection_is_killed(launch, database):
    add_rule(database)
    evaluator = launch("evaluator_iot", service_env(database, None,
                                                    POLL_INTERVAL_SECONDS="3600"))
    evaluator.wait_ready()
    database.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE application_name = 'evaluator_iot-listener'")
    assert evaluator.wait_status("/ready", 503, timeout=5) is not None
    assert json.loads(evaluator.get("/ready").body)["checks"]["listener"]["status"] == "fail"
    assert evaluator.wait_status("/ready", 200, timeout=15) is not None
    assert evaluator.status("/health") == 200
    insert_reading(database, "dev-l", iso(recent_minute()), 99, notify=True)
    assert wait_until(lambda: database.count("alerts") == 1, timeout=10) is not None


# -- ops_worker -----------------------------------------------------------------------------


def test_ops_worker_marks_silent_devices_offline_and_prunes_expired_telemetry(launch,
                                                                              database):
    database.sql("INSERT INTO devices (device_id, status, last_seen) VALUES "
                 "('quiet', 'online', now() - interval '1 hour'), ('chatty', 'online', now())")
    database.sql("INSERT INTO telemetry (device_id, ts, metrics) SELECT 'old', "
                 "now() - interval '40 days' - make_interval(secs => g), '{\"t\": 1}' "
                 "FROM generate_series(1, 2500) g")
    database.sql("INSERT INTO telemetry (device_id, ts, metrics) "
                 "VALUES ('new', now() - interval '1 day', '{\"t\": 1}')")
    ops = launch("ops_worker", service_env(
        database, None, OFFLINE_AFTER_SECONDS="600", RETENTION_DAYS="30",
        MAINTENANCE_INTERVAL_SECONDS="0.5", PRUNE_BATCH_ROWS="1000"))
    ops.wait_ready()
    assert wait_until(lambda: database.count("telemetry") == 1, timeout=10) is not None
    assert database.sql("SELECT device_id FROM telemetry") == "new"
    assert database.sql("SELECT device_id, status FROM devices ORDER BY 1").splitlines() == [
        "chatty|online", "quiet|offline"]
    health = json.loads(ops.get("/health").body)
    assert health["devices_marked_offline"] == 1 and health["telemetry_pruned"] == 2500


def test_two_ops_workers_never_run_a_pass_at_the_same_time(launch, database):
    env = service_env(database, None, MAINTENANCE_INTERVAL_SECONDS="0.2")
    workers = [launch("ops_worker", env) for _ in range(2)]
    for worker in workers:
        worker.wait_ready()
    # Hold the maintenance lock from outside: neither may run while it is held.
    holder = threading.Thread(target=database.sql, args=(
        "SELECT pg_advisory_lock(7400002), pg_sleep(2), pg_advisory_unlock(7400002)",))
    def passes() -> int:
        return sum(json.loads(w.get("/health").body)["maintenance_passes"] for w in workers)

    holder.start()
    time.sleep(0.5)
    during_start = passes()
    time.sleep(1.2)
    during_end = passes()
    holder.join()
    assert during_start == during_end  # five intervals, and neither ran a pass
    # ...because of the lock: released, passes resume.
    assert wait_until(lambda: passes() > during_end, timeout=5) is not None


# -- route_delivery ---------------------------------------------------------------------------


class Webhook:
    """A local HTTP endpoint that records POSTs and fails the first `failures` of them."""

    def __init__(self, failures: int = 0, status: int = 500) -> None:
        self.received: list[dict] = []
        self.attempts = 0
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                webhook.attempts += 1
                if webhook.attempts <= failures:
                    self.send_response(status)
                else:
                    webhook.received.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def close(self) -> None:
        self._server.shutdown()


@pytest.fixture
def webhook_factory():
    hooks: list[Webhook] = []

    def make(**kwargs) -> Webhook:
        hooks.append(Webhook(**kwargs))
        return hooks[-1]

    yield make
    for hook in hooks:
        hook.close()


def test_readings_of_a_routed_device_reach_its_webhook_through_ingest_and_route_delivery(
        launch, database, nats_server, webhook_factory):
    hook = webhook_factory()
    database.sql(f"INSERT INTO message_routes (device_id, webhook_url) "
                 f"VALUES ('dev-0001', '{hook.url}')")
    env = service_env(database, nats_server, ROUTES_REFRESH_SECONDS="0.2")
    for name in ("ingest_iot", "route_delivery"):
        launch(name, env).wait_ready()
    time.sleep(0.5)  # ingest has read the routes
    publish_readings(nats_server.url, range(40), devices=4)  # 10 readings per device
    assert wait_until(lambda: len(hook.received) == 10, timeout=20) is not None
    time.sleep(0.5)
    assert len(hook.received) == 10  # no duplicates
    assert {body["device_id"] for body in hook.received} == {"dev-0001"}
    assert all(body["metrics"]["temperature"] >= 20 for body in hook.received)


def route_message(route_id: int, device: str = "dev-r") -> bytes:
    return json.dumps({"route_id": route_id, "device_id": device,
                       "ts": "2026-01-01T00:00:00Z", "metrics": {"t": 1}}).encode()


def publish_route(nats_url: str, payload: bytes) -> None:
    async def send() -> None:
        connection = await nats.connect(nats_url)
        js = connection.jetstream()
        await ensure_stream(js, ROUTES)
        await js.publish("routes.dev-r", payload)
        await connection.close()

    asyncio.run(send())


def test_a_failing_webhook_is_retried_with_backoff_until_it_succeeds(
        launch, database, nats_server, webhook_factory):
    hook = webhook_factory(failures=2)
    route_id = database.sql(f"INSERT INTO message_routes (device_id, webhook_url) "
                            f"VALUES ('dev-r', '{hook.url}') RETURNING id").splitlines()[0]
    service = launch("route_delivery", service_env(
        database, nats_server, MAX_ATTEMPTS="5", RETRY_BACKOFF_SECONDS="0.2"))
    service.wait_ready()
    publish_route(nats_server.url, route_message(int(route_id)))
    assert wait_until(lambda: len(hook.received) == 1, timeout=15) is not None
    assert hook.attempts == 3
    health = json.loads(service.get("/health").body)
    assert (health["delivered"], health["failed"], health["retries"]) == (1, 0, 2)
    assert database.count("dead_letters") == 0


def test_a_webhook_failing_every_attempt_becomes_one_dead_letter(
        launch, database, nats_server, webhook_factory):
    hook = webhook_factory(failures=1000, status=503)
    route_id = database.sql(f"INSERT INTO message_routes (device_id, webhook_url) "
                            f"VALUES ('dev-r', '{hook.url}') RETURNING id").splitlines()[0]
    service = launch("route_delivery", service_env(
        database, nats_server, MAX_ATTEMPTS="3", RETRY_BACKOFF_SECONDS="0.1"))
    service.wait_ready()
    publish_route(nats_server.url, route_message(int(route_id)))
    assert wait_until(lambda: database.count("dead_letters") == 1, timeout=15) is not None
    time.sleep(1)
    assert hook.attempts == 3
    assert database.sql("SELECT attempts, last_error FROM dead_letters") == "3|HTTP 503"
    health = json.loads(service.get("/health").body)
    assert (health["delivered"], health["failed"]) == (0, 1)
    assert service.status("/ready") == 200


# -- ui_iot ----------------------------------------------------------------------------------


def test_ui_serves_devices_telemetry_alerts_and_an_escaped_page(launch, database):
    database.sql("INSERT INTO devices (device_id, status) VALUES ('dev-<b>', 'online')")
    insert_reading(database, "dev-<b>", "2026-06-01T00:00:00Z", 42)
    add_rule(database)
    database.sql("INSERT INTO alerts (rule_id, device_id, window_start, observed) "
                 "SELECT id, 'dev-<b>', '2026-06-01T00:00:00Z', 42 FROM alert_rules")
    ui = launch("ui_iot", service_env(database, None))
    ui.wait_ready()
    devices = json.loads(ui.get("/api/devices").body)
    assert [d["device_id"] for d in devices] == ["dev-<b>"]
    telemetry = json.loads(ui.get("/api/devices/dev-%3Cb%3E/telemetry").body)
    assert telemetry[0]["metrics"] == {"temperature": 42}
    alerts = json.loads(ui.get("/api/alerts").body)
    assert alerts[0]["rule"] == "too hot" and alerts[0]["observed"] == 42
    page = ui.get("/")
    assert page.status == 200
    # The page carries no data: its script reads the API and writes cells as text
    # (test_ui_auth.py runs it in a real browser).
    assert "dev-&lt;b&gt;" not in page.body and "dev-<b>" not in page.body
    assert ui.status("/api/devices?limit=0") == 422


def test_ui_api_answers_503_while_the_database_is_down(launch, private_postgres):
    ui = launch("ui_iot", service_env(private_postgres, None, QUERY_TIMEOUT_SECONDS="1"))
    ui.wait_ready()
    private_postgres.server.stop()
    answer = ui.get("/api/devices", timeout=10)
    assert answer.status == 503
    assert json.loads(answer.body) == {"detail": "database unavailable"}
    private_postgres.server.start()
    assert wait_until(lambda: ui.status("/api/devices") == 200, timeout=20) is not None
