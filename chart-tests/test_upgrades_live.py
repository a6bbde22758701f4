"""Install, upgrade and uninstall against a REAL kube-apiserver (the `apiserver` fixture: etcd and
kube-apiserver 1.37 on loopback, no kubelet, so no pod ever runs), with Helm 3 and Helm 4.

An upgrade that the live objects cannot take (a StatefulSet's volume, the database's user, name or
password) fails at render, through the chart's `lookup` guards, with the steps to do it instead;
the release stays `deployed` at its revision. The documented steps themselves then upgrade. The
generated Secrets survive `helm uninstall` and a reinstall reuses them. Every rendered object
passes the API server's own validation (server-side dry-run).
"""

from __future__ import annotations

import base64
import copy
import json
import os

import pytest
from iot_tools import helm
from iot_tools.apiserver import ApiServer
from iot_tools.chart_cases import VARIANT

MAJORS = (3, 4)
RELEASE = "iot"
GENERATED_SECRETS = ("iot-postgresql", "iot-keycloak", "iot-emqx")

# Upgrades the live objects cannot take: (--set, the start of the guard's message, a step it names).
GUARDED = {
    "postgresql-volume-grows": (
        "postgresql.persistence.size=20Gi",
        "postgresql.persistence.size cannot change from 8Gi to 20Gi by an upgrade",
        "delete statefulset iot-postgresql --cascade=orphan",
    ),
    "postgresql-volume-shrinks": (
        "postgresql.persistence.size=4Gi",
        "postgresql.persistence.size cannot shrink from 8Gi to 4Gi",
        "Keep postgresql.persistence.size=8Gi",
    ),
    "postgresql-storage-class": (
        "postgresql.persistence.storageClassName=fast",
        'postgresql.persistence.storageClassName cannot change from "" to "fast"',
        "delete PersistentVolumeClaim data-iot-postgresql-0",
    ),
    "nats-volume-grows": (
        "nats.jetstream.storageSize=20Gi",
        "nats.jetstream.storageSize cannot change from 10Gi to 20Gi by an upgrade",
        "patch pvc jetstream-iot-nats-0",
    ),
    "nats-storage-class": (
        "nats.jetstream.storageClassName=fast",
        'nats.jetstream.storageClassName cannot change from "" to "fast"',
        "install with the new StorageClass",
    ),
    "database-user": (
        "postgresql.auth.username=other",
        'postgresql.auth.username cannot change from "iot" to "other" on an existing install',
        "ALTER ROLE iot RENAME TO other",
    ),
    "database-name": (
        "postgresql.auth.database=other",
        'postgresql.auth.database cannot change from "iot" to "other" on an existing install',
        "ALTER DATABASE iot RENAME TO other",
    ),
    "database-password": (
        "postgresql.auth.password=a-new-password",
        "postgresql.auth.password differs from the password in Secret iot-postgresql",
        "ALTER ROLE iot PASSWORD '<new>'",
    ),
}


def _helm(apiserver: ApiServer, major: int, *args: str) -> helm.HelmResult:
    return helm.run_helm(major, *args, "--kubeconfig", str(apiserver.kubeconfig), timeout=300)


def _with_sets(args: list[str], set_values: tuple[str, ...]) -> list[str]:
    for assignment in set_values:
        args += ["--set", assignment]
    return args


def _install(apiserver: ApiServer, major: int, namespace: str, *set_values: str) -> None:
    args = ["install", RELEASE, str(helm.CHART_DIR), "--namespace", namespace, "--create-namespace"]
    result = _helm(apiserver, major, *_with_sets(args, set_values))
    assert result.returncode == 0, result.stderr


def _upgrade(apiserver: ApiServer, major: int, namespace: str, *set_values: str) -> helm.HelmResult:
    args = ["upgrade", RELEASE, str(helm.CHART_DIR), "--namespace", namespace, "--reuse-values"]
    return _helm(apiserver, major, *_with_sets(args, set_values))


def _history(apiserver: ApiServer, major: int, namespace: str) -> list[tuple[int, str]]:
    result = _helm(apiserver, major, "history", RELEASE, "--namespace", namespace, "-o", "json")
    assert result.returncode == 0, result.stderr
    return [(entry["revision"], entry["status"]) for entry in json.loads(result.stdout)]


def _secret_data(apiserver: ApiServer, namespace: str, name: str) -> dict[str, str]:
    return apiserver.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")["data"]


def _workload(apiserver: ApiServer, namespace: str, kind: str, name: str) -> dict:
    return apiserver.get(f"/apis/apps/v1/namespaces/{namespace}/{kind}/{name}")


def _delete_statefulset_orphaning_its_pods(apiserver: ApiServer, namespace: str, name: str) -> None:
    """`kubectl delete statefulset NAME --cascade=orphan`, through the API."""
    path = f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}"
    status, body = apiserver.request(
        "DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Orphan"}
    )
    assert status == 200, body
    # The garbage collector (kube-controller-manager, not running here) orphans the pods, then
    # removes the `orphan` finalizer, and the StatefulSet is gone: do its part.
    status, body = apiserver.request(
        "PATCH", path, {"metadata": {"finalizers": None}},
        content_type="application/merge-patch+json",
    )
    assert status == 200, body
    assert apiserver.request("GET", path)[0] == 404


@pytest.fixture(scope="module", params=MAJORS, ids=lambda major: f"helm{major}")
def installed(apiserver: ApiServer, request: pytest.FixtureRequest) -> tuple[int, str]:
    """A release of the default values, installed once per Helm major; the guarded upgrades
    all fail, so they leave it as it is."""
    major = request.param
    namespace = f"guards-helm{major}"
    _install(apiserver, major, namespace)
    return major, namespace


@pytest.mark.parametrize("case", GUARDED)
def test_an_upgrade_the_live_objects_cannot_take_fails_and_leaves_the_release(
    apiserver, installed, case
):
    major, namespace = installed
    assignment, message, step = GUARDED[case]
    secret_before = _secret_data(apiserver, namespace, "iot-postgresql")
    result = _upgrade(apiserver, major, namespace, assignment)
    assert result.returncode != 0
    assert message in result.stderr
    assert step in result.stderr
    # stopped by the chart, before Helm sent anything: not by the API server halfway through
    assert "field is immutable" not in result.stderr
    assert _history(apiserver, major, namespace) == [(1, "deployed")]
    assert _secret_data(apiserver, namespace, "iot-postgresql") == secret_before


@pytest.mark.parametrize("major", MAJORS)
def test_a_probe_change_upgrades_in_place(apiserver, major):
    namespace = f"probe-helm{major}"
    _install(apiserver, major, namespace)
    before = _workload(apiserver, namespace, "deployments", "iot-ingest")
    result = _upgrade(apiserver, major, namespace, "ingest.probes.liveness.periodSeconds=20")
    assert result.returncode == 0, result.stderr
    assert _history(apiserver, major, namespace) == [(1, "superseded"), (2, "deployed")]
    after = _workload(apiserver, namespace, "deployments", "iot-ingest")
    assert helm.main_container(after)["livenessProbe"]["periodSeconds"] == 20
    # no Secret changed: the checksum that would roll the pods for one stays the same
    annotations = after["spec"]["template"]["metadata"]["annotations"]
    assert annotations == before["spec"]["template"]["metadata"]["annotations"]


@pytest.mark.parametrize("major", MAJORS)
def test_uninstall_keeps_the_generated_secrets_and_a_reinstall_reuses_them(apiserver, major):
    namespace = f"reinstall-helm{major}"
    _install(apiserver, major, namespace)
    generated = {name: _secret_data(apiserver, namespace, name) for name in GENERATED_SECRETS}
    result = _helm(apiserver, major, "uninstall", RELEASE, "--namespace", namespace)
    assert result.returncode == 0, result.stderr
    status, _ = apiserver.request(
        "GET", f"/apis/apps/v1/namespaces/{namespace}/statefulsets/iot-postgresql"
    )
    assert status == 404  # the release is gone ...
    for name, data in generated.items():  # ... but not its passwords
        assert _secret_data(apiserver, namespace, name) == data
    _install(apiserver, major, namespace)
    for name, data in generated.items():
        assert _secret_data(apiserver, namespace, name) == data


@pytest.mark.parametrize("major", MAJORS)
def test_the_documented_password_rotation_upgrades_and_rolls_the_pods(apiserver, major):
    namespace = f"rotate-helm{major}"
    _install(apiserver, major, namespace)
    before = _workload(apiserver, namespace, "deployments", "iot-ingest")
    # step 2 (after ALTER ROLE in the database): the Secret gets the new password
    path = f"/api/v1/namespaces/{namespace}/secrets/iot-postgresql"
    secret = apiserver.get(path)
    secret["data"]["password"] = base64.b64encode(b"rotated-password-1").decode()
    status, body = apiserver.request("PUT", path, secret)
    assert status == 200, body
    # step 3: the upgrade with the new value passes the guard and rolls every user of the Secret
    result = _upgrade(apiserver, major, namespace, "postgresql.auth.password=rotated-password-1")
    assert result.returncode == 0, result.stderr
    after = _workload(apiserver, namespace, "deployments", "iot-ingest")
    key = "checksum/postgresql-secret"
    before_sum = before["spec"]["template"]["metadata"]["annotations"][key]
    assert after["spec"]["template"]["metadata"]["annotations"][key] != before_sum
    assert _secret_data(apiserver, namespace, "iot-postgresql")["password"] == (
        secret["data"]["password"]
    )


@pytest.mark.parametrize("major", MAJORS)
def test_the_documented_volume_expansion_upgrades(apiserver, major):
    namespace = f"expand-helm{major}"
    _install(apiserver, major, namespace)
    _delete_statefulset_orphaning_its_pods(apiserver, namespace, "iot-postgresql")
    result = _upgrade(apiserver, major, namespace, "postgresql.persistence.size=20Gi")
    assert result.returncode == 0, result.stderr
    statefulset = _workload(apiserver, namespace, "statefulsets", "iot-postgresql")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"


@pytest.mark.parametrize("major", MAJORS)
def test_the_documented_user_rename_upgrades(apiserver, major):
    namespace = f"rename-helm{major}"
    _install(apiserver, major, namespace)
    _delete_statefulset_orphaning_its_pods(apiserver, namespace, "iot-postgresql")
    result = _upgrade(apiserver, major, namespace, "postgresql.auth.username=other")
    assert result.returncode == 0, result.stderr
    # The superuser is the server's bootstrap user and migrate's admin login; the services keep
    # logging in as their own roles.
    postgresql = _workload(apiserver, namespace, "statefulsets", "iot-postgresql")
    assert helm.env_by_name(helm.main_container(postgresql))["POSTGRES_USER"]["value"] == "other"
    ingest = _workload(apiserver, namespace, "deployments", "iot-ingest")
    (migrate,) = [c for c in helm.pod_spec(ingest)["initContainers"] if c["name"] == "migrate"]
    assert helm.env_by_name(migrate)["DB_ADMIN_USER"]["value"] == "other"
    env = helm.env_by_name(helm.main_container(ingest))
    assert env["PGUSER"]["value"] == "iot_ingest"
    assert "other" not in env["DATABASE_URL"]["value"]


@pytest.fixture(scope="module")
def dry_run_namespace(apiserver: ApiServer) -> str:
    """A namespace with the `default` ServiceAccount the kubelet-less API server never creates
    (the ServiceAccount admission of a Pod, the chart's `helm test` pods, needs it)."""
    namespace = "dry-run"
    for path, body in (
        ("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": namespace}}),
        (f"/api/v1/namespaces/{namespace}/serviceaccounts",
         {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
    ):
        status, answer = apiserver.request("POST", path, body)
        assert status == 201, answer
    return namespace




def _dry_run_failures(apiserver: ApiServer, namespace: str, docs: list[dict]) -> list[str]:
    failures = []
    for doc in docs:
        status, answer = apiserver.dry_run_create(doc, namespace)
        if status != 201:
            failures.append(f"{doc['kind']} {doc['metadata']['name']}: {answer.get('message')}")
    return failures


@pytest.mark.parametrize("set_values", [(), VARIANT], ids=["default", "variant"])
def test_every_rendered_object_passes_server_side_dry_run(
    apiserver, dry_run_namespace, set_values
):
    docs = helm.render(set_values=set_values)
    assert len(docs) > 10
    assert _dry_run_failures(apiserver, dry_run_namespace, docs) == []


def test_server_side_dry_run_rejects_an_invalid_object(apiserver, dry_run_namespace):
    """Control: the dry-run really validates, so the test above means something."""
    deployment = copy.deepcopy(helm.workloads(helm.render())[0])
    helm.main_container(deployment)["ports"][0]["containerPort"] = 70000
    (failure,) = _dry_run_failures(apiserver, dry_run_namespace, [deployment])
    assert "containerPort" in failure


def test_the_api_server_reports_its_pinned_version(apiserver):
    """Helm checks the chart's kubeVersion against it: a source build would say v0.0.0."""
    version = apiserver.get("/version")
    assert version["gitVersion"] == helm.pinned_versions()["KUBERNETES_VERSION"]


def test_stop_leaves_no_process(tmp_path):
    server = ApiServer(tmp_path / "second").start()
    pids = server.pids
    assert len(pids) == 2
    server.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
