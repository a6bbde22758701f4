"""`helm test` pods (templates/tests/): ui-iot's /ready, NATS's /healthz, pg_isready against the
services' database. Rendered as hooks (`helm template` includes them, so the strict Kubernetes
validation of the default render covers them too), hardened, with images the chart already uses;
their commands are run here for real against a local HTTP server, NATS and PostgreSQL."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from iot_tools import helm
from iot_tools.kube import KUBE_VERSIONS
from iot_tools.servers import NatsServer, PostgresServer, temp_workdir

TEST_PODS = ("iot-test-ui-iot-ready", "iot-test-nats-healthz", "iot-test-postgresql-ready")


def _test_pods(docs: list[dict]) -> dict[str, dict]:
    return {
        doc["metadata"]["name"]: doc
        for doc in docs
        if doc["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"
    }


def _docs(docs: list[dict], kind: str, name: str) -> dict:
    return helm.by_kind_and_name(docs)[(kind, name)]


def _command(docs: list[dict], name: str) -> list[str]:
    return _test_pods(docs)[name]["spec"]["containers"][0]["command"]


def test_default_render_has_the_three_test_pods_as_test_hooks(default_renders):
    pods = _test_pods(default_renders[3])
    assert sorted(pods) == sorted(TEST_PODS)
    for pod in pods.values():
        assert pod["kind"] == "Pod"
        assert pod["metadata"]["annotations"] == {
            "helm.sh/hook": "test",
            "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded",
        }


def test_test_pods_are_hardened_run_once_and_bounded(default_renders):
    for pod in _test_pods(default_renders[3]).values():
        spec = pod["spec"]
        assert spec["restartPolicy"] == "Never"
        assert spec["activeDeadlineSeconds"] == 120
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (container,) = spec["containers"]
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["runAsUser"] > 0
        assert {"cpu", "memory"} <= container["resources"]["limits"].keys()


def test_test_pods_use_only_images_the_chart_already_runs(default_renders):
    docs = default_renders[3]
    pods = _test_pods(docs)
    services_image = helm.main_container(_docs(docs, "Deployment", "iot-ui-iot"))["image"]
    postgres_image = helm.main_container(_docs(docs, "StatefulSet", "iot-postgresql"))["image"]
    assert pods["iot-test-ui-iot-ready"]["spec"]["containers"][0]["image"] == services_image
    assert pods["iot-test-nats-healthz"]["spec"]["containers"][0]["image"] == services_image
    assert pods["iot-test-postgresql-ready"]["spec"]["containers"][0]["image"] == postgres_image


def test_test_pods_follow_a_registry_mirror_and_pull_secrets(render):
    docs = render("global.imageRegistry=mirror.example", "global.imagePullSecrets={regcred}")
    for pod in _test_pods(docs).values():
        assert pod["spec"]["containers"][0]["image"].startswith("mirror.example/")
        assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_test_pods_target_the_services_they_check(default_renders):
    docs = default_renders[3]
    ui = _docs(docs, "Service", "iot-ui-iot")
    assert _command(docs, "iot-test-ui-iot-ready")[-1] == (
        f"http://iot-ui-iot:{ui['spec']['ports'][0]['port']}/ready"
    )
    nats_ports = {p["name"]: p for p in _docs(docs, "Service", "iot-nats")["spec"]["ports"]}
    assert nats_ports["monitor"]["targetPort"] == "monitor"
    assert _command(docs, "iot-test-nats-healthz")[-1] == (
        f"http://iot-nats:{nats_ports['monitor']['port']}/healthz"
    )
    database_url = helm.env_by_name(helm.main_container(_docs(docs, "Deployment", "iot-ingest")))[
        "DATABASE_URL"
    ]["value"]
    assert _command(docs, "iot-test-postgresql-ready") == [
        "pg_isready", "-d", database_url, "-t", "10",
    ]


def test_an_external_database_is_checked_at_its_url(render):
    docs = render(
        "postgresql.enabled=false",
        "externalDatabase.url=postgresql://iot@db.example:5433/iot?sslmode=require",
        "externalDatabase.existingSecret=db",
        "externalDatabase.roles.ingest=db-ingest",
        "externalDatabase.roles.evaluator=db-evaluator",
        "externalDatabase.roles.uiIot=db-ui",
        "externalDatabase.roles.opsWorker=db-ops",
        "externalDatabase.roles.routeDelivery=db-route-delivery",
        "keycloak.enabled=false",
        "uiIot.auth.issuerUrl=https://id.example.com/realms/iot",
    )
    # The URL's user is the migration owner's name: every container gets the URL without it.
    assert _command(docs, "iot-test-postgresql-ready")[2] == (
        "postgresql://db.example:5433/iot?sslmode=require"
    )


def test_disabled_components_have_no_test_pod(render):
    docs = render("uiIot.enabled=false", "nats.enabled=false", "nats.mqtt.enabled=false",
                  "emqx.bridgeToNats.enabled=false", "externalNats.url=nats://nats.example:4222")
    assert sorted(_test_pods(docs)) == ["iot-test-postgresql-ready"]


def test_tests_enabled_false_renders_no_test_pod(render):
    assert _test_pods(render("tests.enabled=false")) == {}


def test_deadline_comes_from_values(render):
    for pod in _test_pods(render("tests.deadlineSeconds=300")).values():
        assert pod["spec"]["activeDeadlineSeconds"] == 300


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_test_pods_validate_strictly(default_renders, kube_validate, version):
    pods = _test_pods(default_renders[3]).values()
    assert [error for pod in pods for error in kube_validate(pod, version)] == []


# -- the commands themselves, run for real ----------------------------------------------------


def _local(command: list[str], host_port: str) -> list[str]:
    """The command with its URL's host:port swapped for a local one; `python` is this one."""
    url = urlsplit(command[-1])
    local = [*command[:-1], url._replace(netloc=host_port).geturl()]
    return [sys.executable, *local[1:]] if local[0] == "python" else local


class _Status(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b'{"failed": ["db"]}' if self.status != 200 else b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("status", "exit_code"), [(200, 0), (503, 1)])
def test_ui_check_passes_only_on_a_2xx(default_renders, http_server, status, exit_code):
    _Status.status = status
    command = _local(_command(default_renders[3], "iot-test-ui-iot-ready"),
                     f"127.0.0.1:{http_server.server_port}")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == exit_code, result.stderr
    if status != 200:
        assert "503" in result.stderr and '"failed": ["db"]' in result.stderr


def test_nats_check_passes_against_a_real_nats_and_fails_once_it_stopped(default_renders):
    server = NatsServer(temp_workdir("iot-test-hook-nats-")).start()
    try:
        command = _local(_command(default_renders[3], "iot-test-nats-healthz"),
                         f"127.0.0.1:{server.monitor_port}")
        ok = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert ok.returncode == 0, ok.stderr
        assert '"status":"ok"' in ok.stdout.replace(" ", "")
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)
    down = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert down.returncode == 1


def test_pg_isready_check_passes_against_a_real_postgresql_and_fails_once_it_stopped(
    default_renders,
):
    server = PostgresServer(temp_workdir("iot-test-hook-pg-")).start()
    try:
        command = [*_local(_command(default_renders[3], "iot-test-postgresql-ready")[:3],
                           f"127.0.0.1:{server.port}"), "-t", "10"]
        ok = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert ok.returncode == 0, ok.stdout + ok.stderr
    finally:
        server.stop()
    down = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert down.returncode != 0
