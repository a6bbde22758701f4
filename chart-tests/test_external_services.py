"""An existing NATS (externalNats) and an existing PostgreSQL over TLS (externalDatabase.sslmode,
externalDatabase.tls): what ingest, routeDelivery, the other services and EMQX's bridge get;
credentials and CAs only through secretKeyRef and Secret volumes; the render refuses what
cannot work, naming the values."""

from __future__ import annotations

import pytest
from iot_tools import helm
from iot_tools.chart_cases import EXTERNAL_DATABASE_LOGINS

NATS_SERVICES = ("iot-ingest", "iot-route-delivery")
OTHER_SERVICES = ("iot-evaluator", "iot-ui-iot", "iot-ops-worker")

EXTERNAL_DB = (
    "postgresql.enabled=false",
    "externalDatabase.host=db.example",
    "externalDatabase.username=iot",
    "externalDatabase.database=iot",
    "externalDatabase.existingSecret=iot-db",
    *EXTERNAL_DATABASE_LOGINS,
)
EXTERNAL = (
    "nats.enabled=false",
    "externalNats.url=tls://nats.messaging.svc:4222",
    "externalNats.auth.existingSecret=nats-login",
    "externalNats.auth.usernameKey=user",
    "externalNats.tls.caSecret=nats-ca",
    "externalNats.mqtt.tls=true",
    "externalNats.mqtt.port=8883",
    *EXTERNAL_DB,
    "externalDatabase.sslmode=verify-full",
    "externalDatabase.tls.caSecret=db-ca",
    "externalDatabase.tls.caKey=root.crt",
)


@pytest.fixture(scope="module")
def external(render) -> dict[tuple[str, str], dict]:
    return helm.by_kind_and_name(render(*EXTERNAL))


def deployment(objects: dict, name: str) -> dict:
    return objects[("Deployment", name)]


def containers(workload: dict) -> dict[str, dict]:
    spec = helm.pod_spec(workload)
    return {c["name"]: c for c in [*spec.get("initContainers", []), *spec["containers"]]}


def volumes(workload: dict) -> dict[str, dict]:
    return {v["name"]: v for v in helm.pod_spec(workload)["volumes"]}


def mounts(container: dict) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}


def test_no_nats_objects_with_external_nats(external):
    assert [key for key in external if key[1] == "iot-nats"] == []


@pytest.mark.parametrize("name", NATS_SERVICES)
def test_nats_users_get_the_external_url_login_and_ca(external, name):
    env = helm.env_by_name(helm.main_container(deployment(external, name)))
    assert env["NATS_URL"] == {"name": "NATS_URL", "value": "tls://nats.messaging.svc:4222"}
    assert env["NATS_USER"]["valueFrom"] == {"secretKeyRef": {"name": "nats-login", "key": "user"}}
    assert env["NATS_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "nats-login", "key": "password"}}
    assert env["NATS_TLS_CA_FILE"]["value"] == "/etc/iot/nats-ca/ca.crt"


@pytest.mark.parametrize("name", NATS_SERVICES)
def test_nats_ca_is_mounted_from_its_secret(external, name):
    workload = deployment(external, name)
    assert volumes(workload)["nats-ca"]["secret"] == {
        "secretName": "nats-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    assert mounts(helm.main_container(workload))["nats-ca"] == "/etc/iot/nats-ca"


@pytest.mark.parametrize("name", OTHER_SERVICES)
def test_services_without_nats_get_neither_its_env_nor_its_ca(external, name):
    workload = deployment(external, name)
    env = helm.env_by_name(helm.main_container(workload))
    assert [n for n in env if n.startswith("NATS_")] == []
    assert "nats-ca" not in volumes(workload)


@pytest.mark.parametrize("name", NATS_SERVICES + OTHER_SERVICES)
def test_database_tls_reaches_every_service_and_its_migrate_container(external, name):
    workload = deployment(external, name)
    assert volumes(workload)["db-ca"]["secret"] == {
        "secretName": "db-ca", "items": [{"key": "root.crt", "path": "ca.crt"}]}
    users = {key: c for key, c in containers(workload).items() if key != "streams"}
    assert set(users) == {"migrate", name.removeprefix("iot-")}
    for container in users.values():
        env = helm.env_by_name(container)
        assert env["PGSSLMODE"]["value"] == "verify-full"
        assert env["PGSSLROOTCERT"]["value"] == "/etc/iot/db-ca/ca.crt"
        assert mounts(container)["db-ca"] == "/etc/iot/db-ca"


@pytest.mark.parametrize("name", NATS_SERVICES)
def test_streams_init_container_gets_the_nats_ca_and_nothing_of_the_database(external, name):
    """`streams` manages the NATS streams: the external NATS's login and CA, no PG* variable,
    no database CA."""
    streams = containers(deployment(external, name))["streams"]
    env = helm.env_by_name(streams)
    assert env["NATS_URL"]["value"] == "tls://nats.messaging.svc:4222"
    assert env["NATS_USER"]["valueFrom"] == {"secretKeyRef": {"name": "nats-login", "key": "user"}}
    assert env["NATS_TLS_CA_FILE"]["value"] == "/etc/iot/nats-ca/ca.crt"
    assert mounts(streams)["nats-ca"] == "/etc/iot/nats-ca"
    assert [n for n in env if n.startswith(("PG", "DB_", "DATABASE_"))] == []
    assert "db-ca" not in mounts(streams)


def test_default_render_sets_no_tls_variables(default_renders):
    for workload in helm.workloads(default_renders[3]):
        for container in containers(workload).values():
            names = set(helm.env_by_name(container))
            assert names.isdisjoint({"PGSSLMODE", "PGSSLROOTCERT", "NATS_TLS_CA_FILE"}), (
                workload["metadata"]["name"])
            assert not {"db-ca", "nats-ca"} & set(mounts(container)), workload["metadata"]["name"]


def test_default_render_logs_in_to_nats_from_the_charts_own_secret(default_renders):
    """Without externalNats the NATS logins come from the generated Secret iot-nats, never from
    an external login Secret."""
    logged_in = set()
    for workload in helm.workloads(default_renders[3]):
        for key, container in containers(workload).items():
            env = helm.env_by_name(container)
            if "NATS_PASSWORD" in env:
                assert env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "iot-nats"
                assert "value" in env["NATS_USER"]  # the chart's user name, not a Secret's
                logged_in.add((workload["metadata"]["name"], key))
    assert logged_in == {(name, container) for name in NATS_SERVICES
                         for container in ("streams", name.removeprefix("iot-"))}


def test_default_nats_url_is_the_in_chart_service(default_renders):
    objects = helm.by_kind_and_name(default_renders[3])
    env = helm.env_by_name(helm.main_container(deployment(objects, "iot-ingest")))
    assert env["NATS_URL"]["value"] == "nats://iot-nats:4222"


def test_sslmode_without_ca_sets_only_pgsslmode(render):
    objects = helm.by_kind_and_name(render(*EXTERNAL_DB, "externalDatabase.sslmode=require"))
    workload = deployment(objects, "iot-evaluator")
    env = helm.env_by_name(helm.main_container(workload))
    assert env["PGSSLMODE"]["value"] == "require"
    assert "PGSSLROOTCERT" not in env
    assert "db-ca" not in volumes(workload)


def test_emqx_bridge_targets_the_external_mqtt_listener_over_tls(external):
    conf = external[("ConfigMap", "iot-emqx")]["data"]["emqx.conf"]
    assert 'server = "nats.messaging.svc:8883"' in conf
    assert 'cacertfile = "/opt/emqx/etc/nats-ca/ca.crt"' in conf
    assert 'server_name_indication = "nats.messaging.svc"' in conf
    emqx = deployment(external, "iot-emqx")
    assert volumes(emqx)["nats-ca"]["secret"]["secretName"] == "nats-ca"
    assert mounts(helm.main_container(emqx))["nats-ca"] == "/opt/emqx/etc/nats-ca"


def test_emqx_bridge_logs_in_from_the_secret(external):
    env = helm.env_by_name(helm.main_container(deployment(external, "iot-emqx")))
    assert env["EMQX_CONNECTORS__MQTT__NATS__USERNAME"]["valueFrom"]["secretKeyRef"] == {
        "name": "nats-login", "key": "user"}
    assert env["EMQX_CONNECTORS__MQTT__NATS__PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "nats-login", "key": "password"}


def test_emqx_bridge_mqtt_host_can_differ_from_the_url(render):
    objects = helm.by_kind_and_name(render(
        "nats.enabled=false", "externalNats.url=nats://nats.messaging:4222",
        "externalNats.mqtt.host=nats-mqtt.messaging"))
    conf = objects[("ConfigMap", "iot-emqx")]["data"]["emqx.conf"]
    assert 'server = "nats-mqtt.messaging:1883"' in conf
    assert "ssl {" not in conf.split("connectors.mqtt.nats")[1].split("actions.")[0]


def test_credentials_only_through_secret_key_refs(external):
    for workload in helm.workloads(list(external.values())):
        for container in containers(workload).values():
            for entry in container.get("env", []):
                if entry["name"] in {"NATS_PASSWORD", "PGPASSWORD", "NATS_USER",
                                     "EMQX_CONNECTORS__MQTT__NATS__PASSWORD"}:
                    assert "value" not in entry and "secretKeyRef" in entry["valueFrom"]


def test_external_render_is_identical_under_helm_3_and_4(fixed_secrets):
    values = (*fixed_secrets, *EXTERNAL)
    three, four = (helm.template(major=major, set_values=values) for major in (3, 4))
    assert three.returncode == 0, three.stderr
    assert three.stdout == four.stdout


# id -> (--set values, texts the error must contain)
REFUSED = {
    "no-nats-at-all": (
        ["nats.enabled=false"],
        ["nats.enabled=false and externalNats.url is empty", "set externalNats.url",
         "or nats.enabled=true"]),
    "nats-url-with-credentials": (
        ["nats.enabled=false", "externalNats.url=nats://iot:hunter2@nats:4222"],
        ["externalNats.url carries credentials", "externalNats.auth.existingSecret"]),
    "bridge-tls-without-ca": (
        ["nats.enabled=false", "externalNats.url=nats://nats:4222", "externalNats.mqtt.tls=true"],
        ["externalNats.mqtt.tls=true needs", "set externalNats.tls.caSecret"]),
    "bridge-without-external-mqtt": (
        ["nats.enabled=false", "externalNats.url=nats://nats:4222", "externalNats.mqtt.port=0"],
        ["emqx.bridgeToNats.enabled needs the MQTT listener of the external NATS",
         "externalNats.mqtt.port", "emqx.bridgeToNats.enabled=false"]),
    "database-ca-without-verify": (
        [*EXTERNAL_DB, "externalDatabase.sslmode=require", "externalDatabase.tls.caSecret=db-ca"],
        ["externalDatabase.tls.caSecret is set but externalDatabase.sslmode is \"require\"",
         "externalDatabase.sslmode=verify-full"]),
    "env-shadows-nats-url": (
        ["nats.enabled=false", "externalNats.url=nats://nats:4222",
         "routeDelivery.env.NATS_URL=nats://other:4222"],
        ["routeDelivery.env.NATS_URL is set by the chart itself",
         "nats.enabled or externalNats.url"]),
    "env-shadows-pgsslmode": (
        [*EXTERNAL_DB, "externalDatabase.sslmode=require", "uiIot.env.PGSSLMODE=disable"],
        ["uiIot.env.PGSSLMODE is set by the chart itself", "externalDatabase.sslmode"]),
    # schema
    "sslmode-unknown": (
        ["externalDatabase.sslmode=verify_full"], ["/externalDatabase/sslmode", "must be one of"]),
    "nats-url-not-nats": (
        ["externalNats.url=http://nats:4222"], ["/externalNats/url", "does not match pattern"]),
    "mqtt-port-out-of-range": (
        ["externalNats.mqtt.port=70000"], ["/externalNats/mqtt/port", "maximum"]),
    "ca-secret-not-a-name": (
        ["externalNats.tls.caSecret=Nats_CA"], ["/externalNats/tls/caSecret", "pattern"]),
    "ca-key-empty": (
        ["externalDatabase.tls.caKey="], ["/externalDatabase/tls/caKey"]),
    "typo-in-external-nats": (
        ["externalNats.auth.existingSecrets=x"], ["'existingSecrets' not allowed"]),
}


@pytest.mark.parametrize("major", [3, 4])
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_unworkable_external_services_fail_naming_the_values(case, major):
    set_values, expected = REFUSED[case]
    result = helm.template(major=major, set_values=tuple(set_values))
    assert result.returncode != 0, f"{case} rendered"
    for text in expected:
        assert text in result.stderr, f"{case}: {text!r} not in:\n{result.stderr}"
