"""What the drill reads from the render and how it maps a pod onto local processes: probes
and env come from `helm template` (not from a copy), secrets resolve from the rendered
Secret, Service endpoints and container ports map to local ports, and the limits follow
the values."""

from __future__ import annotations

import base64
import copy
import subprocess
import sys

import pytest
from iot_tools import helm
from iot_tools.drill.limits import START_ALLOWANCE_SECONDS, Limits
from iot_tools.drill.platform import LocalPlatform, local_nats_config, rewrite_endpoints
from iot_tools.drill.render import RenderReadError, platform_from_docs, read_render
from iot_tools.drill.spec import HttpGet, ProbeSpec, UnsupportedProbe
from iot_tools.drill.timescale import TimeScale
from iot_tools.services import SERVICES


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return helm.render()


@pytest.fixture(scope="module")
def rendered(docs):
    return platform_from_docs(docs)


def test_the_five_services_with_their_rendered_probes_and_grace(rendered, docs):
    assert [plan.service for plan in rendered.containers] == list(SERVICES)
    ingest = rendered.container("ingest_iot")
    container = helm.main_container(helm.by_kind_and_name(docs)[("Deployment", "iot-ingest")])
    for kind, field in (("startup", "startupProbe"), ("liveness", "livenessProbe"),
                        ("readiness", "readinessProbe")):
        manifest = container[field]
        spec = ingest.probes[kind]
        assert spec.handler == HttpGet(manifest["httpGet"]["path"], manifest["httpGet"]["port"])
        assert (spec.period, spec.failure_threshold) == (manifest["periodSeconds"],
                                                         manifest["failureThreshold"])
        assert spec.timeout == manifest.get("timeoutSeconds", 1)
    assert ingest.termination_grace == 30
    assert rendered.migrate.command == ("python", "-m", "services.migrate")


def secret_value(docs: list[dict], name: str, key: str) -> str:
    return base64.b64decode(helm.by_kind_and_name(docs)[("Secret", name)]["data"][key]).decode()


def test_each_service_logs_in_as_its_own_role_with_the_rendered_password(rendered, docs):
    keys = {"ingest_iot": "ingest", "evaluator_iot": "evaluator", "ui_iot": "uiIot",
            "ops_worker": "opsWorker", "route_delivery": "routeDelivery"}
    users = set()
    for plan in rendered.containers:
        assert plan.env["DATABASE_URL"] == "postgresql://iot-postgresql:5432/iot"
        assert plan.env["PGPASSWORD"] == secret_value(docs, "iot-postgresql-roles",
                                                      keys[plan.service])
        users.add(plan.env["PGUSER"])
    assert len(users) == len(SERVICES), "a role per service"
    assert (rendered.database.host, rendered.database.port) == ("iot-postgresql", 5432)
    assert (rendered.nats.host, rendered.nats.port) == ("iot-nats", 4222)
    assert set(rendered.nats_users) == {"ingest_iot", "route_delivery"}
    assert set(rendered.database_users) == set(SERVICES)


def test_the_drills_superuser_is_the_renders_bootstrap_admin(rendered, docs):
    postgresql = helm.main_container(
        helm.by_kind_and_name(docs)[("StatefulSet", "iot-postgresql")])
    env = {item["name"]: item.get("value") for item in postgresql["env"]}
    assert rendered.database_admin == env["POSTGRES_USER"] == rendered.migrate.env[
        "DB_ADMIN_USER"]
    assert rendered.database_admin_password == secret_value(docs, "iot-postgresql", "password")
    assert rendered.migrate.env["PGUSER"] == "iot_owner"


def test_the_streams_init_container_and_the_nats_config_come_from_the_render(rendered, docs):
    assert rendered.streams.command == ("python", "-m", "services.migrate.nats")
    assert rendered.streams.env["NATS_USER"] == "owner"
    assert rendered.streams.env["NATS_PASSWORD"] == secret_value(docs, "iot-nats",
                                                                 "owner-password")
    assert rendered.nats_server.config == helm.by_kind_and_name(docs)[
        ("ConfigMap", "iot-nats")]["data"]["nats.conf"]
    assert rendered.nats_server.env["NATS_INGEST_PASSWORD"] == secret_value(
        docs, "iot-nats", "ingest-password")


def test_the_local_nats_config_keeps_the_chart_users_and_adds_only_the_drills(rendered,
                                                                             tmp_path):
    local = local_nats_config(rendered.nats_server, 41000, 41001, 41002, tmp_path)
    assert "listen: 127.0.0.1:41000" in local and "http: 127.0.0.1:41001" in local
    assert "0.0.0.0" not in local and "/data" not in local
    added = set(local.splitlines()) - set(rendered.nats_server.config.splitlines())
    assert {line.strip().split(",")[0] for line in added} == {
        "listen: 127.0.0.1:41000", "http: 127.0.0.1:41001", "listen: 127.0.0.1:41002",
        f"store_dir: {tmp_path / 'jetstream'}", f"pid_file: {tmp_path / 'nats.pid'}",
        '{ user: "drill"'}
    removed = set(rendered.nats_server.config.splitlines()) - set(local.splitlines())
    assert all("0.0.0.0" in line or "/data" in line or "8222" in line or "/var/run" in line
               for line in removed)


def test_a_render_without_the_admin_login_is_refused(docs):
    without_admin = copy.deepcopy(docs)
    for workload in helm.workloads(without_admin):
        for init in helm.pod_spec(workload).get("initContainers", []):
            init["env"] = [item for item in init.get("env", [])
                           if not item["name"].startswith("DB_ADMIN_")]
    with pytest.raises(RenderReadError, match="DB_ADMIN_USER"):
        platform_from_docs(without_admin)


def test_overrides_reach_the_probe_specs():
    rendered = read_render(set_values=("ingest.probes.readiness.periodSeconds=5",
                                       "probes.liveness.failureThreshold=4"))
    assert rendered.container("ingest_iot").probes["readiness"].period == 5
    assert rendered.container("ui_iot").probes["readiness"].period == 10
    assert {plan.probes["liveness"].failure_threshold for plan in rendered.containers} == {4}


def test_a_values_override_that_omits_a_probe_omits_it():
    rendered = read_render(set_values=("opsWorker.probes.startup.enabled=false",))
    assert "startup" not in rendered.container("ops_worker").probes
    assert "startup" in rendered.container("ui_iot").probes


def test_the_render_guard_stops_the_drill_before_anything_runs():
    with pytest.raises(helm.HelmRenderError, match="periodSeconds"):
        read_render(set_values=("ingest.probes.liveness.periodSeconds=5",))


def test_an_existing_secret_cannot_be_resolved_without_a_cluster(docs):
    without_secret = [doc for doc in docs if (doc["kind"], doc["metadata"]["name"])
                      != ("Secret", "iot-postgresql")]
    with pytest.raises(RenderReadError, match="Secret iot-postgresql"):
        platform_from_docs(without_secret)


def test_grpc_probes_are_refused_rather_than_faked():
    with pytest.raises(UnsupportedProbe):
        ProbeSpec.from_manifest("liveness", {"grpc": {"port": 8080}})


def test_endpoints_map_to_local_servers_only_where_host_and_port_match():
    mapping = {("iot-postgresql", 5432): 41000, ("iot-nats", 4222): 42000}
    assert rewrite_endpoints("postgresql://iot-postgresql:5432/iot", mapping) == \
        "postgresql://127.0.0.1:41000/iot"
    assert rewrite_endpoints("nats://iot-nats:4222", mapping) == "nats://127.0.0.1:42000"
    assert rewrite_endpoints("nats://iot-nats:42220", mapping) == "nats://iot-nats:42220"
    assert rewrite_endpoints("nats://my-iot-nats:4222", mapping) == "nats://my-iot-nats:4222"


def test_each_pod_gets_its_own_local_ports_and_only_documented_env_additions(rendered,
                                                                              tmp_path):
    platform = LocalPlatform(rendered, tmp_path,
                             extra_env={"ingest_iot": {"IOT_TEST_HOOKS": "true"}})
    health_ports = {plan.service: platform.networks[plan.service].local(8080)
                    for plan in rendered.containers}
    assert len(set(health_ports.values())) == len(SERVICES), "a distinct port per pod"
    for plan in rendered.containers:
        env = platform.container_env(plan)
        changed = {name for name in plan.env if env[name] != plan.env[name]}
        added = set(env) - set(plan.env)
        assert changed == {"HEALTH_PORT"}, "no servers yet: only the port is mapped"
        assert env["HEALTH_PORT"] == str(health_ports[plan.service])
        assert added == ({"IOT_TEST_HOOKS"} if plan.service == "ingest_iot" else set())
        # The probes reach the same local port as HEALTH_PORT.
        network = platform.networks[plan.service]
        assert network.local(plan.probes["readiness"].handler.port) == health_ports[
            plan.service]


def test_limits_follow_the_probe_values_and_the_time_scale(rendered):
    limits = Limits({p.service: p.probes for p in rendered.containers},
                    {p.service: p.termination_grace for p in rendered.containers},
                    TimeScale(0.1))
    # readiness 10 s x 2 + one period, x 0.1
    assert limits.not_ready("ingest_iot") == pytest.approx(3.0)
    # liveness 30 s x 3: between 2 and 4 periods, x 0.1
    assert limits.hang_restart_window("ingest_iot") == (pytest.approx(6.0), pytest.approx(12.0))
    # start-up budget 5 + 5 x 30, readiness 5 + 10 x 2, x 0.1, plus the real allowance
    assert limits.started_and_ready("ui_iot") == pytest.approx(18.0 + START_ALLOWANCE_SECONDS)
    # long enough for a liveness probe tied to a dependency to fail 3 times
    assert limits.dependency_hold() == 120


def test_cli_help_names_the_faults_and_exit_codes():
    result = subprocess.run([sys.executable, "-m", "iot_tools.drill", "--help"],
                            capture_output=True, text=True, timeout=60, check=True)
    for word in ("--values", "--set", "--time-scale", "--report", "hung-service",
                 "poison-storm", "consumer-deleted", "exit status"):
        assert word in result.stdout


def test_cli_reports_a_render_failure_with_exit_2():
    result = subprocess.run(
        [sys.executable, "-m", "iot_tools.drill", "--set",
         "ingest.probes.liveness.periodSeconds=5"],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "did not render" in result.stderr and "periodSeconds" in result.stderr
