"""Passwords reach pods only through Secrets: never as plain values in a workload, and with
existingSecret the chart renders no Secret of its own and points the workloads at the given one."""

from __future__ import annotations

import base64

import yaml
from iot_tools import helm
from iot_tools.chart_cases import EXTERNAL_DATABASE_LOGINS

PASSWORDS = {
    "postgresql.auth.password": "pg-Secret-Value-7f3a",
    "keycloak.admin.password": "kc-Secret-Value-91bd",
    "emqx.auth.nodeCookie": "emqx-Cookie-Value-c2e4",
    "emqx.auth.dashboardPassword": "emqx-Secret-Value-5d8f",
}


def _secret_refs(docs: list[dict]) -> set[tuple[str, str, str]]:
    """(workload, env name, secret name) of every secretKeyRef in every container."""
    refs = set()
    for workload in helm.workloads(docs):
        pod = helm.pod_spec(workload)
        for container in pod.get("initContainers", []) + pod["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((workload["metadata"]["name"], env["name"], ref["name"]))
    return refs


def test_given_passwords_appear_only_inside_secrets():
    docs = helm.render(set_values=tuple(f"{k}={v}" for k, v in PASSWORDS.items()))
    outside = yaml.safe_dump_all([doc for doc in docs if doc["kind"] != "Secret"])
    secrets = yaml.safe_dump_all([doc for doc in docs if doc["kind"] == "Secret"])
    for password in PASSWORDS.values():
        encoded = base64.b64encode(password.encode()).decode()
        assert password not in outside and encoded not in outside
        assert encoded in secrets


def test_generated_passwords_are_set_and_differ_per_render():
    first, second = (helm.by_kind_and_name(helm.render()) for _ in range(2))
    for key in (("Secret", "iot-postgresql"), ("Secret", "iot-keycloak"),
                ("Secret", "iot-postgresql-roles")):
        assert first[key]["data"] != second[key]["data"]
        assert all(len(base64.b64decode(v)) == 32 for v in first[key]["data"].values())


def test_workloads_read_passwords_from_the_chart_secrets(default_renders):
    refs = _secret_refs(default_renders[3])
    assert ("iot-ingest", "PGPASSWORD", "iot-postgresql-roles") in refs
    assert ("iot-ingest", "DB_ADMIN_PASSWORD", "iot-postgresql") in refs  # migrate's
    assert ("iot-keycloak", "KC_DB_PASSWORD", "iot-postgresql-roles") in refs
    assert ("iot-keycloak", "KC_BOOTSTRAP_ADMIN_PASSWORD", "iot-keycloak") in refs
    assert ("iot-postgresql", "POSTGRES_PASSWORD", "iot-postgresql") in refs
    assert ("iot-emqx", "EMQX_DASHBOARD__DEFAULT_PASSWORD", "iot-emqx") in refs


def test_existing_secrets_replace_the_chart_secrets():
    docs = helm.render(
        set_values=(
            "postgresql.auth.existingSecret=my-db",
            "postgresql.auth.existingSecretPasswordKey=pw",
            "keycloak.admin.existingSecret=my-kc",
            "emqx.auth.existingSecret=my-emqx",
            "postgresql.roles.existingSecret=my-roles",
            "nats.auth.existingSecret=my-nats",
        )
    )
    assert [doc for doc in docs if doc["kind"] == "Secret"] == []
    refs = _secret_refs(docs)
    assert {name for _, _, name in refs} == {"my-db", "my-kc", "my-emqx", "my-roles", "my-nats"}
    assert ("iot-evaluator", "PGPASSWORD", "my-roles") in refs
    assert ("iot-ingest", "NATS_PASSWORD", "my-nats") in refs
    assert ("iot-postgresql", "POSTGRES_PASSWORD", "my-db") in refs
    ingest = helm.pod_spec(helm.by_kind_and_name(docs)[("Deployment", "iot-ingest")])
    migrate = next(c for c in ingest["initContainers"] if c["name"] == "migrate")
    (admin,) = [e for e in migrate["env"] if e["name"] == "DB_ADMIN_PASSWORD"]
    assert admin["valueFrom"]["secretKeyRef"] == {"name": "my-db", "key": "pw"}


def test_external_database_by_url_renders_no_database():
    docs = helm.render(
        set_values=(
            "postgresql.enabled=false",
            "externalDatabase.url=postgresql://app@db.example:6432/telemetry",
            "externalDatabase.existingSecret=ext-db",
            "keycloak.database.host=db.example",
            *EXTERNAL_DATABASE_LOGINS,
        )
    )
    kinds = helm.by_kind_and_name(docs)
    assert ("StatefulSet", "iot-postgresql") not in kinds
    assert ("Secret", "iot-postgresql") not in kinds
    env = helm.env_by_name(helm.main_container(kinds[("Deployment", "iot-ui-iot")]))
    # the URL's user is the migration owner: the services get the URL without it
    assert env["DATABASE_URL"]["value"] == "postgresql://db.example:6432/telemetry"
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "db-ui"


def test_external_database_by_host_builds_the_url():
    docs = helm.render(
        set_values=(
            "postgresql.enabled=false",
            "externalDatabase.host=db.example",
            "externalDatabase.port=6432",
            "externalDatabase.username=app",
            "externalDatabase.database=telemetry",
            "externalDatabase.existingSecret=ext-db",
            *EXTERNAL_DATABASE_LOGINS,
        )
    )
    kinds = helm.by_kind_and_name(docs)
    env = helm.env_by_name(helm.main_container(kinds[("Deployment", "iot-ops-worker")]))
    assert env["DATABASE_URL"]["value"] == "postgresql://db.example:6432/telemetry"
    keycloak = helm.env_by_name(helm.main_container(kinds[("Deployment", "iot-keycloak")]))
    assert keycloak["KC_DB_URL_HOST"]["value"] == "db.example"
    assert keycloak["KC_DB_URL_PORT"]["value"] == "6432"
    assert keycloak["KC_DB_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "kc-db"
