"""Day-2 details of the chart: the Kubernetes versions it accepts (Chart.yaml kubeVersion),
diagnosticMode, `services.migrate.enabled`, NATS's lame-duck preStop (on a real nats-server),
pg_isready's own timeout below the probe's, and liveness probes that differ from readiness."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from iot_tools import helm
from iot_tools.chart_nats import Login, local_config, logins, nats_pod_env
from iot_tools.kube import KUBE_VERSIONS
from iot_tools.servers import free_port

MAJORS = (3, 4)
NATS_SERVER = Path(sys.executable).parent / "nats-server"
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
DIAGNOSTIC = ("diagnosticMode.enabled=true",)


def _containers(docs: list[dict], *, init: bool = False) -> dict[tuple[str, str], dict]:
    """{(workload, container): container} of every workload (init containers too if asked)."""
    found = {}
    for workload in helm.workloads(docs):
        pod = helm.pod_spec(workload)
        for container in pod["containers"] + (pod.get("initContainers", []) if init else []):
            found[(workload["metadata"]["name"], container["name"])] = container
    return found


# --- kubeVersion -------------------------------------------------------------------------------


@pytest.mark.parametrize("major", MAJORS)
def test_render_for_kubernetes_1_29_fails_with_helms_message(major):
    result = helm.template(major=major, kube_version="1.29.0")
    assert result.returncode != 0
    assert (
        "chart requires kubeVersion: >=1.30.0-0 which is incompatible with Kubernetes v1.29.0"
        in result.stderr
    )


@pytest.mark.parametrize("major", MAJORS)
@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_render_for_each_supported_kubernetes_validates_strictly(major, version, kube_validate):
    docs = helm.render(major=major, kube_version=version)
    errors = [error for doc in docs for error in kube_validate(doc, version)]
    assert errors == []


# --- diagnosticMode ----------------------------------------------------------------------------


def test_diagnostic_mode_runs_sleep_infinity_in_every_container(render):
    containers = _containers(render(*DIAGNOSTIC))
    assert len(containers) == 9
    for name, container in containers.items():
        assert (container["command"], container["args"]) == (["sleep"], ["infinity"]), name


def test_diagnostic_mode_renders_no_probe(render):
    for name, container in _containers(render(*DIAGNOSTIC)).items():
        assert not set(PROBES) & container.keys(), name


def test_diagnostic_mode_leaves_out_the_migrate_init_containers(render):
    for workload in helm.workloads(render(*DIAGNOSTIC)):
        assert "initContainers" not in helm.pod_spec(workload), workload["metadata"]["name"]


def test_diagnostic_mode_changes_only_process_probes_and_init_containers(
    render, base_docs, changes
):
    changed = changes(base_docs, render(*DIAGNOSTIC))
    assert changed
    allowed = {"command", "args", "initContainers", *PROBES}
    # the pod-template checksum of the values is not there: nothing else may change
    unexpected = {path for path in changed if not allowed & set(path)}
    assert unexpected == set()


def test_diagnostic_mode_command_and_args_are_overridable(render):
    docs = render(*DIAGNOSTIC, "diagnosticMode.command={/bin/sh,-c}",
                  "diagnosticMode.args={sleep 3600}")
    for name, container in _containers(docs).items():
        assert container["command"] == ["/bin/sh", "-c"], name
        assert container["args"] == ["sleep 3600"], name


def test_diagnostic_mode_with_no_args_renders_command_only(render, tmp_path):
    values = tmp_path / "diagnostic.yaml"
    # a file: `--set x={}` would give [""], not an empty list
    values.write_text("diagnosticMode: {enabled: true, command: [/bin/pause], args: []}\n")
    docs = render(values_files=(values,))
    for name, container in _containers(docs).items():
        assert container["command"] == ["/bin/pause"] and "args" not in container, name


def test_default_render_runs_each_components_own_process(default_renders):
    containers = _containers(default_renders[3])
    process = {name: (c.get("command"), c.get("args")) for name, c in containers.items()}
    assert process[("iot-ingest", "ingest")] == (["python", "-m", "services.ingest_iot"], None)
    assert process[("iot-keycloak", "keycloak")] == (None, ["start", "--import-realm"])
    assert process[("iot-nats", "nats")] == (None, ["--config", "/etc/nats/nats.conf"])
    assert process[("iot-emqx", "emqx")] == (None, None)
    assert process[("iot-postgresql", "postgresql")] == (None, None)


# --- services.migrate.enabled ------------------------------------------------------------------


def test_migrate_disabled_omits_every_migrate_init_container(render, base_docs, changes):
    """The switch is about the database schema: the `streams` init container (it manages the
    NATS streams) stays in the pods that use NATS, unchanged."""
    docs = render("services.migrate.enabled=false")
    services = [w for w in helm.workloads(docs) if w["kind"] == "Deployment"
                and w["metadata"]["name"] not in ("iot-keycloak", "iot-emqx")]
    assert len(services) == 5
    init = {w["metadata"]["name"]: [c["name"] for c in helm.pod_spec(w).get("initContainers", [])]
            for w in services}
    assert init == {"iot-ingest": ["streams"], "iot-evaluator": [], "iot-ui-iot": [],
                    "iot-ops-worker": [], "iot-route-delivery": ["streams"]}
    before = _containers(base_docs, init=True)
    after = _containers(docs, init=True)
    for name in (("iot-ingest", "streams"), ("iot-route-delivery", "streams")):
        assert after[name] == before[name]
    changed = changes(base_docs, docs)
    assert changed and all("initContainers" in path for path in changed)


def test_migrate_enabled_by_default_in_every_service(default_renders):
    containers = _containers(default_renders[3], init=True)
    migrate = {name for name in containers if name[1] == "migrate"}
    assert len(migrate) == 5
    for name in migrate:
        assert containers[name]["command"] == ["python", "-m", "services.migrate"]


# --- NATS lame duck ----------------------------------------------------------------------------


def _nats(docs: list[dict]) -> tuple[str, dict, dict]:
    kinds = helm.by_kind_and_name(docs)
    statefulset = kinds[("StatefulSet", "iot-nats")]
    return (kinds[("ConfigMap", "iot-nats")]["data"]["nats.conf"], statefulset,
            helm.main_container(statefulset))


def test_nats_prestop_signals_lame_duck_mode_through_the_pid_file(default_renders):
    config, statefulset, container = _nats(default_renders[3])
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command == ["nats-server", "--signal", "ldm=/var/run/nats/nats.pid"]
    assert "pid_file: /var/run/nats/nats.pid" in config
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in helm.pod_spec(statefulset)["volumes"]}
    assert "emptyDir" in volumes[mounts["/var/run/nats"]]  # writable with a read-only root


def test_nats_lame_duck_timings_come_from_values(render):
    config, statefulset, _ = _nats(render(
        "nats.lameDuck.durationSeconds=50", "nats.lameDuck.gracePeriodSeconds=8",
        "nats.terminationGracePeriodSeconds=55"))
    assert "lame_duck_duration: 50s" in config
    assert "lame_duck_grace_period: 8s" in config
    assert helm.pod_spec(statefulset)["terminationGracePeriodSeconds"] == 55


def test_nats_default_grace_period_outlasts_lame_duck(default_renders):
    config, statefulset, _ = _nats(default_renders[3])
    duration = int(re.search(r"lame_duck_duration: (\d+)s", config).group(1))
    assert helm.pod_spec(statefulset)["terminationGracePeriodSeconds"] >= duration + 5


def test_rendered_prestop_puts_a_real_nats_server_in_lame_duck_mode(render, tmp_path):
    """The default config and preStop command on a real nats-server with a connected client:
    the hook returns at once, the server logs lame-duck mode, refuses new clients and ignores
    SIGTERM (the kubelet's, sent right after the hook) while it still has a client, so it can
    close its clients over the lame-duck duration (not waited for here: 30 s at least). With
    no client at all it would exit at once. nats.conf reads the users' passwords from the
    pod's environment (the Secret iot-nats), so the server gets that environment and the
    client logs in as one of the chart's users."""
    assert NATS_SERVER.exists(), f"nats-server missing at {NATS_SERVER}: install the test extras"
    docs = render()
    config, _, container = _nats(docs)
    assert "lame_duck_grace_period: 5s" in config
    client, monitor, mqtt = free_port(), free_port(), free_port()
    pid_file = tmp_path / "nats.pid"
    local = local_config(config, client=client, monitor=monitor, mqtt=mqtt,
                         store=tmp_path / "js", pid_file=pid_file)
    (tmp_path / "nats.conf").write_text(local)
    server = subprocess.Popen(
        [str(NATS_SERVER), "--config", str(tmp_path / "nats.conf")],
        env={**os.environ, "POD_NAME": "iot-nats-0", **nats_pod_env(docs)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not pid_file.exists() or not _accepts(client):
            assert server.poll() is None and time.monotonic() < deadline, "nats-server not up"
            time.sleep(0.1)
        hook = [word.replace("/var/run/nats/nats.pid", str(pid_file))
                for word in container["lifecycle"]["preStop"]["exec"]["command"]]
        hook[0] = str(NATS_SERVER)
        client_connection = _nats_client(client, logins(docs)["ingest"])
        assert subprocess.run(hook, check=False, capture_output=True, timeout=10).returncode == 0
        deadline = time.monotonic() + 10
        while _accepts(client):
            assert time.monotonic() < deadline, "NATS still accepts clients in lame-duck mode"
            time.sleep(0.1)
        server.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert server.poll() is None, "SIGTERM stopped NATS during lame-duck mode"
        client_connection.close()
    finally:
        server.kill()
        _, stderr = server.communicate(timeout=10)
    assert "Entering lame duck mode" in stderr


def _nats_client(port: int, login: Login) -> socket.socket:
    """A connected NATS client (the protocol by hand: INFO, CONNECT with the login, PING ->
    PONG)."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=5)
    reader = connection.makefile("rb")
    assert reader.readline().startswith(b"INFO ")
    connect = json.dumps({"verbose": False, "user": login.user, "pass": login.password})
    connection.sendall(f"CONNECT {connect}\r\nPING\r\n".encode())
    assert reader.readline() == b"PONG\r\n"
    return connection


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# --- pg_isready -t -----------------------------------------------------------------------------


def _pg_probe(docs: list[dict], field: str) -> dict:
    statefulset = helm.by_kind_and_name(docs)[("StatefulSet", "iot-postgresql")]
    return helm.main_container(statefulset)[field]


def _pg_isready_timeout(command: list[str]) -> int:
    assert command[0] == "pg_isready" and command.count("-t") == 1, command
    return int(command[command.index("-t") + 1])


@pytest.mark.parametrize("field", ["readinessProbe", "startupProbe"])
def test_pg_isready_gives_up_one_second_before_the_probe(default_renders, field):
    probe = _pg_probe(default_renders[3], field)
    assert _pg_isready_timeout(probe["exec"]["command"]) == probe["timeoutSeconds"] - 1 >= 1


def test_pg_isready_timeout_follows_the_merged_probe_timeout(render):
    docs = render("postgresql.probes.readiness.timeoutSeconds=7")
    assert _pg_isready_timeout(_pg_probe(docs, "readinessProbe")["exec"]["command"]) == 6
    # the global default reaches PostgreSQL's readiness probe too
    docs = render("probes.readiness.timeoutSeconds=5")
    assert _pg_isready_timeout(_pg_probe(docs, "readinessProbe")["exec"]["command"]) == 4


def test_pg_isready_timeout_given_below_the_probe_timeout_is_kept():
    command = '["pg_isready","-h","127.0.0.1","-t","1"]'
    docs = helm.render(extra_args=(
        "--set-json", f"postgresql.probes.readiness.exec.command={command}"))
    assert _pg_probe(docs, "readinessProbe")["exec"]["command"] == [
        "pg_isready", "-h", "127.0.0.1", "-t", "1"]


# --- liveness distinct from readiness ----------------------------------------------------------


def test_no_container_has_identical_liveness_and_readiness(default_renders):
    for name, container in _containers(default_renders[3]).items():
        assert container["livenessProbe"] != container["readinessProbe"], name
        live = {k: v for k, v in container["livenessProbe"].items() if k in
                ("exec", "grpc", "httpGet", "tcpSocket")}
        ready = {k: v for k, v in container["readinessProbe"].items() if k in
                 ("exec", "grpc", "httpGet", "tcpSocket")}
        if name[0] in ("iot-emqx", "iot-postgresql"):
            assert live != ready, f"{name}: the same check for liveness and readiness"


def test_emqx_liveness_is_a_tcp_check_of_the_dashboard_listener(default_renders):
    container = _containers(default_renders[3])[("iot-emqx", "emqx")]
    assert container["livenessProbe"]["tcpSocket"] == {"port": 18083}
    assert container["readinessProbe"]["httpGet"] == {"path": "/api/v5/status", "port": 18083}


# --- every day-2 knob together: strict schemas, Helm 3 = Helm 4 ------------------------------

DAY2_VARIANT = (
    *DIAGNOSTIC,
    "services.migrate.enabled=false",
    "nats.lameDuck.durationSeconds=45",
    "nats.lameDuck.gracePeriodSeconds=10",
    "postgresql.probes.readiness.timeoutSeconds=5",
)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_day2_variant_validates_strictly(render, kube_validate, version):
    docs = render(*DAY2_VARIANT)
    assert [error for doc in docs for error in kube_validate(doc, version)] == []


def test_day2_variant_renders_identically_under_helm_3_and_4(fixed_secrets):
    renders = [helm.template(major=major, set_values=(*fixed_secrets, *DAY2_VARIANT))
               for major in MAJORS]
    assert all(result.returncode == 0 for result in renders), renders[0].stderr
    assert renders[0].stdout == renders[1].stdout


# --- bad values --------------------------------------------------------------------------------

# id -> (--set values or a --set-json flag and its value, texts the error must contain)
BAD = {
    "diagnostic-enabled-not-boolean": (["diagnosticMode.enabled=maybe"],
                                       ["/diagnosticMode/enabled", "want boolean"]),
    "diagnostic-empty-command": (["diagnosticMode.command={}"], ["/diagnosticMode/command"]),
    "diagnostic-unknown-key": (["diagnosticMode.sleep=1"], ["'sleep' not allowed"]),
    "migrate-enabled-not-boolean": (["services.migrate.enabled=maybe"],
                                    ["/services/migrate/enabled", "want boolean"]),
    "nats-prestop-sleep-gone": (["nats.preStopSleepSeconds=5"],
                                ["'preStopSleepSeconds' not allowed"]),
    "nats-lame-duck-too-short": (["nats.lameDuck.durationSeconds=29"],
                                 ["/nats/lameDuck/durationSeconds", "minimum"]),
    "nats-grace-not-below-duration": (
        ["nats.lameDuck.durationSeconds=30", "nats.lameDuck.gracePeriodSeconds=30"],
        ["nats.lameDuck.gracePeriodSeconds (30) must be below nats.lameDuck.durationSeconds (30)"],
    ),
    "nats-pod-grace-below-lame-duck": (
        ["nats.lameDuck.durationSeconds=60"],
        ["nats.terminationGracePeriodSeconds (60) is too short: it must be at least 65",
         "nats.lameDuck.durationSeconds"],
    ),
    "pg-probe-timeout-too-short-for-pg-isready": (
        ["postgresql.probes.readiness.timeoutSeconds=1"],
        ["postgresql.probes.readiness.timeoutSeconds (1) leaves pg_isready no timeout",
         "set postgresql.probes.readiness.timeoutSeconds to 2 or more"],
    ),
    "pg-isready-timeout-not-below-probe": (
        ["--set-json", 'postgresql.probes.startup.exec.command=["pg_isready","-t","3"]'],
        ["postgresql.probes.startup.exec.command runs pg_isready -t 3",
         "postgresql.probes.startup.timeoutSeconds - 1 (2)"],
    ),
    "pg-isready-timeout-zero": (
        ["postgresql.probes.readiness.exec.command={pg_isready,--timeout=0}"],
        ["runs pg_isready -t 0", "-t 0 waits forever"],
    ),
}


@pytest.mark.parametrize("major", MAJORS)
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_day2_values_fail_naming_the_field(case, major):
    arguments, expected = BAD[case]
    # entries are --set values, or a flag and its value (`--set-json`, for strings of digits)
    flags = tuple(arguments) if arguments[0].startswith("--") else ()
    set_values = () if flags else tuple(arguments)
    result = helm.template(major=major, set_values=set_values, extra_args=flags)
    assert result.returncode != 0, f"{case} rendered: {result.stdout[:300]}"
    for text in expected:
        assert text in result.stderr, f"{case}: {text!r} not in:\n{result.stderr}"
