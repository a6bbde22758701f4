"""The Keycloak image built here (iot_tools.images.keycloak): tagged as the cluster references
it, with the official image's user and entrypoint, and it really runs what the chart's pod
runs — imported into a private containerd and started with ctr and runc with the entrypoint
plus the chart's rendered args, its env (ports moved to free loopback ports, the database a real
PostgreSQL), the chart's realm mounted read-only where the chart mounts it and the chart's memory
limit; the chart's probe endpoints answer on the management port."""

from __future__ import annotations

import json
import secrets
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from iot_tools import helm
from iot_tools.images import Image, build
from iot_tools.images.archive import read_docker_archive
from iot_tools.images.containerd import Container, PrivateContainerd, process_ids
from iot_tools.images.keycloak import UID, reference
from iot_tools.servers import PostgresServer, free_port, temp_workdir

# Cold: the base rootfs, the image and a first Keycloak start (schema creation) add up.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# Keycloak took 20-40 s to Ready on 2 busy cores (the database schema is created on the first
# start); a re-augmenting start adds ~20 s.
READY_SECONDS = 240
MEMORY_UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
# What Keycloak prints when `start` finds the build-time options changed and re-augments.
REAUGMENTING = "Changes detected in configuration"


@dataclass(frozen=True)
class ChartPod:
    """The chart's Keycloak container, as `helm template` renders it with default values."""

    container: dict
    pod_security: dict
    realm_configmap: dict

    @classmethod
    def render(cls, *set_values: str) -> ChartPod:
        docs = helm.render(set_values=set_values)
        (deployment,) = [doc for doc in helm.workloads(docs)
                         if doc["metadata"]["labels"]["app.kubernetes.io/component"] == "keycloak"]
        pod = helm.pod_spec(deployment)
        (volume,) = [v for v in pod["volumes"] if "configMap" in v]
        (configmap,) = [doc for doc in docs if doc["kind"] == "ConfigMap"
                        and doc["metadata"]["name"] == volume["configMap"]["name"]]
        return cls(helm.main_container(deployment), pod.get("securityContext", {}), configmap)

    @property
    def env(self) -> dict[str, dict]:
        return helm.env_by_name(self.container)

    def literal_env(self, name: str) -> str:
        return self.env[name]["value"]

    def probe(self, kind: str) -> dict:
        return self.container[f"{kind}Probe"]["httpGet"]

    @property
    def memory_limit(self) -> int:
        text = self.container["resources"]["limits"]["memory"]
        return int(text[:-2]) * MEMORY_UNITS[text[-2:]]


@dataclass
class RunningKeycloak:
    container: Container
    pid: int
    http_port: int
    management_port: int
    ready_seconds: float


def http_status(url: str, timeout: float = 5) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture(scope="module")
def image() -> Image:
    return build("keycloak")


@pytest.fixture(scope="module")
def image_config(image: Image) -> dict:
    return read_docker_archive(image.archive)[1]["config"]


@pytest.fixture(scope="module")
def chart_pod() -> ChartPod:
    return ChartPod.render()


@pytest.fixture(scope="module")
def containerd(image: Image) -> Iterator[PrivateContainerd]:
    runtime = PrivateContainerd().start()
    try:
        runtime.import_archive(image.archive)
        yield runtime
    finally:
        runtime.stop()


@pytest.fixture(scope="module")
def postgres(chart_pod: ChartPod) -> Iterator[PostgresServer]:
    """The database Keycloak's env names, with the role it names."""
    server = PostgresServer(temp_workdir("iot-test-kc-pg-"),
                            user=chart_pod.literal_env("KC_DB_USERNAME"),
                            database=chart_pod.literal_env("KC_DB_URL_DATABASE")).start()
    yield server
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


def start_chart_pod(
    containerd: PrivateContainerd, image_config: dict, chart_pod: ChartPod,
    postgres: PostgresServer, *, workdir: Path, container_id: str,
) -> RunningKeycloak:
    """Runs the image as the kubelet would run the chart's container: the image's entrypoint
    followed by the chart's args (the chart sets no command), the chart's env with its two
    Secret references filled in and its ports moved to free loopback ports (host network), the
    realm ConfigMap mounted read-only at the chart's mountPath."""
    assert "command" not in chart_pod.container, "the chart now sets a command: run that"
    http_port, management_port = free_port(), free_port()
    secrets_by_name = {"KC_DB_PASSWORD": postgres.password,
                       "KC_BOOTSTRAP_ADMIN_PASSWORD": secrets.token_urlsafe(18)}
    env: dict[str, str] = {}
    for name, entry in chart_pod.env.items():
        if "valueFrom" in entry:
            assert name in secrets_by_name, f"the chart's Keycloak env {name} is new to this test"
            env[name] = secrets_by_name[name]
        else:
            env[name] = entry["value"]
    env |= {"KC_HTTP_PORT": str(http_port), "KC_HTTP_MANAGEMENT_PORT": str(management_port),
            "KC_DB_URL_HOST": "127.0.0.1", "KC_DB_URL_PORT": str(postgres.port)}
    realm_dir = workdir / "realm"
    realm_dir.mkdir(mode=0o755)
    for key, text in chart_pod.realm_configmap["data"].items():
        (realm_dir / key).write_text(text)
        (realm_dir / key).chmod(0o644)
    (mount,) = chart_pod.container["volumeMounts"]
    container = containerd.run(
        reference(), container_id, *image_config["Entrypoint"], *chart_pod.container["args"],
        env=env, mounts=((realm_dir, mount["mountPath"], mount["readOnly"]),),
        memory_limit=chart_pod.memory_limit,
    )
    pid = containerd.task_pid(container_id)
    started = time.monotonic()
    ready_url = f"http://127.0.0.1:{management_port}{chart_pod.probe('readiness')['path']}"
    while time.monotonic() - started < READY_SECONDS:
        if container.process.poll() is not None:
            raise AssertionError(f"Keycloak exited {container.process.returncode}:\n"
                                 f"{container.output()[-4000:]}")
        try:
            if http_status(ready_url, timeout=2) == 200:
                return RunningKeycloak(container, pid, http_port, management_port,
                                       time.monotonic() - started)
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{ready_url} did not answer 200 within {READY_SECONDS} s:\n"
                         f"{container.output()[-4000:]}")


@pytest.fixture(scope="module")
def keycloak(containerd: PrivateContainerd, image_config: dict, chart_pod: ChartPod,
             postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[RunningKeycloak]:
    """The chart's default pod."""
    try:
        yield start_chart_pod(containerd, image_config, chart_pod, postgres,
                              workdir=tmp_path_factory.mktemp("kc-default"),
                              container_id="keycloak-chart")
    finally:
        containerd.remove("keycloak-chart")


# -- the archive -------------------------------------------------------------------------------

def test_archive_is_tagged_with_the_local_reference_of_the_charts_version(
        image: Image, chart_pod: ChartPod) -> None:
    manifest, _ = read_docker_archive(image.archive)
    chart_tag = chart_pod.container["image"].rsplit(":", 1)[1].strip('"')
    assert manifest[0]["RepoTags"] == [f"localhost/iot-platform/keycloak:{chart_tag}"]


def test_archive_runs_kc_sh_as_the_user_the_chart_sets(
        image_config: dict, chart_pod: ChartPod) -> None:
    security = chart_pod.container["securityContext"]
    assert image_config["Entrypoint"] == ["/opt/keycloak/bin/kc.sh"]
    assert image_config["User"] == f"{security['runAsUser']}:{security['runAsGroup']}"
    assert image_config["WorkingDir"] == "/opt/keycloak"


def test_archive_has_java_on_path_and_container_heap_sizing(image_config: dict) -> None:
    env = dict(entry.split("=", 1) for entry in image_config["Env"])
    assert env["JAVA_HOME"] == "/opt/java/openjdk"
    assert env["PATH"].split(":")[0] == "/opt/java/openjdk/bin"
    assert env["KC_RUN_IN_CONTAINER"] == "true"


def test_second_build_is_a_cache_hit(image: Image) -> None:
    again = build("keycloak")
    assert again.cache_hit and again.archive == image.archive
    assert again.build_seconds < 5


# -- the chart's pod on containerd and runc ----------------------------------------------------

def test_charts_pod_is_ready_on_the_management_port(keycloak: RunningKeycloak) -> None:
    assert keycloak.ready_seconds < READY_SECONDS
    print(f"keycloak ready after {keycloak.ready_seconds:.1f} s")


def test_charts_startup_and_liveness_probes_answer(
        keycloak: RunningKeycloak, chart_pod: ChartPod) -> None:
    for kind in ("startup", "liveness"):
        path = chart_pod.probe(kind)["path"]
        assert http_status(f"http://127.0.0.1:{keycloak.management_port}{path}") == 200, kind


def test_runs_as_the_charts_uid_and_group(keycloak: RunningKeycloak) -> None:
    assert process_ids(keycloak.pid) == (UID, 0)


def test_starts_without_reaugmenting_for_the_charts_default_options(
        keycloak: RunningKeycloak) -> None:
    assert REAUGMENTING not in keycloak.container.output()


def test_imports_the_charts_realm(keycloak: RunningKeycloak, chart_pod: ChartPod) -> None:
    (text,) = chart_pod.realm_configmap["data"].values()
    realm = json.loads(text)["realm"]
    assert http_status(f"http://127.0.0.1:{keycloak.http_port}/realms/{realm}") == 200


def test_stops_on_sigterm_within_the_charts_grace_period(
        keycloak: RunningKeycloak, containerd: PrivateContainerd) -> None:
    grace = 30  # the chart's terminationGracePeriodSeconds for Keycloak
    started = time.monotonic()
    containerd.kill(keycloak.container.id, "SIGTERM")
    keycloak.container.process.wait(grace)
    assert time.monotonic() - started < grace
    assert "Keycloak stopped" in keycloak.container.output()


def test_reaugments_as_the_charts_user_when_build_options_differ(
        containerd: PrivateContainerd, image_config: dict, postgres: PostgresServer,
        tmp_path: Path) -> None:
    """With a PodMonitor, the chart adds KC_METRICS_ENABLED (a build-time option): plain `start`
    rebuilds below /opt/keycloak as uid 1000, group 0, and serves /metrics."""
    chart_pod = ChartPod.render("metrics.podMonitor.enabled=true")
    assert chart_pod.literal_env("KC_METRICS_ENABLED") == "true"
    try:
        running = start_chart_pod(containerd, image_config, chart_pod, postgres,
                                  workdir=tmp_path, container_id="keycloak-metrics")
        assert REAUGMENTING in running.container.output()
        assert http_status(f"http://127.0.0.1:{running.management_port}/metrics") == 200
    finally:
        containerd.remove("keycloak-metrics")
