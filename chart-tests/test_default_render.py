"""The chart rendered with its default values: probes, labels, security, rollout, the services'
contract (command, port, env, migration), Services and PodDisruptionBudgets."""

from __future__ import annotations

import pytest
from iot_tools import helm

MAJORS = (3, 4)

# The documented probe contract, written out (not read from values.yaml): global defaults...
LIVENESS = {
    "httpGet": {"path": "/health", "port": 8080},
    "initialDelaySeconds": 10,
    "periodSeconds": 30,
    "timeoutSeconds": 5,
    "failureThreshold": 3,
}
READINESS = {
    "httpGet": {"path": "/ready", "port": 8080},
    "initialDelaySeconds": 5,
    "periodSeconds": 10,
    "timeoutSeconds": 3,
    "failureThreshold": 2,
}
STARTUP = {
    "httpGet": {"path": "/health", "port": 8080},
    "initialDelaySeconds": 5,
    "periodSeconds": 5,
    "failureThreshold": 30,
}


HANDLERS = {"exec", "grpc", "httpGet", "tcpSocket"}


def _with(default: dict, **fields) -> dict:
    """A default probe with documented overrides; naming a handler replaces the default's."""
    dropped = HANDLERS if HANDLERS & fields.keys() else set()
    return {**{k: v for k, v in default.items() if k not in dropped}, **fields}


def _http(path: str, port: int) -> dict:
    return {"httpGet": {"path": path, "port": port}}


# pg_isready gives up one second before the probe does (-t timeoutSeconds - 1; both are 3 s).
PG_ISREADY = {"exec": {"command": ["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-t", "2"]}}

# ...and each workload's documented overrides (values.yaml), ports resolved to numbers.
EXPECTED_PROBES = {
    ("iot-ingest", "ingest"): {"liveness": LIVENESS, "readiness": READINESS, "startup": STARTUP},
    ("iot-evaluator", "evaluator"): {
        "liveness": LIVENESS,
        "readiness": READINESS,
        "startup": STARTUP,
    },
    ("iot-ui-iot", "ui-iot"): {"liveness": LIVENESS, "readiness": READINESS, "startup": STARTUP},
    ("iot-ops-worker", "ops-worker"): {
        "liveness": LIVENESS,
        "readiness": READINESS,
        "startup": STARTUP,
    },
    ("iot-route-delivery", "route-delivery"): {
        "liveness": LIVENESS,
        "readiness": READINESS,
        "startup": STARTUP,
    },
    ("iot-keycloak", "keycloak"): {
        "liveness": _with(LIVENESS, **_http("/health/live", 9000)),
        "readiness": _with(READINESS, **_http("/health/ready", 9000)),
        "startup": _with(STARTUP, **_http("/health/started", 9000), failureThreshold=60),
    },
    ("iot-emqx", "emqx"): {
        "liveness": _with(LIVENESS, tcpSocket={"port": 18083}),
        "readiness": _with(READINESS, **_http("/api/v5/status", 18083)),
        "startup": _with(STARTUP, **_http("/api/v5/status", 18083)),
    },
    ("iot-nats", "nats"): {
        "liveness": _with(LIVENESS, **_http("/healthz?js-enabled-only=true", 8222)),
        "readiness": _with(READINESS, **_http("/healthz?js-server-only=true", 8222)),
        "startup": _with(STARTUP, **_http("/healthz", 8222), failureThreshold=60),
    },
    ("iot-postgresql", "postgresql"): {
        "liveness": _with(LIVENESS, tcpSocket={"port": 5432}),
        "readiness": _with(READINESS, **PG_ISREADY),
        "startup": _with(STARTUP, **PG_ISREADY, timeoutSeconds=3, failureThreshold=60),
    },
}

COMPONENT_LABELS = {
    "iot-ingest": "ingest",
    "iot-evaluator": "evaluator",
    "iot-ui-iot": "ui-iot",
    "iot-ops-worker": "ops-worker",
    "iot-route-delivery": "route-delivery",
    "iot-keycloak": "keycloak",
    "iot-emqx": "emqx",
    "iot-nats": "nats",
    "iot-postgresql": "postgresql",
}

# The Python services: workload name -> (module, uses NATS, replicas).
SERVICES = {
    "iot-ingest": ("services.ingest_iot", True, 2),
    "iot-evaluator": ("services.evaluator_iot", False, 1),
    "iot-ui-iot": ("services.ui_iot", False, 2),
    "iot-ops-worker": ("services.ops_worker", False, 1),
    "iot-route-delivery": ("services.route_delivery", True, 2),
}

SERVICE_KNOBS = {
    "iot-ingest": {
        "BATCH_SIZE": "500",
        "FLUSH_INTERVAL_MS": "200",
        "MAX_PAYLOAD_BYTES": "65536",
        "MAX_BUFFERED_BYTES": "33554432",
        "TS_MAX_AGE_SECONDS": "2592000",
        "TS_MAX_FUTURE_SECONDS": "300",
        # stream limits (nats.jetstream.streams): 4Gi, 7 days; 1Gi, 1 day
        "TELEMETRY_MAX_BYTES": "4294967296",
        "TELEMETRY_MAX_AGE_SECONDS": "604800",
        "ROUTES_MAX_BYTES": "1073741824",
        "ROUTES_MAX_AGE_SECONDS": "86400",
    },
    "iot-evaluator": {"POLL_INTERVAL_SECONDS": "10"},
    "iot-ui-iot": {
        # sign-in (uiIot.auth): issuer by Keycloak's Service name while keycloak.hostname is empty
        "AUTH_ENABLED": "true",
        "AUTH_ISSUER_URL": "http://iot-keycloak:8080/realms/iot",
        "AUTH_AUDIENCE": "iot-api",
        "AUTH_CLIENT_ID": "iot-ui",
        "AUTH_JWKS_URL": "http://iot-keycloak:8080/realms/iot/protocol/openid-connect/certs",
        "AUTH_LEEWAY_SECONDS": "30",
    },
    "iot-ops-worker": {
        "OFFLINE_AFTER_SECONDS": "300",
        "RETENTION_DAYS": "30",
        "MAINTENANCE_INTERVAL_SECONDS": "60",
    },
    "iot-route-delivery": {
        "MAX_ATTEMPTS": "5",
        "REQUEST_TIMEOUT_SECONDS": "5",
        "ENDPOINT_CONCURRENCY": "4",
        "CIRCUIT_FAILURE_THRESHOLD": "5",
        "CIRCUIT_OPEN_SECONDS": "30",
        "ROUTES_MAX_BYTES": "1073741824",
        "ROUTES_MAX_AGE_SECONDS": "86400",
    },
}


def _workload(docs: list[dict], name: str) -> dict:
    (found,) = [w for w in helm.workloads(docs) if w["metadata"]["name"] == name]
    return found


def _main_container(docs: list[dict], name: str) -> dict:
    return helm.main_container(_workload(docs, name))


_env = helm.env_by_name


@pytest.mark.parametrize("major", MAJORS)
def test_every_container_has_the_documented_three_probes(default_renders, probes_of, major):
    assert probes_of(default_renders[major]) == EXPECTED_PROBES


def test_every_workload_carries_the_standard_labels_with_its_component(default_renders):
    docs = default_renders[3]
    for workload in helm.workloads(docs):
        name = workload["metadata"]["name"]
        for labels in (
            workload["metadata"]["labels"],
            workload["spec"]["template"]["metadata"]["labels"],
        ):
            assert labels["app.kubernetes.io/component"] == COMPONENT_LABELS[name]
            assert labels["app.kubernetes.io/name"] == "iot-platform"
            assert labels["app.kubernetes.io/instance"] == "iot"
            assert labels["app.kubernetes.io/managed-by"] == "Helm"
            assert labels["app.kubernetes.io/part-of"] == "iot-platform"
            assert labels["helm.sh/chart"] == "iot-platform-0.1.0"
            assert labels["app.kubernetes.io/version"]
    assert {w["metadata"]["name"] for w in helm.workloads(docs)} == set(COMPONENT_LABELS)


def test_every_object_carries_the_standard_labels(default_renders):
    for doc in default_renders[3]:
        labels = doc["metadata"]["labels"]
        # `helm test` pods are labelled `test`: a component's label would put them behind its
        # Service
        is_test = doc["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"
        components = {"test"} if is_test else set(COMPONENT_LABELS.values())
        if doc["kind"] == "NetworkPolicy":  # one for all pods, one for the `helm test` pods
            components |= {"default-deny", "test"}
        assert labels["app.kubernetes.io/component"] in components, doc["metadata"]
        assert labels["helm.sh/chart"] == "iot-platform-0.1.0"


def test_containers_are_hardened(default_renders):
    for workload in helm.workloads(default_renders[3]):
        pod = helm.pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod.get("initContainers", []) + pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["runAsNonRoot"] is True
            assert context["runAsUser"] > 0
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
            assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
            assert {"cpu", "memory"} <= container["resources"]["limits"].keys()


def test_root_filesystem_is_read_only_except_keycloak(default_renders):
    """Keycloak's stock image re-augments itself at start; every other image runs read-only."""
    for workload in helm.workloads(default_renders[3]):
        for container in helm.pod_spec(workload)["containers"]:
            read_only = container["securityContext"]["readOnlyRootFilesystem"]
            assert read_only is (workload["metadata"]["name"] != "iot-keycloak")


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_runs_its_module_from_the_one_image_as_10001(default_renders, name):
    module, _, _ = SERVICES[name]
    container = _main_container(default_renders[3], name)
    assert container["image"] == "ghcr.io/iot-platform/iot-services:0.1.0"
    assert container["command"] == ["python", "-m", module]
    assert container["ports"] == [{"name": "health", "containerPort": 8080, "protocol": "TCP"}]
    assert container["securityContext"]["runAsUser"] == 10001
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


DATABASE_ROLES = {
    "iot-ingest": ("ingest", "iot_ingest"), "iot-evaluator": ("evaluator", "iot_evaluator"),
    "iot-ui-iot": ("uiIot", "iot_ui"), "iot-ops-worker": ("opsWorker", "iot_ops"),
    "iot-route-delivery": ("routeDelivery", "iot_route_delivery"),
}


NATS_USERS = {
    "iot-ingest": ("ingest", "ingest-password"),
    "iot-route-delivery": ("route-delivery", "route-delivery-password"),
}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_env_follows_the_contract(default_renders, name):
    _, uses_nats, _ = SERVICES[name]
    env = _env(_main_container(default_renders[3], name))
    # Each service logs in as its own role (chart-tests/test_db_roles.py).
    key, role = DATABASE_ROLES[name]
    assert env["DATABASE_URL"]["value"] == "postgresql://iot-postgresql:5432/iot"
    assert env["PGUSER"]["value"] == role
    assert env["PGPASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "iot-postgresql-roles", "key": key}
    }
    assert env["HEALTH_PORT"]["value"] == "8080"
    assert env["DRAIN_DELAY_SECONDS"]["value"] == "5"
    assert env["SHUTDOWN_TIMEOUT_SECONDS"]["value"] == "15"
    assert env["WORKER_STALL_SECONDS"]["value"] == "120"
    assert env["LOG_LEVEL"]["value"] == "INFO"
    assert ("NATS_URL" in env) is uses_nats
    if uses_nats:
        # Each NATS client logs in as its own user (chart-tests/test_nats_auth.py).
        user, secret_key = NATS_USERS[name]
        assert env["NATS_URL"]["value"] == "nats://iot-nats:4222"
        assert env["NATS_USER"]["value"] == user
        assert env["NATS_PASSWORD"]["valueFrom"] == {
            "secretKeyRef": {"name": "iot-nats", "key": secret_key}
        }
        assert env["NATS_INBOX_PREFIX"]["value"] == f"_INBOX.{user}"
    for knob, value in SERVICE_KNOBS[name].items():
        assert env[knob]["value"] == value
    contract = {
        "DATABASE_URL",
        "PGUSER",
        "PGPASSWORD",
        "HEALTH_PORT",
        "DRAIN_DELAY_SECONDS",
        "SHUTDOWN_TIMEOUT_SECONDS",
        "WORKER_STALL_SECONDS",
        "LOG_LEVEL",
        *(("NATS_URL", "NATS_USER", "NATS_PASSWORD", "NATS_INBOX_PREFIX") if uses_nats else ()),
    }
    assert set(env) <= contract | set(SERVICE_KNOBS[name])


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_pod_migrates_first_without_probes(default_renders, name):
    pod = helm.pod_spec(_workload(default_renders[3], name))
    init = {container["name"]: container for container in pod["initContainers"]}
    # The pods that use NATS also create their streams first, as the NATS owner.
    assert set(init) == ({"streams", "migrate"} if name in NATS_USERS else {"migrate"})
    migrate = init["migrate"]
    main = pod["containers"][0]
    assert migrate["name"] == "migrate"
    assert migrate["command"] == ["python", "-m", "services.migrate"]
    assert migrate["image"] == main["image"]
    env = _env(migrate)
    assert env["MIGRATE_WAIT_SECONDS"]["value"] == "300"
    assert env["DATABASE_URL"] == _env(main)["DATABASE_URL"]
    # migrate runs as the owner, with the superuser's login for the roles (roles.py)
    assert env["PGUSER"]["value"] == "iot_owner"
    assert env["DB_ADMIN_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "iot-postgresql", "key": "password"}
    }
    assert not {"livenessProbe", "readinessProbe", "startupProbe"} & migrate.keys()


@pytest.mark.parametrize("name", sorted(NATS_USERS))
def test_nats_service_pod_creates_its_streams_first_as_the_nats_owner(default_renders, name):
    pod = helm.pod_spec(_workload(default_renders[3], name))
    (streams,) = [c for c in pod["initContainers"] if c["name"] == "streams"]
    assert streams["command"] == ["python", "-m", "services.migrate.nats"]
    assert streams["image"] == pod["containers"][0]["image"]
    env = _env(streams)
    assert env["NATS_URL"]["value"] == "nats://iot-nats:4222"
    assert env["NATS_USER"]["value"] == "owner"
    assert env["NATS_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "iot-nats", "key": "owner-password"}
    }
    assert env["MIGRATE_WAIT_SECONDS"]["value"] == "300"
    # It manages NATS streams only: no database login reaches it.
    assert not {key for key in env if key.startswith(("PG", "DB_", "DATABASE_"))}
    assert not {"livenessProbe", "readinessProbe", "startupProbe"} & streams.keys()


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_rollout_keeps_capacity_and_grace_covers_the_drain(default_renders, name):
    workload = _workload(default_renders[3], name)
    assert workload["spec"]["replicas"] == SERVICES[name][2]
    assert workload["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod = helm.pod_spec(workload)
    # drain 5 s + shutdown 15 s + 5 s margin = 25 s <= 30 s; the services drain themselves.
    assert pod["terminationGracePeriodSeconds"] == 30
    assert "lifecycle" not in pod["containers"][0]


def test_pod_disruption_budgets_only_where_replicas_exceed_one(default_renders):
    docs = default_renders[3]
    budgets = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "PodDisruptionBudget"}
    multi = {w["metadata"]["name"] for w in helm.workloads(docs) if w["spec"]["replicas"] > 1}
    assert set(budgets) == multi == {"iot-ingest", "iot-ui-iot", "iot-route-delivery"}
    for name, budget in budgets.items():
        assert budget["spec"]["maxUnavailable"] == 1
        assert (
            budget["spec"]["selector"]["matchLabels"]
            == (_workload(docs, name)["spec"]["selector"]["matchLabels"])
        )


def test_only_needed_ports_are_exposed_through_services(default_renders):
    services = {
        doc["metadata"]["name"]: {
            (p["name"], p["port"], p["targetPort"]) for p in doc["spec"]["ports"]
        }
        for doc in default_renders[3]
        if doc["kind"] == "Service"
    }
    assert services == {
        "iot-ui-iot": {("http", 80, "health")},
        "iot-keycloak": {("http", 8080, "http")},
        "iot-emqx": {("mqtt", 1883, "mqtt")},
        # monitor: NATS's read-only /healthz for `helm test` (templates/tests/nats-healthz.yaml)
        "iot-nats": {("client", 4222, "client"), ("monitor", 8222, "monitor"),
                     ("mqtt", 1883, "mqtt")},
        "iot-postgresql": {("postgresql", 5432, "postgresql")},
    }
    for doc in default_renders[3]:
        if doc["kind"] == "Service":
            assert doc["spec"]["type"] == "ClusterIP"


def test_third_party_containers_delay_their_stop_within_the_grace_period(default_renders):
    for name in ("iot-keycloak", "iot-emqx", "iot-postgresql"):
        pod = helm.pod_spec(_workload(default_renders[3], name))
        sleep = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert sleep == 5
        assert pod["terminationGracePeriodSeconds"] >= sleep + 5
    # NATS enters lame-duck mode instead (chart-tests/test_day2.py)
    nats = helm.pod_spec(_workload(default_renders[3], "iot-nats"))["containers"][0]
    assert "exec" in nats["lifecycle"]["preStop"]


def test_nats_runs_jetstream_on_a_volume_claim_with_monitoring_declared(default_renders):
    docs = default_renders[3]
    nats = _workload(docs, "iot-nats")
    assert nats["kind"] == "StatefulSet"
    (claim,) = nats["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    container = helm.pod_spec(nats)["containers"][0]
    assert {"name": "monitor", "containerPort": 8222, "protocol": "TCP"} in container["ports"]
    assert {"name": "jetstream", "mountPath": "/data"} in container["volumeMounts"]
    config = helm.by_kind_and_name(docs)[("ConfigMap", "iot-nats")]["data"]["nats.conf"]
    assert "http_port: 8222" in config
    assert "store_dir: /data" in config
    assert "mqtt {" in config


def test_keycloak_enables_health_on_its_management_port(default_renders):
    container = _main_container(default_renders[3], "iot-keycloak")
    env = _env(container)
    assert env["KC_HEALTH_ENABLED"]["value"] == "true"
    assert env["KC_HTTP_MANAGEMENT_PORT"]["value"] == "9000"
    assert {"name": "management", "containerPort": 9000, "protocol": "TCP"} in container["ports"]
    assert env["KC_DB_URL_HOST"]["value"] == "iot-postgresql"
    assert env["KC_DB_URL_DATABASE"]["value"] == "keycloak"


def test_in_chart_postgresql_leaves_keycloaks_database_to_migrate(default_renders):
    docs = default_renders[3]
    init = helm.by_kind_and_name(docs)[("ConfigMap", "iot-postgresql-init")]["data"]
    # migrate creates Keycloak's role and database on every start (upgrades too):
    # chart-tests/test_db_roles.py, services/tests/test_db_roles.py.
    assert "CREATE" not in init["10-keycloak.sql"]
    postgres = _workload(docs, "iot-postgresql")
    assert postgres["kind"] == "StatefulSet"
    (claim,) = postgres["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"


def test_emqx_bridges_telemetry_to_nats_mqtt(default_renders):
    docs = default_renders[3]
    config = helm.by_kind_and_name(docs)[("ConfigMap", "iot-emqx")]["data"]["emqx.conf"]
    assert 'server = "iot-nats:1883"' in config
    assert 'proto_ver = "v4"' in config  # NATS speaks MQTT 3.1.1 only
    assert 'sql = "SELECT * FROM \\"telemetry/#\\""' in config
    assert 'actions = ["mqtt:telemetry_to_nats"]' in config
