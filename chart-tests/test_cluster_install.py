"""The chart installed, tested, upgraded, rolled back and uninstalled on a real single-node
Kubernetes (the `cluster` fixture: iot_tools.cluster, the images iot_tools.images builds), with
Helm 3 and with Helm 4, each on its own release and namespace.

Readiness here is the real kubelet's: its startup, liveness and readiness probes against the
services' real /health and /ready, NATS's and PostgreSQL's real servers. The upgrade changes a
probe value of the five services and rolls each Deployment through the real Deployment
controller (maxUnavailable 0) while requests go to ui-iot through its Service and telemetry is
published to NATS through its Service: none of the requests may fail and every reading
JetStream acknowledged must end up stored once.

EMQX is switched off: no EMQX source is reachable from here to build its image (README, "Run
it on a real Kubernetes here"). Telemetry enters at NATS, as the EMQX bridge would publish it.

Measured figures (install-to-Ready, upgrade and rollback times, request and reading counts)
are written to test-artifacts/cluster-install-h<major>.json.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from iot_tools import helm, images
from iot_tools.cluster import Cluster

RELEASE = "iot"
# The chart on the images built here (pullPolicy Never).
LOCAL_VALUES = helm.REPO_ROOT / "scripts" / "iot_tools" / "images" / "values-local.yaml"
MQTT_CLIENT = helm.REPO_ROOT / "scripts" / "iot_tools" / "mqtt.py"
SERVICES = ("ingest", "evaluator", "ui-iot", "ops-worker", "route-delivery")
# The values key of each service (probes.<kind> overrides live under it).
VALUES_KEY = {"ingest": "ingest", "evaluator": "evaluator", "ui-iot": "uiIot",
              "ops-worker": "opsWorker", "route-delivery": "routeDelivery"}
GENERATED_SECRETS = ("iot-postgresql", "iot-keycloak", "iot-nats", "iot-postgresql-roles")
INSTALL_TIMEOUT = 900
ARTIFACTS = helm.REPO_ROOT / "test-artifacts"
# The upgrade: every service's readiness period goes from the default to this.
UPGRADED_PERIOD = 7


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"{what} did not happen within {timeout} s")


@dataclass
class Release:
    """One release of the chart on the cluster, and what the tests measured of it."""

    cluster: Cluster
    major: int
    namespace: str
    figures: dict[str, Any] = field(default_factory=dict)

    def helm(self, *args: str, timeout: float = INSTALL_TIMEOUT + 60) -> helm.HelmResult:
        return helm.run_helm(self.major, *args, "--namespace", self.namespace,
                             "--kubeconfig", str(self.cluster.kubeconfig), timeout=timeout)

    def get(self, path: str) -> dict:
        status, body = self.cluster.request("GET", path)
        assert status == 200, (path, status, body)
        return body

    def pods(self) -> list[dict]:
        return self.get(f"/api/v1/namespaces/{self.namespace}/pods")["items"]

    def deployment(self, component: str) -> dict:
        return self.get(f"/apis/apps/v1/namespaces/{self.namespace}/deployments/"
                        f"{RELEASE}-{component}")

    def secret(self, name: str) -> dict[str, str] | None:
        status, body = self.cluster.request(
            "GET", f"/api/v1/namespaces/{self.namespace}/secrets/{name}")
        return body["data"] if status == 200 else None

    def cluster_ip(self, service: str) -> str:
        return self.get(f"/api/v1/namespaces/{self.namespace}/services/{service}")[
            "spec"]["clusterIP"]

    def readiness_periods(self) -> dict[str, int]:
        return {component: helm.main_container(self.deployment(component))[
                    "readinessProbe"]["periodSeconds"] for component in SERVICES}

    def save_figures(self) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"cluster-install-h{self.major}.json"
        path.write_text(json.dumps(self.figures, indent=2) + "\n")


def is_ready(pod: dict) -> bool:
    return any(condition["type"] == "Ready" and condition["status"] == "True"
               for condition in pod.get("status", {}).get("conditions", []))


def restarts(pod: dict) -> int:
    return sum(status.get("restartCount", 0)
               for status in pod.get("status", {}).get("containerStatuses", []))


def describe(pods: list[dict]) -> str:
    return "; ".join(
        f"{pod['metadata']['name']} {pod['status'].get('phase')} ready={is_ready(pod)} "
        f"restarts={restarts(pod)}" for pod in pods)


@pytest.fixture(scope="module", params=[3, 4], ids=["helm3", "helm4"])
def release(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[Release]:
    """`helm install --wait` of the chart on the local images, EMQX off; uninstalled at the
    end whatever the tests found."""
    installed = Release(cluster, request.param, f"install-h{request.param}")
    started = time.monotonic()
    result = installed.helm(
        "install", RELEASE, str(helm.CHART_DIR), "--create-namespace",
        "-f", str(LOCAL_VALUES), "--set", "emqx.enabled=false",
        "--wait", "--timeout", f"{INSTALL_TIMEOUT}s")
    installed.figures["install_to_ready_seconds"] = round(time.monotonic() - started, 1)
    assert result.returncode == 0, (result.stderr[-3000:], describe(installed.pods()))
    try:
        yield installed
    finally:
        installed.save_figures()
        installed.helm("uninstall", RELEASE, "--wait", "--timeout", "300s")


def test_install_waits_until_every_pod_is_ready_by_the_kubelets_probes(release: Release):
    pods = release.pods()
    components = {pod["metadata"]["labels"]["app.kubernetes.io/component"] for pod in pods}
    assert components >= {*SERVICES, "nats", "postgresql", "keycloak"}, describe(pods)
    running = [pod for pod in pods if pod["status"].get("phase") == "Running"]
    assert running and all(is_ready(pod) for pod in running), describe(pods)
    release.figures["pods_ready_after_install"] = len(running)
    release.figures["restarts_during_install"] = {
        pod["metadata"]["name"]: restarts(pod) for pod in running if restarts(pod)}


def test_helm_test_pods_pass_on_the_installed_release(release: Release):
    result = release.helm("test", RELEASE, "--timeout", "300s")
    assert result.returncode == 0, result.stderr + result.stdout
    # Every test pod the chart ships ran to Succeeded (helm test fails otherwise).
    assert result.stdout.count("Succeeded") >= 3, result.stdout


# The clients of the upgrade test, run in a pod of the services image because clients of a
# Service live in the cluster (the host has no route to the Service range: the guard). It
# sends GETs of ui-iot's page through the Service (one connection each, as a browser's new
# visits) and publishes readings as EMQX's bridge does: MQTT QoS 1 to NATS's MQTT listener
# through the NATS Service, with the bridge's login; a reading counts as published once
# acknowledged (PUBACK), and one that was not is sent again. GET /stats on port 8081 reports;
# POST /stop ends both loops first. The MQTT client is iot_tools.mqtt's source, prepended.
CLIENTS_SCRIPT = r"""
import json, os, threading, time, urllib.request
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

stats = {"requests_ok": 0, "requests_failed": 0, "failures": [], "published": 0,
         "publish_retries": 0}
stop = threading.Event()
done = threading.Event()


def requests_loop():
    url = os.environ["UI_URL"]
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                answer.read()
            stats["requests_ok"] += 1
        except Exception as error:
            stats["requests_failed"] += 1
            if len(stats["failures"]) < 50:
                stats["failures"].append(f"{time.strftime('%X')} {error}"[:300])
        time.sleep(0.02)


def feed():
    client, index = None, 0
    epoch = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    while not stop.is_set():
        device = f"upgrade-{index % 20:02d}"
        ts = (epoch + timedelta(milliseconds=index)).isoformat().replace("+00:00", "Z")
        body = json.dumps({"device_id": device, "ts": ts,
                           "metrics": {"temperature": 20 + index % 10}}).encode()
        while True:
            try:
                if client is None:
                    client = MqttClient.connect(
                        1883, "upgrade-clients", "emqx-bridge", os.environ["MQTT_PASSWORD"],
                        host=os.environ["NATS_HOST"])
                    if client.return_code != ACCEPTED:
                        raise MqttError(f"CONNACK {client.return_code}")
                client.publish(f"telemetry/{device}", body, packet_id=index % 65535 + 1)
                break
            except (OSError, MqttError) as error:
                stats["publish_retries"] += 1
                if len(stats["failures"]) < 50:
                    stats["failures"].append(f"publish: {error}"[:300])
                if client is not None:
                    client.close()
                client = None
                time.sleep(0.1)
        index += 1
        stats["published"] = index
        time.sleep(0.02)
    if client is not None:
        client.close()


class Stats(BaseHTTPRequestHandler):
    def do_GET(self):
        self.answer()

    def do_POST(self):
        stop.set()
        done.wait(60)
        self.answer()

    def answer(self):
        body = json.dumps(stats).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def run():
    requests = threading.Thread(target=requests_loop)
    requests.start()
    feed()
    requests.join()
    done.set()


threading.Thread(target=run, daemon=True).start()
ThreadingHTTPServer(("0.0.0.0", 8081), Stats).serve_forever()
"""


@dataclass
class Clients:
    """The clients pod, seen from the host through its pod IP."""

    release: Release
    pod_ip: str = ""

    def start(self) -> Clients:
        namespace = self.release.namespace
        status, answer = self.release.cluster.request(
            "POST", f"/api/v1/namespaces/{namespace}/pods", {
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "upgrade-clients"},
                "spec": {"restartPolicy": "Never", "containers": [{
                    "name": "clients", "image": images.build("services").reference,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", MQTT_CLIENT.read_text() + CLIENTS_SCRIPT],
                    "env": [
                        {"name": "UI_URL", "value": f"http://{RELEASE}-ui-iot/"},
                        {"name": "NATS_HOST", "value": f"{RELEASE}-nats"},
                        {"name": "MQTT_PASSWORD", "valueFrom": {"secretKeyRef": {
                            "name": f"{RELEASE}-nats", "key": "emqx-bridge-password"}}}],
                    "readinessProbe": {"tcpSocket": {"port": 8081}, "periodSeconds": 1}}]}})
        assert status == 201, answer
        self.pod_ip = wait_for("the clients pod Ready", lambda: (
            pod["status"]["podIP"] if is_ready(pod := self.release.get(
                f"/api/v1/namespaces/{namespace}/pods/upgrade-clients")) else None),
            timeout=120)
        wait_for("the clients served and published", lambda: (
            (now := self.stats())["requests_ok"] > 0 and now["published"] > 0), timeout=60)
        return self

    def stats(self, method: str = "GET") -> dict:
        request = urllib.request.Request(f"http://{self.pod_ip}:8081/", method=method)
        with urllib.request.urlopen(request, timeout=90) as answer:
            return json.loads(answer.read())

    def stop(self) -> dict:
        final = self.stats("POST")
        self.release.cluster.request(
            "DELETE", f"/api/v1/namespaces/{self.release.namespace}/pods/upgrade-clients")
        return final


def secret_value(release: Release, secret: str, key: str) -> str:
    data = release.secret(secret)
    assert data is not None, f"Secret {secret} missing"
    return base64.b64decode(data[key]).decode()


async def count_rows(host: str, password: str, device_prefix: str) -> int:
    connection = await asyncpg.connect(host=host, port=5432, user="iot", database="iot",
                                       password=password, timeout=10)
    try:
        return await connection.fetchval(
            "SELECT count(*) FROM telemetry WHERE device_id LIKE $1", device_prefix + "%")
    finally:
        await connection.close()


@dataclass
class Upgrade:
    """What the upgrade under load did."""

    result: helm.HelmResult
    generations_before: dict[str, int]
    clients: dict
    stored: int


@pytest.fixture(scope="module")
def upgrade(release: Release) -> Upgrade:
    """`helm upgrade --wait` changing every service's readiness period, while the clients pod
    sends requests to ui-iot and readings to NATS through their Services."""
    before = {component: release.deployment(component)["metadata"]["generation"]
              for component in SERVICES}
    sets = [argument for component in SERVICES for argument in (
        "--set", f"{VALUES_KEY[component]}.probes.readiness.periodSeconds={UPGRADED_PERIOD}")]
    clients = Clients(release).start()
    started = time.monotonic()
    result = release.helm("upgrade", RELEASE, str(helm.CHART_DIR), "--reuse-values", *sets,
                          "--wait", "--timeout", f"{INSTALL_TIMEOUT}s")
    release.figures["upgrade_seconds"] = round(time.monotonic() - started, 1)
    time.sleep(2)
    final = clients.stop()
    assert result.returncode == 0, (result.stderr[-3000:], describe(release.pods()))

    postgres = next(pod for pod in release.pods()
                    if pod["metadata"]["labels"]["app.kubernetes.io/component"] == "postgresql")
    password = secret_value(release, f"{RELEASE}-postgresql", "password")
    stored = wait_for(f"{final['published']} readings stored", lambda: (
        count if (count := asyncio.run(count_rows(
            postgres["status"]["podIP"], password, "upgrade-"))) >= final["published"]
        else None), timeout=120)
    release.figures["upgrade_clients"] = {key: final[key] for key in (
        "requests_ok", "requests_failed", "published", "publish_retries")}
    release.figures["upgrade_readings_stored"] = stored
    return Upgrade(result, before, final, stored)


def test_an_upgrade_of_a_probe_value_rolls_every_service_deployment(
        release: Release, upgrade: Upgrade):
    assert release.readiness_periods() == dict.fromkeys(SERVICES, UPGRADED_PERIOD)
    for component in SERVICES:
        deployment = release.deployment(component)
        assert deployment["metadata"]["generation"] > upgrade.generations_before[component]
        status = deployment["status"]
        assert status.get("updatedReplicas") == status.get("replicas") == status.get(
            "readyReplicas"), (component, status)


def test_the_rolling_upgrade_fails_no_request_through_the_ui_service(upgrade: Upgrade):
    assert upgrade.clients["requests_ok"] > 100, upgrade.clients
    assert upgrade.clients["requests_failed"] == 0, upgrade.clients["failures"]


def test_the_rolling_upgrade_loses_no_reading_and_stores_none_twice(upgrade: Upgrade):
    assert upgrade.clients["published"] > 100, upgrade.clients
    assert upgrade.stored == upgrade.clients["published"]


def test_rollback_restores_the_previous_probes(release: Release, upgrade: Upgrade):
    history = json.loads(release.helm("history", RELEASE, "-o", "json").stdout)
    assert [entry["revision"] for entry in history] == [1, 2], history
    assert release.readiness_periods() == dict.fromkeys(SERVICES, UPGRADED_PERIOD)
    started = time.monotonic()
    result = release.helm("rollback", RELEASE, "1", "--wait", "--timeout",
                          f"{INSTALL_TIMEOUT}s")
    release.figures["rollback_seconds"] = round(time.monotonic() - started, 1)
    assert result.returncode == 0, result.stderr[-3000:]
    defaults = helm.main_container(helm.by_kind_and_name(helm.render(
        values_files=(LOCAL_VALUES,), set_values=("emqx.enabled=false",)))[
        ("Deployment", f"{RELEASE}-ingest")])["readinessProbe"]["periodSeconds"]
    assert defaults != UPGRADED_PERIOD
    assert release.readiness_periods() == dict.fromkeys(SERVICES, defaults)
    assert all(is_ready(pod) for pod in release.pods()
               if pod["status"].get("phase") == "Running"), describe(release.pods())


def test_uninstall_leaves_no_pod_and_keeps_the_generated_secrets(release: Release):
    secrets = {name: release.secret(name) for name in GENERATED_SECRETS}
    assert all(secrets.values()), secrets.keys()
    result = release.helm("uninstall", RELEASE, "--wait", "--timeout", "300s")
    assert result.returncode == 0, result.stderr
    wait_for("every pod of the release gone", lambda: not release.pods(), timeout=180)
    for name, data in secrets.items():
        assert release.secret(name) == data, f"Secret {name} not kept"
