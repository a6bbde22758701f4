"""/metrics on every service's health port: Prometheus text that prometheus_client's own
parser reads, gauges that follow the real dependencies (real NATS and PostgreSQL killed or
stopped), counters that match what the services did, and a scrape that does no I/O."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Iterator

import pytest
from iot_tools.feed import publish_batch, publish_readings, reading
from iot_tools.services import SERVICES, wait_until
from prometheus_client.parser import text_string_to_metric_families

from services.common.health import HealthState
from services.ingest_iot.pipeline import BATCH_SIZE_BUCKETS, GROUPED_BATCHES

from .conftest import service_env
from .test_route_delivery import Webhooks, add_route, publish

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, keyed by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def scrape(service) -> Samples:
    answer = service.get("/metrics")
    assert answer.status == 200, answer.body
    return parse(answer.body)


def wait_metric(service, name: str, expected: float, timeout: float, **labels: str) -> float:
    """Seconds until the sample reads `expected`; fails the test if it never does."""
    took = wait_until(lambda: value(scrape(service), name, **labels) == expected, timeout,
                      interval=0.1)
    last = value(scrape(service), name, **labels)
    assert took is not None, f"{name}{labels} is {last}, not {expected}"
    return took


@pytest.fixture
def webhooks() -> Iterator[Webhooks]:
    servers = Webhooks()
    yield servers
    servers.close()


# -- every service ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVICES)
def test_metrics_parse_and_show_the_service_ready(name, launch, database, nats_server):
    service = launch(name, service_env(database, nats_server))
    service.wait_ready()
    samples = scrape(service)
    assert value(samples, "iot_service_info", service=name) == 1
    assert value(samples, "iot_ready") == 1
    assert value(samples, "iot_readiness_check", check="database") == 1
    assert value(samples, "iot_live") == 1
    for check in ("event_loop", "critical_tasks", "worker_progress"):
        assert value(samples, "iot_liveness_check", check=check) == 1


@pytest.mark.parametrize("name", SERVICES)
def test_metrics_are_served_as_prometheus_text_0_0_4(name, launch, database, nats_server):
    service = launch(name, service_env(database, nats_server))
    service.wait_ready()
    content_type = _content_type(service.port, "/metrics")
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"


def _content_type(port: int, path: str) -> str:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.getheader("Content-Type", "")
    finally:
        connection.close()


# -- readiness follows the real dependencies ----------------------------------------------------


@pytest.mark.parametrize("name", ["ingest_iot", "route_delivery"])
def test_nats_readiness_gauge_drops_to_0_when_nats_is_killed(name, launch, database,
                                                              nats_server):
    service = launch(name, service_env(database, nats_server))
    service.wait_ready()
    nats_server.kill()
    wait_metric(service, "iot_readiness_check", 0, timeout=10, check="nats")
    samples = scrape(service)
    assert value(samples, "iot_ready") == 0
    assert value(samples, "iot_readiness_check", check="database") == 1


@pytest.mark.parametrize("name", ["ingest_iot", "route_delivery"])
def test_a_nats_outage_counts_one_readiness_transition_each_way(name, launch, database,
                                                                nats_server):
    service = launch(name, service_env(database, nats_server))
    service.wait_ready()
    before = scrape(service)
    nats_server.kill()
    wait_metric(service, "iot_readiness_check", 0, timeout=10, check="nats")
    nats_server.start()
    wait_metric(service, "iot_readiness_check", 1, timeout=30, check="nats")
    after = scrape(service)
    for to in ("fail", "pass"):
        labels = {"check": "nats", "to": to}
        assert (value(after, "iot_readiness_check_transitions_total", **labels)
                - value(before, "iot_readiness_check_transitions_total", **labels)) == 1


def test_database_readiness_gauge_drops_to_0_and_back_with_postgresql(launch, private_postgres,
                                                                      nats_server):
    service = launch("ops_worker", service_env(private_postgres, nats_server))
    service.wait_ready()
    before = scrape(service)
    private_postgres.server.stop()
    wait_metric(service, "iot_readiness_check", 0, timeout=15, check="database")
    assert value(scrape(service), "iot_ready") == 0
    private_postgres.server.start()
    wait_metric(service, "iot_readiness_check", 1, timeout=30, check="database")
    after = scrape(service)
    for to in ("fail", "pass"):  # exactly one outage, seen once each way
        labels = {"check": "database", "to": to}
        assert (value(after, "iot_readiness_check_transitions_total", **labels)
                - value(before, "iot_readiness_check_transitions_total", **labels)) == 1


def test_metrics_name_no_secret_and_no_failure_detail(launch, private_postgres, nats_server):
    password = private_postgres.server.password
    service = launch("ingest_iot", service_env(private_postgres, nats_server))
    service.wait_ready()
    private_postgres.server.stop()
    wait_metric(service, "iot_readiness_check", 0, timeout=15, check="database")
    body = service.get("/metrics").body
    assert password not in body
    assert "postgresql://" not in body and "127.0.0.1" not in body
    assert str(private_postgres.server.port) not in body


def test_an_event_loop_stall_shows_as_a_liveness_transition_afterwards(launch, database,
                                                                      nats_server):
    service = launch("ops_worker", service_env(
        database, nats_server, IOT_TEST_HOOKS="1", IOT_TEST_BLOCK_SECONDS="2",
        LIVENESS_STALL_SECONDS="1"))
    service.wait_ready()
    service.send(signal.SIGUSR1)  # the loop blocks for 2 s, over the 1 s stall threshold
    time.sleep(3)  # nothing answers meanwhile, /metrics included
    wait_metric(service, "iot_liveness_check_transitions_total", 1, timeout=15,
                check="event_loop", to="pass")
    samples = scrape(service)
    assert value(samples, "iot_liveness_check_transitions_total", check="event_loop",
                 to="fail") == 1
    assert value(samples, "iot_liveness_check", check="event_loop") == 1


# -- each service's own counters ------------------------------------------------------------------


def test_route_delivery_counts_deliveries_by_outcome_and_times_each_request(
        launch, database, nats_server, webhooks):
    healthy = webhooks.start("ok")
    failing = webhooks.start("fail")
    healthy_route = add_route(database, healthy.url)
    failing_route = add_route(database, failing.url)
    service = launch("route_delivery", service_env(
        database, nats_server, MAX_ATTEMPTS="2", RETRY_BACKOFF_SECONDS="0.1",
        CIRCUIT_FAILURE_THRESHOLD="100"))
    service.wait_ready()
    publish(nats_server.url, [(healthy_route, f"ok-{i}") for i in range(20)]
            + [(failing_route, f"fail-{i}") for i in range(3)])
    wait_metric(service, "iot_route_deliveries_total", 3, timeout=30, outcome="failed")
    wait_metric(service, "iot_route_deliveries_total", 20, timeout=30, outcome="delivered")
    samples = scrape(service)
    assert value(samples, "iot_route_deliveries_total", outcome="retries") == 3
    assert value(samples, "iot_route_webhook_request_seconds_count", result="2xx") == 20
    assert value(samples, "iot_route_webhook_request_seconds_count", result="5xx") == 6
    assert len(failing.requests) == 6


def test_route_delivery_times_a_refused_webhook_as_an_error(launch, database, nats_server):
    route = add_route(database, Webhooks.refused())
    service = launch("route_delivery", service_env(database, nats_server, MAX_ATTEMPTS="1"))
    service.wait_ready()
    publish(nats_server.url, [(route, "refused-1")])
    wait_metric(service, "iot_route_deliveries_total", 1, timeout=30, outcome="failed")
    assert value(scrape(service), "iot_route_webhook_request_seconds_count",
                 result="error") == 1


def test_evaluator_counters_start_at_zero(launch, database, nats_server):
    service = launch("evaluator_iot", service_env(database, nats_server))
    service.wait_ready()
    samples = scrape(service)
    for counter in ("notifications", "alerts_created"):
        assert value(samples, f"iot_evaluator_{counter}_total") == 0


def test_ops_worker_counts_maintenance_passes_and_devices_marked_offline(launch, database,
                                                                        nats_server):
    database.sql("INSERT INTO devices (device_id, status, last_seen) "
                 "VALUES ('quiet', 'online', now() - interval '1 day')")
    service = launch("ops_worker", service_env(database, nats_server))
    service.wait_ready()
    wait_metric(service, "iot_ops_devices_marked_offline_total", 1, timeout=30)
    assert value(scrape(service), "iot_ops_maintenance_passes_total") >= 1


# -- a scrape does no I/O ----------------------------------------------------------------------


def test_rendering_metrics_opens_no_file_and_no_socket():
    events: list[str] = []
    recording = False

    def hook(event: str, _args: tuple) -> None:
        if recording and (event == "open" or event.startswith(("socket.", "os.", "subprocess."))):
            events.append(event)

    # Audit hooks cannot be removed: this one records only while `recording` is set.
    sys.addaudithook(hook)

    async def render() -> bytes:
        nonlocal recording
        health = HealthState("svc")
        health.dependency("database").failed("worker", "connection refused")
        health.mark_started()
        health.metrics.render()  # a first render may still import modules lazily
        recording = True
        try:
            return health.metrics.render()
        finally:
            recording = False

    body = asyncio.run(render())
    assert b'iot_readiness_check{check="database"} 0.0' in body
    assert events == []


def test_a_dead_critical_task_sets_its_liveness_gauge_to_0_and_counts_the_transition():
    async def crash() -> None:
        raise RuntimeError("a bug")

    async def scenario() -> Samples:
        health = HealthState("svc")
        health.mark_started()
        task = health.watch("worker", asyncio.create_task(crash()))
        await asyncio.wait({task})
        await asyncio.sleep(0)  # the done callback runs on the next loop iteration
        return parse(health.metrics.render().decode())

    samples = asyncio.run(scenario())
    assert value(samples, "iot_liveness_check", check="critical_tasks") == 0
    assert value(samples, "iot_live") == 0
    assert value(samples, "iot_liveness_check_transitions_total", check="critical_tasks",
                 to="fail") == 1


def test_a_scrape_answers_at_once_while_the_database_is_frozen(launch, private_postgres,
                                                               nats_server):
    service = launch("ops_worker", service_env(private_postgres, nats_server))
    service.wait_ready()
    private_postgres.server.freeze()
    try:
        started = time.monotonic()
        slowest = 0.0
        while time.monotonic() - started < 3:
            answer = service.get("/metrics")
            assert answer.status == 200
            slowest = max(slowest, answer.seconds)
        assert slowest < 1.0  # generous for a loaded 2-core machine; the bench has figures
    finally:
        private_postgres.server.thaw()


def test_ui_counts_api_requests_by_route_template_and_status(launch, database, nats_server):
    service = launch("ui_iot", service_env(database, nats_server))
    service.wait_ready()
    for path in ("/api/devices", "/api/devices?limit=5", "/api/devices/d1/telemetry",
                 "/api/devices/d2/telemetry", "/nowhere", "/api/devices?limit=0"):
        service.get(path)
    samples = scrape(service)
    assert value(samples, "iot_ui_requests_total", route="/api/devices", method="GET",
                 status="200") == 2
    assert value(samples, "iot_ui_requests_total", route="/api/devices/{device_id}/telemetry",
                 method="GET", status="200") == 2
    assert value(samples, "iot_ui_requests_total", route="/api/devices", method="GET",
                 status="422") == 1
    assert value(samples, "iot_ui_requests_total", route="unmatched", method="GET",
                 status="404") == 1
    assert value(samples, "iot_ui_request_seconds_count", route="/api/devices") == 3
    # Probes and scrapes are not API traffic.
    assert not any(labels and dict(labels).get("route") in ("/health", "/ready", "/metrics")
                   for _, labels in samples)


# -- ingest ----------------------------------------------------------------------------------------


def test_ingest_counters_match_the_rows_stored_and_quarantined(launch, database, nats_server):
    service = launch("ingest_iot", service_env(database, nats_server))
    service.wait_ready()
    documents = [reading(i, devices=7) for i in range(1200)]
    payloads = [(f"telemetry.{doc['device_id']}", json.dumps(doc).encode())
                for doc in documents]
    payloads += [("telemetry.bad", b"{not json")] * 3 + [("telemetry.bad", b"[1]")] * 2
    asyncio.run(publish_batch(nats_server.url, payloads))
    assert wait_until(lambda: database.count("quarantine") == 5, 30) is not None
    wait_metric(service, "iot_ingest_messages_total", 1200, timeout=30, outcome="stored")
    samples = scrape(service)
    assert database.count("telemetry") == 1200
    assert value(samples, "iot_ingest_messages_total", outcome="quarantined") == 5
    assert value(samples, "iot_ingest_messages_total", outcome="duplicate") == 0
    assert value(samples, "iot_ingest_rejected_total", reason="invalid_json") == 3
    assert value(samples, "iot_ingest_rejected_total", reason="not_an_object") == 2


def test_ingest_histograms_count_every_batch_and_its_messages(launch, database, nats_server):
    service = launch("ingest_iot", service_env(database, nats_server, BATCH_SIZE="100"))
    service.wait_ready()
    publish_readings(nats_server.url, range(1000))
    wait_metric(service, "iot_ingest_messages_total", 1000, timeout=30, outcome="stored")
    samples = scrape(service)
    batches = value(samples, "iot_ingest_batches_total")
    # A commit carries at most GROUPED_BATCHES batches of BATCH_SIZE messages.
    largest = GROUPED_BATCHES * 100
    assert batches >= 1000 / largest
    assert value(samples, "iot_ingest_batch_size_messages_count") == batches
    assert value(samples, "iot_ingest_batch_size_messages_sum") == 1000
    bucket = min(bound for bound in BATCH_SIZE_BUCKETS if bound >= largest)
    assert value(samples, "iot_ingest_batch_size_messages_bucket", le=f"{bucket}.0") == batches
    assert value(samples, "iot_ingest_commit_seconds_count") == batches
    assert value(samples, "iot_ingest_commit_seconds_sum") > 0


# -- consumer lag ----------------------------------------------------------------------------------


def test_consumer_lag_shows_the_backlog_and_drains_to_zero(launch, private_postgres,
                                                          nats_server):
    # Ten messages in flight at most; with the database down none is acked, so the rest wait
    # in the stream: they are the lag.
    service = launch("ingest_iot", service_env(private_postgres, nats_server, BATCH_SIZE="10",
                                               MAX_ACK_PENDING="10"))
    service.wait_ready()
    private_postgres.server.stop()
    publish_readings(nats_server.url, range(500))
    took = wait_until(lambda: (value(scrape(service), "iot_consumer_pending_messages",
                                     stream="TELEMETRY", consumer="ingest") or 0) >= 490, 15)
    assert took is not None, scrape(service)
    assert value(scrape(service), "iot_consumer_ack_pending_messages", stream="TELEMETRY",
                 consumer="ingest") <= 10
    private_postgres.server.start()
    wait_metric(service, "iot_consumer_pending_messages", 0, timeout=60, stream="TELEMETRY",
                consumer="ingest")
    wait_metric(service, "iot_consumer_ack_pending_messages", 0, timeout=30, stream="TELEMETRY",
                consumer="ingest")


def test_consumer_lag_is_not_fetched_on_scrape(launch, database, nats_server):
    service = launch("route_delivery", service_env(database, nats_server))
    service.wait_ready()
    labels = {"stream": "ROUTES", "consumer": "route-delivery"}
    assert value(scrape(service), "iot_consumer_info_age_seconds", **labels) < 5
    nats_server.freeze()
    try:
        time.sleep(4)  # two periodic checks go unanswered
        answer = service.get("/metrics")
        assert answer.status == 200 and answer.seconds < 1.0
        assert value(parse(answer.body), "iot_consumer_info_age_seconds", **labels) > 3
    finally:
        nats_server.thaw()
