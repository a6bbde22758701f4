"""The cluster tests' clients: a pod of the services image that publishes telemetry the way
EMQX's bridge does and, if asked, sends requests to ui-iot — both through the release's
Services, because clients of a Service live in the cluster (the host has no route to the
Service range: the guard, by design).

Publishing: MQTT QoS 1 to NATS's MQTT listener (port 1883 of the `<release>-nats` Service) as
`emqx-bridge`, the only user allowed to publish telemetry, topic telemetry/<device> (subject
telemetry.<device>); the client is iot_tools.mqtt's source, prepended to the script. One
reading in flight: it counts as published once NATS answered PUBACK; on any failure the
client reconnects and sends the same reading again (`publish_retries`), so a reading resent
after a lost PUBACK may be in the stream twice — ingest's ON CONFLICT keeps one row.

Requests (only with `ui=True`): GET of ui-iot's page through its Service, one connection
each (as a browser's new visits); every failure is counted.

The pod serves its figures on port 8081: GET reports, POST stops both loops (the reading in
flight is still sent until acknowledged) and then answers the final figures. `ClientsPod`
starts it, reads it, stops it and counts what its devices left in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import urllib.request
from dataclasses import dataclass, field

from iot_tools import helm, images
from iot_tools.apiserver import ApiServerError
from iot_tools.cluster.pods import is_ready, wait_for
from iot_tools.cluster.runtime import Cluster

MQTT_CLIENT = helm.REPO_ROOT / "scripts" / "iot_tools" / "mqtt.py"
STATS_PORT = 8081

# Configured by env: DEVICE_PREFIX, CLIENT_ID, NATS_HOST, MQTT_PASSWORD, MQTT_TIMEOUT (s per
# connect / PUBACK), INTERVAL (s between readings, and between requests), UI_URL (requests
# on only when set). Runs after iot_tools.mqtt's source (MqttClient, MqttError, ACCEPTED).
CLIENTS_SCRIPT = r"""
import collections, json, os, threading, time, urllib.request
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = os.environ["DEVICE_PREFIX"]
INTERVAL = float(os.environ["INTERVAL"])
TIMEOUT = float(os.environ["MQTT_TIMEOUT"])
UI_URL = os.environ.get("UI_URL", "")
stats = {"published": 0, "publish_retries": 0, "connects": 0}
publish_errors = collections.deque(maxlen=10)
request_errors = collections.deque(maxlen=50)
if UI_URL:
    stats.update(requests_ok=0, requests_failed=0)
stop = threading.Event()
done = threading.Event()


def error_text(error):
    return f"{time.strftime('%X')} {type(error).__name__}: {error}"[:300]


def requests_loop():
    while not stop.is_set():
        try:
            with urllib.request.urlopen(UI_URL, timeout=5) as answer:
                answer.read()
            stats["requests_ok"] += 1
        except Exception as error:
            stats["requests_failed"] += 1
            request_errors.append(error_text(error))
        time.sleep(INTERVAL)


def publish_loop():
    client, index, packet_id = None, 0, 0
    epoch = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    while not stop.is_set():
        device = f"{PREFIX}{index % 20:02d}"
        ts = (epoch + timedelta(milliseconds=index)).isoformat().replace("+00:00", "Z")
        body = json.dumps({"device_id": device, "ts": ts,
                           "metrics": {"temperature": 20 + index % 10}}).encode()
        while True:
            try:
                if client is None:
                    client = MqttClient.connect(
                        1883, os.environ["CLIENT_ID"], "emqx-bridge",
                        os.environ["MQTT_PASSWORD"], TIMEOUT, host=os.environ["NATS_HOST"])
                    if client.return_code != ACCEPTED:
                        raise MqttError(f"CONNACK {client.return_code}")
                    stats["connects"] += 1
                packet_id = packet_id % 65535 + 1
                client.publish(f"telemetry/{device}", body, packet_id=packet_id)
                break
            except Exception as error:
                stats["publish_retries"] += 1
                publish_errors.append(error_text(error))
                if client is not None:
                    client.close()
                client = None
                time.sleep(0.2)
        index += 1
        stats["published"] = index
        time.sleep(INTERVAL)
    if client is not None:
        client.close()


def figures():
    answer = dict(stats, publish_errors=list(publish_errors))
    if UI_URL:
        answer["request_errors"] = list(request_errors)
    return answer


class Stats(BaseHTTPRequestHandler):
    def do_GET(self):
        self.answer()

    def do_POST(self):
        stop.set()
        done.wait(120)
        self.answer()

    def answer(self):
        body = json.dumps(figures()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def run():
    loops = [threading.Thread(target=publish_loop)]
    if UI_URL:
        loops.append(threading.Thread(target=requests_loop))
    for loop in loops:
        loop.start()
    for loop in loops:
        loop.join()
    done.set()


threading.Thread(target=run, daemon=True).start()
ThreadingHTTPServer(("0.0.0.0", 8081), Stats).serve_forever()
"""


class ClientsError(RuntimeError):
    pass


@dataclass
class ClientsPod:
    """The clients pod `name` in `namespace`, next to the chart's release `release`: readings
    of devices `<device_prefix>00`..`19`, 1 / `interval` a second, and with `ui` requests to
    ui-iot's Service as well. Seen from the host through its pod IP."""

    cluster: Cluster
    namespace: str
    release: str
    name: str
    device_prefix: str
    ui: bool = False
    interval: float = 0.02
    mqtt_timeout: float = 5.0
    ip: str = field(default="", init=False)

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    def manifest(self) -> dict:
        env = [
            {"name": "DEVICE_PREFIX", "value": self.device_prefix},
            {"name": "CLIENT_ID", "value": self.name},
            {"name": "INTERVAL", "value": str(self.interval)},
            {"name": "MQTT_TIMEOUT", "value": str(self.mqtt_timeout)},
            {"name": "NATS_HOST", "value": f"{self.release}-nats"},
            {"name": "MQTT_PASSWORD", "valueFrom": {"secretKeyRef": {
                "name": f"{self.release}-nats", "key": "emqx-bridge-password"}}}]
        if self.ui:
            env.append({"name": "UI_URL", "value": f"http://{self.release}-ui-iot/"})
        return {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": self.name},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "clients", "image": images.build("services").reference,
                "imagePullPolicy": "Never",
                "command": ["python", "-c", MQTT_CLIENT.read_text() + CLIENTS_SCRIPT],
                "env": env,
                "readinessProbe": {"tcpSocket": {"port": STATS_PORT}, "periodSeconds": 1}}]}}

    def start(self, timeout: float = 120) -> ClientsPod:
        """Create the pod and wait until it is Ready and has published (and, with `ui`,
        answered a request)."""
        status, answer = self.cluster.request(
            "POST", f"/api/v1/namespaces/{self.namespace}/pods", self.manifest())
        if status != 201:
            raise ClientsError(f"creating pod {self.name}: {status} {answer}")
        self.ip = wait_for(f"pod {self.name} Ready", lambda: (
            pod["status"]["podIP"] if is_ready(pod := self.cluster.get(self.path)) else None),
            timeout=timeout)
        wait_for(f"pod {self.name} published" + (" and served" if self.ui else ""), lambda: (
            (now := self.stats())["published"] > 0
            and (not self.ui or now["requests_ok"] > 0)), timeout=60)
        return self

    def stats(self, method: str = "GET") -> dict:
        request = urllib.request.Request(f"http://{self.ip}:{STATS_PORT}/", method=method)
        with urllib.request.urlopen(request, timeout=150) as answer:
            return json.loads(answer.read())

    def stop(self) -> dict:
        """Stop both loops, take the final figures and delete the pod."""
        final = self.stats("POST")
        self.delete()
        return final

    def delete(self) -> None:
        """Delete the pod at once (idempotent: for clean-up whatever happened)."""
        self.cluster.request("DELETE", f"{self.path}?gracePeriodSeconds=0")

    def stored(self) -> tuple[int, int]:
        """(rows, distinct readings) of this pod's devices in `telemetry`, read through the
        PostgreSQL pod's IP (the host has no route to its Service)."""
        import asyncpg  # the host's venv has it; the pod's script does not need it

        selector = (f"app.kubernetes.io/instance={self.release},"
                    "app.kubernetes.io/component=postgresql")
        pods = [pod for pod in self.cluster.get(f"/api/v1/namespaces/{self.namespace}/pods"
                                                f"?labelSelector={selector}")["items"]
                if pod.get("status", {}).get("podIP")]
        if not pods:
            raise ClientsError(f"no PostgreSQL pod with an IP in {self.namespace}")
        secret = self.cluster.get(f"/api/v1/namespaces/{self.namespace}/secrets/"
                                  f"{self.release}-postgresql")
        password = base64.b64decode(secret["data"]["password"]).decode()

        async def count() -> tuple[int, int]:
            connection = await asyncpg.connect(
                host=pods[0]["status"]["podIP"], port=5432, user="iot", database="iot",
                password=password, timeout=10)
            try:
                row = await connection.fetchrow(
                    "SELECT count(*), count(DISTINCT (device_id, ts)) FROM telemetry "
                    "WHERE device_id LIKE $1", self.device_prefix + "%")
                return int(row[0]), int(row[1])
            finally:
                await connection.close()

        return asyncio.run(count())

    def wait_stored(self, published: int, timeout: float = 150) -> tuple[int, int]:
        """Until `published` distinct readings are stored (a hung consumer's unacked
        messages come back after JetStream's 30 s ack wait), or the timeout: the last
        count, whichever it is (the caller compares)."""
        deadline = time.monotonic() + timeout
        rows = (0, 0)
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, asyncio.TimeoutError, ClientsError, ApiServerError):
                rows = self.stored()
                if rows[1] >= published:
                    break
            time.sleep(1)
        return rows
