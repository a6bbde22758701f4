"""The images built here (iot_tools.images): valid docker-archives with the references, users,
entrypoints and environments the chart expects, and they really run — imported into a private
containerd and started with ctr and runc: pause, the services against a real PostgreSQL, NATS
with the chart's rendered config, PostgreSQL from the official image's POSTGRES_* contract."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import pytest
from iot_tools import helm
from iot_tools.chart_nats import local_config, logins, nats_pod_env
from iot_tools.images import Image, build
from iot_tools.images.archive import read_docker_archive
from iot_tools.images.containerd import PrivateContainerd, process_ids
from iot_tools.images.services import reference as services_reference
from iot_tools.servers import PostgresServer, free_port, temp_workdir

# A cold first build (mmdebstrap from deb.debian.org, the project's wheels from PyPI) runs in
# the first test's setup: ~2-3 min here, so the default 300 s per test is too tight.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

IMAGES = ("pause", "services", "nats", "postgresql")


@pytest.fixture(scope="session")
def images() -> dict[str, Image]:
    return {name: build(name) for name in IMAGES}


@pytest.fixture(scope="session")
def containerd(images: dict[str, Image]) -> Iterator[PrivateContainerd]:
    runtime = PrivateContainerd().start()
    try:
        for image in images.values():
            runtime.import_archive(image.archive)
        yield runtime
    finally:
        runtime.stop()


def config_of(image: Image) -> tuple[list[dict], dict]:
    return read_docker_archive(image.archive)


def env_of(config: dict) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in config["config"]["Env"])


def wait_http(url: str, timeout: float) -> int:
    """The first HTTP status `url` answers with (an error status counts), within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"nothing answered on {url} within {timeout} s")


def owned_dir(path: Path, uid: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, uid)
    path.chmod(0o700)
    return path


# -- the archives ------------------------------------------------------------------------------

def test_every_archive_is_tagged_with_its_reference(images: dict[str, Image]) -> None:
    for image in images.values():
        manifest, config = config_of(image)
        assert manifest[0]["RepoTags"] == [image.reference]
        assert len(manifest[0]["Layers"]) == len(config["rootfs"]["diff_ids"])


def test_references_carry_the_true_versions(images: dict[str, Image]) -> None:
    nats_version = subprocess.run(
        [str(Path(sys.executable).parent / "nats-server"), "--version"],
        capture_output=True, text=True, check=True).stdout
    assert images["pause"].reference == "localhost/iot-platform/pause:1"
    assert images["nats"].reference.rpartition(":")[2] in nats_version
    assert images["postgresql"].reference.startswith("localhost/iot-platform/postgres:18.")
    assert images["services"].reference == services_reference()
    assert services_reference() == "ghcr.io/iot-platform/iot-services:0.1.0"


def test_services_image_has_the_dockerfiles_user_env_cmd_and_port(
        images: dict[str, Image]) -> None:
    _, config = config_of(images["services"])
    runtime = config["config"]
    env = env_of(config)
    assert runtime["User"] == "10001:10001"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["PYTHONUNBUFFERED"] == "1" and env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert runtime["Cmd"][:2] == ["python", "-c"] and "Entrypoint" not in runtime
    assert runtime["ExposedPorts"] == {"8080/tcp": {}}


def test_base_layer_is_shared_by_services_and_postgresql(images: dict[str, Image]) -> None:
    _, services = config_of(images["services"])
    _, postgres = config_of(images["postgresql"])
    assert services["rootfs"]["diff_ids"][0] == postgres["rootfs"]["diff_ids"][0]


def test_nats_image_runs_nats_server_with_the_charts_args(images: dict[str, Image]) -> None:
    _, config = config_of(images["nats"])
    assert config["config"]["Entrypoint"] == ["nats-server"]
    assert config["config"]["User"] == "1000:1000"


def test_postgres_image_follows_the_official_layout(images: dict[str, Image]) -> None:
    _, config = config_of(images["postgresql"])
    env = env_of(config)
    assert config["config"]["Entrypoint"] == ["docker-entrypoint.sh"]
    assert config["config"]["Cmd"] == ["postgres"]
    assert env["PGDATA"] == "/var/lib/postgresql/18/docker"
    assert "/usr/lib/postgresql/18/bin" in env["PATH"].split(":")


def test_second_build_is_a_cache_hit(images: dict[str, Image]) -> None:
    started = time.monotonic()
    again = {name: build(name) for name in IMAGES}
    assert all(image.cache_hit for image in again.values())
    assert {name: image.archive for name, image in again.items()} == {
        name: image.archive for name, image in images.items()}
    assert time.monotonic() - started < 30


def test_services_key_changes_with_the_services_sources_only(tmp_path: Path) -> None:
    from iot_tools.helm import REPO_ROOT
    from iot_tools.images.services import source_hash

    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, tmp_path / name)
    shutil.copytree(REPO_ROOT / "services" / "common", tmp_path / "services" / "common",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "services" / "tests").mkdir()
    before = source_hash(tmp_path).hexdigest()
    (tmp_path / "services" / "tests" / "test_new.py").write_text("def test(): pass\n")
    (tmp_path / "services" / "common" / "__pycache__").mkdir()
    (tmp_path / "services" / "common" / "__pycache__" / "x.pyc").write_bytes(b"cache")
    assert source_hash(tmp_path).hexdigest() == before
    with (tmp_path / "services" / "common" / "health.py").open("a") as source:
        source.write("# changed\n")
    assert source_hash(tmp_path).hexdigest() != before


def test_build_places_the_archive_in_out_dir(images: dict[str, Image], tmp_path: Path) -> None:
    image = build("pause", tmp_path)
    assert image.archive == tmp_path / "pause.tar"
    assert image.archive.read_bytes() == images["pause"].archive.read_bytes()


# -- the images running under containerd and runc ---------------------------------------------

def test_pause_stays_up_until_sigterm_and_exits_zero(containerd: PrivateContainerd,
                                                       images: dict[str, Image]) -> None:
    container = containerd.run(images["pause"].reference, "pause-test")
    try:
        pid = containerd.task_pid("pause-test")
        time.sleep(1)
        assert container.process.poll() is None, container.output()
        assert process_ids(pid) == (65535, 65535)
        containerd.kill("pause-test", "SIGTERM")
        assert container.process.wait(20) == 0, container.output()
    finally:
        containerd.remove("pause-test")


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer(temp_workdir("iot-test-images-pg-")).start()
    server.migrate()
    yield server
    server.stop(mode="kill")
    shutil.rmtree(server.workdir, ignore_errors=True)


def test_services_image_runs_ops_worker_ready_as_10001(
        containerd: PrivateContainerd, images: dict[str, Image],
        postgres_server: PostgresServer) -> None:
    port = free_port()
    env = {"DATABASE_URL": postgres_server.url, "PGPASSWORD": postgres_server.password,
           "HEALTH_PORT": str(port), "DRAIN_DELAY_SECONDS": "0"}
    container = containerd.run(images["services"].reference, "services-test", "python", "-m",
                               "services.ops_worker", env=env, read_only=True)
    try:
        pid = containerd.task_pid("services-test")
        assert wait_http(f"http://127.0.0.1:{port}/health", 60) == 200, container.output()
        assert wait_http(f"http://127.0.0.1:{port}/ready", 30) == 200, container.output()
        assert process_ids(pid) == (10001, 10001)
        containerd.kill("services-test", "SIGTERM")
        assert container.process.wait(30) == 0, container.output()
    finally:
        containerd.remove("services-test")


def test_nats_image_serves_a_client_with_the_charts_config(
        containerd: PrivateContainerd, images: dict[str, Image], tmp_path: Path) -> None:
    docs = helm.render()
    rendered = helm.by_kind_and_name(docs)[("ConfigMap", "iot-nats")]["data"]["nats.conf"]
    client, monitor, mqtt = free_port(), free_port(), free_port()
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "nats.conf").write_text(local_config(
        rendered, client=client, monitor=monitor, mqtt=mqtt, store=Path("/data"),
        pid_file=Path("/var/run/nats/nats.pid")))
    config_dir.chmod(0o755)
    # As the chart's pod: read-only root, the ConfigMap, the JetStream volume and the pid
    # folder mounted; the command is the image's entrypoint with the chart's args.
    mounts = ((config_dir, "/etc/nats", True), (owned_dir(tmp_path / "data", 1000), "/data", False),
              (owned_dir(tmp_path / "pid", 1000), "/var/run/nats", False))
    env = {"POD_NAME": "iot-nats-0", **nats_pod_env(docs)}
    container = containerd.run(images["nats"].reference, "nats-test", "nats-server", "--config",
                               "/etc/nats/nats.conf", env=env, mounts=mounts, read_only=True)
    try:
        pid = containerd.task_pid("nats-test")
        assert wait_http(f"http://127.0.0.1:{monitor}/healthz", 30) == 200, container.output()
        assert process_ids(pid) == (1000, 1000)
        owner = logins(docs)["owner"]

        async def ping() -> None:
            connection = await nats.connect(f"nats://127.0.0.1:{client}", **owner.options(),
                                            connect_timeout=5, allow_reconnect=False)
            await connection.flush(timeout=5)  # PING, answered by PONG
            await connection.close()

        asyncio.run(ping())
        # The chart's preStop hook, exactly: lame-duck mode by pid file, then the server exits.
        hook = containerd.exec("nats-test", "nats-server", "--signal",
                               "ldm=/var/run/nats/nats.pid")
        assert hook.returncode == 0, hook.stderr
        assert container.process.wait(60) == 0, container.output()
        assert "Entering lame duck mode" in container.output()
    finally:
        containerd.remove("nats-test")


INIT_SQL = "CREATE TABLE from_init_sql (note text); INSERT INTO from_init_sql VALUES ('sql');\n"
INIT_SH = """#!/bin/bash
set -e
process_sql <<'SQL'
INSERT INTO from_init_sql VALUES ('sh as ' || current_user || ' in ' || current_database());
SQL
"""


def test_postgres_image_initialises_from_the_official_variables(
        containerd: PrivateContainerd, images: dict[str, Image], tmp_path: Path) -> None:
    port = free_port()
    init = tmp_path / "init"
    init.mkdir(mode=0o755)
    (init / "10-table.sql").write_text(INIT_SQL)
    (init / "20-row.sh").write_text(INIT_SH)  # not executable: sourced, as upstream does
    for path in (init, *init.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    password_file = tmp_path / "secret" / "password"
    password_file.parent.mkdir(mode=0o755)
    password_file.write_text("s3cret-from-file")
    password_file.chmod(0o644)
    mounts = ((owned_dir(tmp_path / "data", 70), "/var/lib/postgresql", False),
              (owned_dir(tmp_path / "run", 70), "/var/run/postgresql", False),
              (owned_dir(tmp_path / "tmp", 70), "/tmp", False),
              (init, "/docker-entrypoint-initdb.d", True),
              (password_file.parent, "/run/secrets", True))
    # Like the official image, initdb trusts loopback connections (the pod's own probes);
    # POSTGRES_INITDB_ARGS makes them need the password too, so a wrong one is refused here.
    env = {"POSTGRES_USER": "iot", "POSTGRES_DB": "iotdb",
           "POSTGRES_PASSWORD_FILE": "/run/secrets/password",
           "POSTGRES_INITDB_ARGS": "--auth-host=scram-sha-256"}
    # The chart's securityContext: uid/gid 70 from the first instruction on, read-only root.
    command = ("setpriv", "--reuid=70", "--regid=70", "--clear-groups", "docker-entrypoint.sh",
               "postgres", "-p", str(port))
    container = containerd.run(images["postgresql"].reference, "postgres-test", *command,
                               env=env, mounts=mounts, read_only=True)
    try:
        containerd.task_pid("postgres-test")

        async def check() -> list[str]:
            deadline = time.monotonic() + 90
            while True:
                try:
                    connection = await asyncpg.connect(
                        host="127.0.0.1", port=port, user="iot", password="s3cret-from-file",
                        database="iotdb", timeout=5)
                    break
                except (OSError, asyncpg.CannotConnectNowError) as error:
                    if time.monotonic() > deadline or container.process.poll() is not None:
                        raise AssertionError(f"no login to the postgres image ({error}):\n"
                                             f"{container.output()}") from error
                    await asyncio.sleep(0.5)
            try:
                rows = await connection.fetch("SELECT note FROM from_init_sql ORDER BY note")
            finally:
                await connection.close()
            with pytest.raises(asyncpg.InvalidPasswordError):
                await asyncpg.connect(host="127.0.0.1", port=port, user="iot",
                                      password="wrong", database="iotdb", timeout=5)
            return [row["note"] for row in rows]

        assert asyncio.run(check()) == ["sh as iot in iotdb", "sql"], container.output()
        ready = containerd.exec("postgres-test", "pg_isready", "-h", "127.0.0.1", "-p", str(port),
                                "-t", "2")
        assert ready.returncode == 0, ready.stdout + ready.stderr
        assert (tmp_path / "data" / "18" / "docker" / "PG_VERSION").read_text().strip() == "18"
        assert "PostgreSQL init process complete" in container.output()
        containerd.kill("postgres-test", "SIGINT")
        assert container.process.wait(60) == 0, container.output()
    finally:
        containerd.remove("postgres-test")


def test_private_containerd_leaves_no_mount_behind(images: dict[str, Image]) -> None:
    runtime = PrivateContainerd().start()
    try:
        runtime.import_archive(images["pause"].archive)
        runtime.run(images["pause"].reference, "leftover")
        runtime.task_pid("leftover")
    finally:
        runtime.stop()
    assert runtime.mounts() == []
    assert not runtime.workdir.exists()


# -- the values that point the chart at them -------------------------------------------------

LOCAL_VALUES = Path(__file__).parents[1] / "iot_tools" / "images" / "values-local.yaml"


def pod_containers(docs: list[dict]) -> list[tuple[str, dict]]:
    found = []
    for doc in docs:
        spec = doc.get("spec", {})
        pod = spec.get("template", {}).get("spec") if "template" in spec else (
            spec if doc["kind"] == "Pod" else None)
        if pod:
            for container in pod.get("initContainers", []) + pod["containers"]:
                found.append((doc["metadata"]["name"], container))
    return found


def test_local_values_run_every_pod_but_emqx_on_an_image_built_here(
        images: dict[str, Image]) -> None:
    # Keycloak's image (iot_tools.images.keycloak) is tagged with the pinned Keycloak version.
    keycloak = f"localhost/iot-platform/keycloak:{helm.pinned_versions()['KEYCLOAK_VERSION']}"
    built = {image.reference for image in images.values()} | {keycloak}
    docs = helm.render(values_files=(LOCAL_VALUES,))
    containers = [(name, c) for name, c in pod_containers(docs) if "emqx" not in name]
    assert containers
    for name, container in containers:
        assert container["image"] in built, (name, container["image"])
        assert container["imagePullPolicy"] == "Never", name
