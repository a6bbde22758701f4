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

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from iot_tools import helm
from iot_tools.cluster import Cluster
from iot_tools.cluster.clients import ClientsPod
from iot_tools.cluster.pods import is_ready, restart_count, wait_for

RELEASE = "iot"
# The chart on the images built here (pullPolicy Never).
LOCAL_VALUES = helm.REPO_ROOT / "scripts" / "iot_tools" / "images" / "values-local.yaml"
SERVICES = ("ingest", "evaluator", "ui-iot", "ops-worker", "route-delivery")
# The values key of each service (probes.<kind> overrides live under it).
VALUES_KEY = {"ingest": "ingest", "evaluator": "evaluator", "ui-iot": "uiIot",
              "ops-worker": "opsWorker", "route-delivery": "routeDelivery"}
GENERATED_SECRETS = ("iot-postgresql", "iot-keycloak", "iot-nats", "iot-postgresql-roles")
INSTALL_TIMEOUT = 900
ARTIFACTS = helm.REPO_ROOT / "test-artifacts"
# The upgrade: every service's readiness period goes from the default to this.
UPGRADED_PERIOD = 7


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
        return self.cluster.get(path)

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


def describe(pods: list[dict]) -> str:
    return "; ".join(
        f"{pod['metadata']['name']} {pod['status'].get('phase')} ready={is_ready(pod)} "
        f"restarts={restart_count(pod)}" for pod in pods)


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
        pod["metadata"]["name"]: restart_count(pod) for pod in running if restart_count(pod)}


def test_helm_test_pods_pass_on_the_installed_release(release: Release):
    result = release.helm("test", RELEASE, "--timeout", "300s")
    assert result.returncode == 0, result.stderr + result.stdout
    # Every test pod the chart ships ran to Succeeded (helm test fails otherwise).
    assert result.stdout.count("Succeeded") >= 3, result.stdout


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
    # The clients live in the cluster: requests to ui-iot and readings to NATS through their
    # Services (iot_tools.cluster.clients).
    clients = ClientsPod(release.cluster, release.namespace, RELEASE, "upgrade-clients",
                         "upgrade-", ui=True).start()
    started = time.monotonic()
    result = release.helm("upgrade", RELEASE, str(helm.CHART_DIR), "--reuse-values", *sets,
                          "--wait", "--timeout", f"{INSTALL_TIMEOUT}s")
    release.figures["upgrade_seconds"] = round(time.monotonic() - started, 1)
    time.sleep(2)
    final = clients.stop()
    assert result.returncode == 0, (result.stderr[-3000:], describe(release.pods()))
    stored, _distinct = clients.wait_stored(final["published"], timeout=120)
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
    assert upgrade.clients["requests_failed"] == 0, upgrade.clients["request_errors"]


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
