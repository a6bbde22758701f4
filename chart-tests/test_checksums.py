"""Pods roll when a ConfigMap or Secret they use changes: every workload's pod template carries
`checksum/<name>` annotations, the sha256 of the rendered object's data (one helper,
_checksums.tpl); and the Secrets the chart generates are kept by `helm uninstall`."""

from __future__ import annotations

import hashlib
import json

import pytest
from iot_tools import helm

MAJORS = (3, 4)

# checksum annotation -> the object whose data it hashes
OBJECTS = {
    "checksum/postgresql-secret": ("Secret", "iot-postgresql"),
    "checksum/postgresql-roles-secret": ("Secret", "iot-postgresql-roles"),
    "checksum/keycloak-secret": ("Secret", "iot-keycloak"),
    "checksum/keycloak-realm": ("ConfigMap", "iot-keycloak-realm"),
    "checksum/emqx-secret": ("Secret", "iot-emqx"),
    "checksum/emqx-config": ("ConfigMap", "iot-emqx"),
    "checksum/nats-config": ("ConfigMap", "iot-nats"),
    "checksum/nats-secret": ("Secret", "iot-nats"),
}
# The superuser's password: PostgreSQL itself and the services' migrate init containers.
DATABASE_USERS = (
    "iot-ingest", "iot-evaluator", "iot-ui-iot", "iot-ops-worker", "iot-route-delivery",
    "iot-postgresql",
)
# The roles' passwords (Secret iot-postgresql-roles): the services and Keycloak.
ROLE_USERS = (
    "iot-ingest", "iot-evaluator", "iot-ui-iot", "iot-ops-worker", "iot-route-delivery",
)
EXPECTED = {
    **{name: {"checksum/postgresql-secret"} for name in DATABASE_USERS},
    **{name: {"checksum/postgresql-secret", "checksum/postgresql-roles-secret"}
       for name in ROLE_USERS},
    "iot-keycloak": {"checksum/postgresql-roles-secret", "checksum/keycloak-secret",
                     "checksum/keycloak-realm"},
    "iot-nats": {"checksum/nats-config", "checksum/nats-secret"},
    "iot-emqx": {"checksum/emqx-config", "checksum/emqx-secret", "checksum/nats-secret"},
}
# The NATS users' passwords (Secret iot-nats): nats-server itself, EMQX's bridge and the pods that
# log in with them (ingest and route-delivery, whose `streams` init container logs in as the owner).
NATS_USERS = ("iot-ingest", "iot-route-delivery")
EXPECTED |= {name: EXPECTED[name] | {"checksum/nats-secret"} for name in NATS_USERS}


def _checksums(docs: list[dict]) -> dict[str, dict[str, str]]:
    """{workload name: {checksum annotation: value}}."""
    found = {}
    for workload in helm.workloads(docs):
        annotations = workload["spec"]["template"]["metadata"].get("annotations") or {}
        found[workload["metadata"]["name"]] = {
            key: value for key, value in annotations.items() if key.startswith("checksum/")
        }
    return found


def _go_json_sha256(value: dict) -> str:
    """sha256 of `value | toJson` in a Helm template (Go's encoding/json: sorted keys, no
    spaces, UTF-8, and <, >, & escaped)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("major", MAJORS)
def test_every_workload_carries_the_checksums_of_the_objects_it_uses(default_renders, major):
    assert {name: set(sums) for name, sums in _checksums(default_renders[major]).items()} == (
        EXPECTED
    )


@pytest.mark.parametrize("major", MAJORS)
def test_a_checksum_is_the_sha256_of_the_rendered_data_even_for_generated_passwords(
    default_renders, major
):
    docs = helm.by_kind_and_name(default_renders[major])
    for name, sums in _checksums(default_renders[major]).items():
        for key, value in sums.items():
            data = docs[OBJECTS[key]]["data"]
            assert value == _go_json_sha256({"binaryData": {}, "data": data}), (name, key)


def test_a_new_password_changes_its_secret_and_the_checksums_of_its_users_only(
    base_docs, render, changes
):
    after = render("postgresql.auth.password=another-password-5")
    changed = changes(base_docs, after)
    assert changed.pop(("Secret", "iot-postgresql", "data", "password"))
    annotation = ("spec", "template", "metadata", "annotations", "checksum/postgresql-secret")
    assert set(changed) == {
        (kind, name, *annotation)
        for kind, name in (
            *(("Deployment", name) for name in DATABASE_USERS if name != "iot-postgresql"),
            ("StatefulSet", "iot-postgresql"),
        )
    }


def test_a_nats_config_change_rolls_nats_only(base_docs, render, changes):
    changed = changes(base_docs, render("nats.jetstream.maxFileStore=9G"))
    rolled = {key[:2] for key in changed if key[-1].startswith("checksum/")}
    assert rolled == {("StatefulSet", "iot-nats")}
    assert ("ConfigMap", "iot-nats", "data", "nats.conf") in changed


def test_an_emqx_config_change_rolls_emqx_only(base_docs, render, changes):
    changed = changes(base_docs, render("emqx.bridgeToNats.topic=devices/+/data"))
    rolled = {key[:2] for key in changed if key[-1].startswith("checksum/")}
    assert rolled == {("Deployment", "iot-emqx")}


def test_a_new_nats_password_rolls_nats_and_the_pods_that_log_in_to_it(
    base_docs, render, changes
):
    changed = changes(base_docs, render("nats.auth.passwords.ingest=another-password-6"))
    assert changed.pop(("Secret", "iot-nats", "data", "ingest-password"))
    annotation = ("spec", "template", "metadata", "annotations", "checksum/nats-secret")
    assert set(changed) == {
        (kind, name, *annotation)
        for kind, name in (
            *(("Deployment", name) for name in (*NATS_USERS, "iot-emqx")),
            ("StatefulSet", "iot-nats"),
        )
    }


def test_an_existing_secret_has_no_checksum(render):
    sums = _checksums(render("postgresql.auth.existingSecret=my-db"))
    assert not any("checksum/postgresql-secret" in found for found in sums.values())


@pytest.mark.parametrize("major", MAJORS)
def test_generated_secrets_are_kept_by_helm_uninstall(default_renders, major):
    secrets = [doc for doc in default_renders[major] if doc["kind"] == "Secret"]
    assert {doc["metadata"]["name"] for doc in secrets} == {
        "iot-postgresql", "iot-postgresql-roles", "iot-keycloak", "iot-emqx", "iot-nats"
    }
    for doc in secrets:
        assert doc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
