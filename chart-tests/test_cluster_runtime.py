"""The cluster runtime of `make cluster` (iot_tools.cluster): a real kubelet runs real pods on
the bridge CNI, kube-proxy programs ClusterIPs, CoreDNS answers service names, claims bind,
no packet leaves the machine, and `down` leaves nothing behind.

Checks that need a process inside a pod run a pod of the services image (python3) that
prints its finding and exits; the test reads its exit code and its log through the API
server (which itself proves the API server reaches the kubelet on the node address)."""

from __future__ import annotations

import socket
import time
import uuid
from functools import partial
from pathlib import Path

import pytest
from iot_tools import images
from iot_tools.cluster import Cluster
from iot_tools.cluster import pods as pod_readers
from iot_tools.cluster.layout import NODE_NAME
from iot_tools.cluster.pods import is_ready

NAMESPACE = "runtime-tests"
PAUSE = "localhost/iot-platform/pause:1"


# Two minutes for anything a pod does here, unless a test says otherwise.
wait_for = partial(pod_readers.wait_for, timeout=120)


@pytest.fixture(scope="module")
def namespace(cluster: Cluster) -> str:
    status, answer = cluster.request("POST", "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    assert status in {201, 409}, answer
    # Pods are refused until the controller-manager has made the default ServiceAccount.
    wait_for("default ServiceAccount", lambda: cluster.request(
        "GET", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default")[0] == 200)
    return NAMESPACE


@pytest.fixture(scope="module")
def services_image() -> str:
    return images.build("services").reference


def read_pod(cluster: Cluster, name: str) -> dict:
    status, pod = cluster.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")
    assert status == 200, pod
    return pod


def pod_status(cluster: Cluster, name: str) -> dict:
    return read_pod(cluster, name).get("status", {})


def create(cluster: Cluster, path: str, body: dict) -> None:
    status, answer = cluster.request("POST", path, body)
    assert status == 201, answer


def run_check_pod(cluster: Cluster, namespace: str, image: str, code: str) -> tuple[int, str]:
    """A pod running `python3 -c code` once: (exit code, its log)."""
    name = f"check-{uuid.uuid4().hex[:8]}"
    create(cluster, f"/api/v1/namespaces/{namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "check", "image": image, "imagePullPolicy": "Never",
            "command": ["python3", "-c", code]}]},
    })
    status = wait_for(f"pod {name} finished", lambda: (
        s if (s := pod_status(cluster, name)).get("phase") in {"Succeeded", "Failed"} else None))
    exit_code = status["containerStatuses"][0]["state"]["terminated"]["exitCode"]
    code_, log = cluster.get_text(f"/api/v1/namespaces/{namespace}/pods/{name}/log")
    assert code_ == 200, f"reading the pod's log through the API server: {log}"
    cluster.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}")
    return exit_code, log


@pytest.fixture(scope="module")
def web_service(cluster: Cluster, namespace: str, services_image: str) -> str:
    """A Deployment-less pod serving HTTP on 8080 behind Service `web` (port 80): its
    ClusterIP."""
    create(cluster, f"/api/v1/namespaces/{namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"containers": [{
            "name": "web", "image": services_image, "imagePullPolicy": "Never",
            "command": ["python3", "-m", "http.server", "8080", "--directory", "/tmp"],
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]},
    })
    create(cluster, f"/api/v1/namespaces/{namespace}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    })
    wait_for("pod web Ready", lambda: is_ready(read_pod(cluster, "web")))
    status, service = cluster.request("GET", f"/api/v1/namespaces/{namespace}/services/web")
    assert status == 200
    return service["spec"]["clusterIP"]


def test_node_is_ready_within_the_bring_up_deadline(cluster: Cluster) -> None:
    status, node = cluster.request("GET", f"/api/v1/nodes/{NODE_NAME}")
    assert status == 200
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
    assert ready == "True"
    assert cluster.timings["up_to_node_ready_seconds"] < 300


def test_pause_pod_runs_and_the_kubelet_reports_it_ready(
        cluster: Cluster, namespace: str) -> None:
    create(cluster, f"/api/v1/namespaces/{namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pause"},
        "spec": {"containers": [{"name": "pause", "image": PAUSE,
                                 "imagePullPolicy": "Never"}]},
    })
    status = wait_for("pause pod Ready", lambda: (
        pod["status"] if is_ready(pod := read_pod(cluster, "pause")) else None))
    assert status["podIP"].startswith("10.244.0.")


def test_a_pod_reaches_a_service_cluster_ip_through_kube_proxy(
        cluster: Cluster, namespace: str, services_image: str, web_service: str) -> None:
    exit_code, log = run_check_pod(cluster, namespace, services_image, (
        "import urllib.request\n"
        f"print(urllib.request.urlopen('http://{web_service}:80/', timeout=10).status)\n"))
    assert (exit_code, log.strip()) == (0, "200")


def test_a_service_name_resolves_to_its_cluster_ip_through_coredns(
        cluster: Cluster, namespace: str, services_image: str, web_service: str) -> None:
    exit_code, log = run_check_pod(cluster, namespace, services_image, (
        "import socket\n"
        f"print(socket.gethostbyname('web.{namespace}.svc.cluster.local'))\n"))
    assert (exit_code, log.strip()) == (0, web_service)


@pytest.mark.parametrize("address", [("192.0.2.1", 80), ("1.1.1.1", 53)])
def test_a_pod_connecting_outside_the_machine_is_rejected_at_once(
        cluster: Cluster, namespace: str, services_image: str,
        address: tuple[str, int]) -> None:
    # A refusal within the 10 s timeout, in well under a second: the guard's reset, not a
    # timeout or a reply from outside.
    exit_code, log = run_check_pod(cluster, namespace, services_image, (
        "import socket, time\n"
        "began = time.monotonic()\n"
        f"try:\n    socket.create_connection({address!r}, timeout=10)\n"
        "    print('connected')\n"
        "except OSError as error:\n"
        "    print(type(error).__name__, round(time.monotonic() - began, 2))\n"))
    kind, seconds = log.split()
    assert (exit_code, kind) == (0, "ConnectionRefusedError")
    assert float(seconds) < 1


def test_an_unprogrammed_cluster_ip_is_unreachable_from_the_host_at_once(
        cluster: Cluster) -> None:
    began = time.monotonic()
    with pytest.raises(OSError) as raised:
        socket.create_connection(("10.96.255.250", 80), timeout=10)
    assert "unreachable" in str(raised.value).lower() or raised.value.errno == 113
    assert time.monotonic() - began < 1


def test_a_missing_image_fails_without_reaching_a_registry(
        cluster: Cluster, namespace: str) -> None:
    create(cluster, f"/api/v1/namespaces/{namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "missing-image"},
        "spec": {"containers": [{"name": "c", "image": "docker.io/library/not-here:1"}]},
    })

    def waiting_reason() -> str | None:
        for container in pod_status(cluster, "missing-image").get("containerStatuses", []):
            waiting = container.get("state", {}).get("waiting", {})
            if waiting.get("reason") in {"ErrImagePull", "ImagePullBackOff"}:
                return waiting.get("message", "")
        return None

    message = wait_for("ErrImagePull", waiting_reason, timeout=60)
    assert "127.0.0.1:9" in message, message


def test_a_statefulset_claim_binds_to_a_provisioned_volume(
        cluster: Cluster, namespace: str) -> None:
    create(cluster, f"/apis/apps/v1/namespaces/{namespace}/statefulsets", {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {
            "serviceName": "db", "replicas": 1,
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{
                "name": "db", "image": PAUSE, "imagePullPolicy": "Never",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}}}],
        },
    })
    def bound_claim() -> dict | None:
        status, claim = cluster.request(
            "GET", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/data-db-0")
        return claim if status == 200 and claim.get("status", {}).get("phase") == "Bound" else None

    claim = wait_for("claim data-db-0 Bound", bound_claim)
    _, volume = cluster.request("GET", f"/api/v1/persistentvolumes/{claim['spec']['volumeName']}")
    assert Path(volume["spec"]["hostPath"]["path"]).is_relative_to(cluster.directory)
    wait_for("pod db-0 Running", lambda: pod_status(cluster, "db-0").get("phase") == "Running")


def test_down_leaves_nothing_behind_and_up_starts_again(cluster: Cluster) -> None:
    # Last in the module: it restarts the session's cluster (images re-imported).
    assert cluster.down() == []
    assert cluster.timings["down_seconds"] < 60
    cluster.up(images.build_all(), timeout=420)
    status, _ = cluster.request("GET", f"/api/v1/nodes/{NODE_NAME}")
    assert status == 200
