"""The services logged in as the NATS users the chart renders, against a real nats-server running
the chart's nats.conf (iot_tools.chart_nats): with only their own subjects, ingest and
route_delivery bind, consume and work; telemetry arrives through the bridge's MQTT login, as from
EMQX. (Each permission line, and every refusal, is checked in chart-tests/test_nats_auth.py.)"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from iot_tools import helm
from iot_tools.chart_nats import ChartNats, start_chart_nats
from iot_tools.mqtt import MqttClient
from iot_tools.servers import temp_workdir
from iot_tools.services import wait_until

from services.common.config import NatsSettings
from services.common.messaging import ROUTES_LIMITS, TELEMETRY_LIMITS
from services.migrate.nats import StreamsConfig, manage_streams

from .conftest import service_env


@pytest.fixture
def chart_nats() -> Iterator[ChartNats]:
    workdir = temp_workdir("iot-test-chart-nats-")
    server = start_chart_nats(helm.render(), workdir)
    owner = server.logins["owner"]
    asyncio.run(manage_streams(StreamsConfig(
        NatsSettings(server.url, owner.user, owner.password, inbox_prefix=owner.inbox_prefix),
        10, TELEMETRY_LIMITS, ROUTES_LIMITS)))
    yield server
    server.server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def env_as(user: str, database, nats: ChartNats, **extra: str) -> dict[str, str]:
    return service_env(database, None, NATS_URL=nats.url, **nats.logins[user].env(), **extra)


def test_ingest_as_its_nats_user_stores_what_the_bridge_publishes(launch, database, chart_nats):
    service = launch("ingest_iot", env_as("ingest", database, chart_nats))
    service.wait_ready()
    bridge = chart_nats.logins["emqx-bridge"]
    ts = datetime.now(UTC) - timedelta(minutes=1)
    for index in range(5):
        device = f"dev-{index}"
        client = MqttClient.connect(chart_nats.mqtt_port, f"bridge-{index}", bridge.user,
                                    bridge.password)
        try:
            assert client.return_code == 0
            client.publish(f"telemetry/{device}", json.dumps(
                {"device_id": device, "ts": ts.isoformat(), "metrics": {"t": index}}).encode())
        finally:
            client.close()
    assert wait_until(lambda: database.count("telemetry") == 5, 20) is not None
    assert database.count("quarantine") == 0
    assert service.status("/ready") == 200
    assert "permissions violation" not in service.log_text().lower()


def test_route_delivery_as_its_nats_user_binds_its_durable(launch, database, chart_nats):
    service = launch("route_delivery", env_as("route-delivery", database, chart_nats))
    service.wait_ready()
    assert service.status("/ready") == 200
    assert "permissions violation" not in service.log_text().lower()
