"""Database roles in the chart: each service's container logs in as its own role, only the
migrate init container holds the bootstrap superuser's (or an external admin's) password,
Keycloak has its own role and database, passwords only through secretKeyRef, and an external
database without a needed credential fails the render naming the value."""

from __future__ import annotations

import pytest
from iot_tools import helm

SERVICES = {"iot-ingest": ("ingest", "iot_ingest"), "iot-evaluator": ("evaluator", "iot_evaluator"),
            "iot-ui-iot": ("uiIot", "iot_ui"), "iot-ops-worker": ("opsWorker", "iot_ops"),
            "iot-route-delivery": ("routeDelivery", "iot_route_delivery")}
ROLE_SECRETS = tuple(f"externalDatabase.roles.{key}=db-{key.lower()}"
                     for key, _ in SERVICES.values())
EXTERNAL = ("postgresql.enabled=false", "externalDatabase.host=db.example",
            "externalDatabase.database=iot", "externalDatabase.username=iot_owner",
            "externalDatabase.existingSecret=db-owner", *ROLE_SECRETS,
            "keycloak.database.username=kc", "keycloak.database.existingSecret=kc-db")


def containers(objects: dict, name: str) -> dict[str, dict]:
    spec = helm.pod_spec(objects[("Deployment", name)])
    return {c["name"]: c for c in [*spec.get("initContainers", []), *spec["containers"]]}


def env(container: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def secret_ref(entry: dict) -> tuple[str, str]:
    ref = entry["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


@pytest.fixture(scope="module")
def default(default_renders) -> dict:
    return helm.by_kind_and_name(default_renders[3])


@pytest.fixture(scope="module")
def external(render) -> dict:
    return helm.by_kind_and_name(render(*EXTERNAL))


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_logs_in_as_its_own_role(default, name):
    key, role = SERVICES[name]
    main = env(containers(default, name)[name.removeprefix("iot-")])
    assert main["PGUSER"] == {"name": "PGUSER", "value": role}
    assert secret_ref(main["PGPASSWORD"]) == ("iot-postgresql-roles", key)
    assert main["DATABASE_URL"]["value"] == "postgresql://iot-postgresql:5432/iot"
    assert not [n for n in main if n.startswith(("DB_", "KEYCLOAK_DB"))]


@pytest.mark.parametrize("name", SERVICES)
def test_only_migrate_holds_the_superuser_password(default, name):
    found = {container: [n for n, e in env(c).items() if "valueFrom" in e
                         and secret_ref(e) == ("iot-postgresql", "password")]
             for container, c in containers(default, name).items()}
    assert found.pop("migrate") == ["DB_ADMIN_PASSWORD"]
    assert all(names == [] for names in found.values())


def test_migrate_runs_as_the_owner_and_sets_every_role(default):
    migrate = env(containers(default, "iot-ingest")["migrate"])
    assert migrate["PGUSER"]["value"] == "iot_owner"
    assert secret_ref(migrate["PGPASSWORD"]) == ("iot-postgresql-roles", "owner")
    assert migrate["DB_ADMIN_USER"]["value"] == "iot"
    for key, role in SERVICES.values():
        prefix = {"uiIot": "UI", "opsWorker": "OPS", "routeDelivery": "ROUTE_DELIVERY"}.get(
            key, key.upper())
        assert migrate[f"DB_{prefix}_USER"]["value"] == role
        assert secret_ref(migrate[f"DB_{prefix}_PASSWORD"]) == ("iot-postgresql-roles", key)
    assert migrate["KEYCLOAK_DB_NAME"]["value"] == "keycloak"
    assert migrate["KEYCLOAK_DB_USER"]["value"] == "keycloak"


def test_keycloak_logs_in_as_its_own_role_to_its_own_database(default):
    kc = env(containers(default, "iot-keycloak")["keycloak"])
    assert kc["KC_DB_USERNAME"]["value"] == "keycloak"
    assert kc["KC_DB_URL_DATABASE"]["value"] == "keycloak"
    assert secret_ref(kc["KC_DB_PASSWORD"]) == ("iot-postgresql-roles", "keycloak")


def test_role_passwords_are_one_kept_generated_secret(default):
    secret = default[("Secret", "iot-postgresql-roles")]
    assert sorted(secret["data"]) == sorted(
        ["owner", "ingest", "evaluator", "uiIot", "opsWorker", "routeDelivery", "keycloak"])
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert len(set(secret["data"].values())) == 7


def test_a_role_password_change_rolls_the_pods_that_use_it(default):
    for name in [*SERVICES, "iot-keycloak"]:
        annotations = default[("Deployment", name)]["spec"]["template"]["metadata"]["annotations"]
        assert "checksum/postgresql-roles-secret" in annotations


def test_an_existing_roles_secret_replaces_the_generated_one(render):
    objects = helm.by_kind_and_name(render("postgresql.roles.existingSecret=my-roles"))
    assert ("Secret", "iot-postgresql-roles") not in objects
    main = env(containers(objects, "iot-evaluator")["evaluator"])
    assert secret_ref(main["PGPASSWORD"]) == ("my-roles", "evaluator")


def test_external_services_use_their_role_secrets(external):
    main = env(containers(external, "iot-ui-iot")["ui-iot"])
    assert secret_ref(main["PGUSER"]) == ("db-uiiot", "username")
    assert secret_ref(main["PGPASSWORD"]) == ("db-uiiot", "password")
    migrate = env(containers(external, "iot-ui-iot")["migrate"])
    assert migrate["PGUSER"]["value"] == "iot_owner"
    # no admin given: migrate neither sets passwords nor touches Keycloak's role
    assert not [n for n in migrate if n.startswith(("DB_ADMIN", "KEYCLOAK_DB"))
                or (n.endswith("_PASSWORD") and n.startswith("DB_"))]
    assert secret_ref(migrate["DB_UI_USER"]) == ("db-uiiot", "username")


def test_an_external_admin_lets_migrate_set_passwords_and_keep_keycloaks_role(render):
    objects = helm.by_kind_and_name(render(*EXTERNAL, "externalDatabase.admin.existingSecret=dba"))
    migrate = env(containers(objects, "iot-ingest")["migrate"])
    assert secret_ref(migrate["DB_ADMIN_USER"]) == ("dba", "username")
    assert secret_ref(migrate["DB_ADMIN_PASSWORD"]) == ("dba", "password")
    assert secret_ref(migrate["DB_INGEST_PASSWORD"]) == ("db-ingest", "password")
    assert migrate["KEYCLOAK_DB_USER"]["value"] == "kc"
    assert secret_ref(migrate["KEYCLOAK_DB_PASSWORD"]) == ("kc-db", "password")


def test_a_user_in_an_external_url_names_the_owner_and_leaves_the_services_url(render):
    values = [v for v in EXTERNAL if not v.startswith(("externalDatabase.host",
                                                       "externalDatabase.database",
                                                       "externalDatabase.username"))]
    objects = helm.by_kind_and_name(render(*values,
                                           "externalDatabase.url=postgresql://boss@db:5432/iot",
                                           "keycloak.database.host=kc-db"))
    migrate = env(containers(objects, "iot-ops-worker")["migrate"])
    assert migrate["PGUSER"]["value"] == "boss"
    assert migrate["DATABASE_URL"]["value"] == "postgresql://db:5432/iot"


@pytest.mark.parametrize("values, message", [
    ([v for v in EXTERNAL if not v.startswith("externalDatabase.roles.opsWorker")],
     "externalDatabase.roles.opsWorker is empty"),
    ([v for v in EXTERNAL if not v.startswith("keycloak.database.existingSecret")],
     "keycloak.database.username and keycloak.database.existingSecret are required"),
    ([v for v in EXTERNAL if not v.startswith("externalDatabase.username")],
     "externalDatabase.username is empty"),
    (["keycloak.database.username=iot_ui"], "Keycloak needs a role of its own"),
    (["postgresql.auth.username=iot_owner"], "is the name of one of the platform's roles"),
    (["postgresql.roles.existingSecret=Bad_Name"], "/postgresql/roles/existingSecret"),
    ([*EXTERNAL, "externalDatabase.roles.ingest=db_ingest"], "/externalDatabase/roles/ingest"),
    ([*EXTERNAL, "externalDatabase.admin.usernameKey="], "/externalDatabase/admin/usernameKey"),
])
def test_a_missing_or_bad_database_credential_fails_naming_the_value(values, message):
    result = helm.template(set_values=tuple(values))
    assert result.returncode != 0
    assert message in result.stderr


def test_a_disabled_service_needs_no_external_role(render):
    values = [v for v in EXTERNAL if not v.startswith("externalDatabase.roles.opsWorker")]
    objects = helm.by_kind_and_name(render(*values, "opsWorker.enabled=false"))
    migrate = env(containers(objects, "iot-ingest")["migrate"])
    assert "DB_OPS_USER" not in migrate
