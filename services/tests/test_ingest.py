"""ingest_iot against real JetStream and PostgreSQL: nothing accepted is lost, nothing is
stored twice, whatever stops or restarts under sustained ingest."""

import asyncio
import json
import signal
import time

import nats
import pytest
from iot_tools.feed import SteadyFeed, publish_batch, publish_readings, reading
from iot_tools.services import wait_until
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.common.messaging import TELEMETRY, ensure_stream

from .conftest import service_env

FEED_RATE = 400  # readings per second: sustained, and leaves the 2 cores room for faults
# Inside ingest's timestamp window (an old one would be quarantined as ts_out_of_range).
RECENT_TS = reading(0)["ts"]


def stored_exactly_once(db, expected: int, timeout: float = 60) -> None:
    """Every published reading ends up in telemetry once (the feed only sends valid ones)."""
    waited = wait_until(lambda: db.count("telemetry") >= expected, timeout, interval=0.25)
    assert waited is not None, f"only {db.count('telemetry')} of {expected} rows"
    time.sleep(1)  # anything still arriving would be a duplicate or a stray
    assert db.count("telemetry") == expected
    assert db.count("quarantine") == 0


def test_published_readings_are_stored_once_with_devices_and_counters(launch, database,
                                                                      nats_server):
    service = launch("ingest_iot", service_env(database, nats_server))
    service.wait_ready()
    documents = [reading(i, devices=7) for i in range(3000)]
    payloads = [(f"telemetry.{doc['device_id']}", json.dumps(doc).encode())
                for doc in documents]
    asyncio.run(publish_batch(nats_server.url, payloads))
    stored_exactly_once(database, 3000)
    assert database.count("devices", "status = 'online'") == 7
    health = json.loads(service.get("/health").body)
    assert health["ingested"] == 3000 and health["quarantined"] == 0


def test_malformed_telemetry_is_quarantined_with_its_reason_and_the_service_stays_ready(
        launch, database, nats_server):
    service = launch("ingest_iot", service_env(database, nats_server,
                                               MAX_PAYLOAD_BYTES="1024"))
    service.wait_ready()
    good = json.dumps(reading(1)).encode()
    bad = {
        "invalid_json": b"{not json",
        "not_an_object": b"[1,2,3]",
        "missing_device_id": json.dumps({"ts": RECENT_TS,
                                         "metrics": {"t": 1}}).encode(),
        "invalid_ts": json.dumps({"device_id": "d", "ts": "noon",
                                  "metrics": {"t": 1}}).encode(),
        "invalid_metrics": json.dumps({"device_id": "d", "ts": RECENT_TS,
                                       "metrics": {"t": "hot"}}).encode(),
        "payload_too_large": json.dumps({"device_id": "d", "ts": RECENT_TS,
                                         "metrics": {"t": 1}, "pad": "x" * 2000}).encode(),
    }
    asyncio.run(publish_batch(nats_server.url, [(f"telemetry.{reading(1)['device_id']}", good)]
                              + [("telemetry.bad", payload) for payload in bad.values()]))
    assert wait_until(lambda: database.count("quarantine") == len(bad), 20) is not None
    reasons = set(database.sql("SELECT reason FROM quarantine").split())
    assert reasons == set(bad)
    sizes = database.sql(
        "SELECT payload_size, length(payload) FROM quarantine WHERE reason = 'payload_too_large'")
    size, kept = (int(part) for part in sizes.split("|"))
    assert size > 2000 and kept == 1024  # the original size is recorded, the payload capped
    assert database.count("telemetry") == 1
    assert service.status("/ready") == 200
    assert json.loads(service.get("/health").body)["quarantined"] == len(bad)


@pytest.mark.slow
def test_sigterm_during_sustained_ingest_commits_and_acks_in_flight_work(launch, database,
                                                                         nats_server):
    env = service_env(database, nats_server)
    first = launch("ingest_iot", env)
    first.wait_ready()
    with SteadyFeed(nats_server.url, rate=FEED_RATE) as feed:
        time.sleep(3)
        first.send(signal.SIGTERM)
        assert first.wait_status("/ready", 503, timeout=2) is not None
        assert first.process.wait(30) == 0
        assert "stopped cleanly" in first.log_text()
        replacement = launch("ingest_iot", env)
        replacement.wait_ready()
        time.sleep(2)
    stored_exactly_once(database, feed.published)


@pytest.mark.slow
def test_nats_restart_during_sustained_ingest_loses_and_duplicates_nothing(launch, database,
                                                                           nats_server):
    service = launch("ingest_iot", service_env(database, nats_server))
    service.wait_ready()
    with SteadyFeed(nats_server.url, rate=FEED_RATE) as feed:
        time.sleep(2)
        nats_server.kill()
        time.sleep(2)
        nats_server.start()
        assert service.wait_status("/ready", 200, timeout=20) is not None
        time.sleep(2)
    assert feed.retries > 0  # the outage really interrupted publishing
    stored_exactly_once(database, feed.published)
    assert service.returncode() is None


@pytest.mark.slow
def test_postgres_restart_during_sustained_ingest_loses_and_duplicates_nothing(
        launch, private_postgres, nats_server):
    service = launch("ingest_iot", service_env(private_postgres, nats_server))
    service.wait_ready()
    with SteadyFeed(nats_server.url, rate=FEED_RATE) as feed:
        time.sleep(2)
        private_postgres.server.stop(mode="kill")
        assert service.wait_status("/ready", 503, timeout=5) is not None
        time.sleep(2)
        private_postgres.server.start()
        assert service.wait_status("/ready", 200, timeout=20) is not None
        time.sleep(2)
    stored_exactly_once(private_postgres, feed.published)
    assert service.returncode() is None


def test_ingest_consumes_through_a_durable_whose_fixed_settings_differ(launch, database,
                                                                      nats_server):
    """A durable left by another version with a deliver policy the server cannot change in
    place: ingest must use it as it is, not stay NotReady retrying forever."""

    async def create_old_durable() -> None:
        connection = await nats.connect(nats_server.url)
        js = connection.jetstream()
        await ensure_stream(js, TELEMETRY)
        await js.add_consumer("TELEMETRY", ConsumerConfig(
            durable_name="ingest", ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.NEW))
        await connection.close()

    asyncio.run(create_old_durable())
    service = launch("ingest_iot", service_env(database, nats_server))
    service.wait_ready()
    assert ("TELEMETRY/ingest differs from this service's settings, left as it is"
            in service.log_text())
    assert "deliver_policy=" in service.log_text(), service.log_text()
    publish_readings(nats_server.url, range(100))
    stored_exactly_once(database, 100)
