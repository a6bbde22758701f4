"""EMQX's device authentication and ACL as the chart renders them (emqx.deviceAuth). EMQX cannot
run on the test machine: these check the rendered configuration only; what happens downstream of
it (the NATS bridge user, ingest's device check) is tested against real servers
(test_nats_auth.py, services/tests/test_device_identity.py)."""

from __future__ import annotations

import pytest
from iot_tools import helm

EMQX = "iot-emqx"


def _emqx(docs: list[dict]) -> tuple[str, dict, dict]:
    objects = helm.by_kind_and_name(docs)
    data = objects[("ConfigMap", EMQX)]["data"]
    return data["emqx.conf"], data, helm.main_container(objects[("Deployment", EMQX)])


def test_devices_log_in_by_client_id_against_hashed_passwords(default_renders):
    conf, _, _ = _emqx(default_renders[3])
    auth = conf.split("authentication = [", 1)[1].split("]", 1)[0]
    assert "mechanism = password_based" in auth
    assert "backend = built_in_database" in auth
    assert "user_id_type = clientid" in auth
    assert "name = pbkdf2" in auth and "mac_fun = sha256" in auth
    assert "iterations = 4096" in auth


def test_a_device_may_publish_only_to_its_own_telemetry_topic(default_renders):
    conf, data, _ = _emqx(default_renders[3])
    rules = [line for line in data["acl.conf"].splitlines() if line.strip()]
    assert rules == ['{allow, all, publish, ["telemetry/${clientid}"]}.', "{deny, all}."]
    authz = conf.split("authorization {", 1)[1]
    assert "no_match = deny" in authz
    assert "deny_action = disconnect" in authz
    assert 'path = "/opt/emqx/etc/acl.conf"' in authz


def test_the_acl_replaces_the_images_permissive_file(default_renders):
    _, _, container = _emqx(default_renders[3])
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert mounts["/opt/emqx/etc/acl.conf"] == {
        "name": "config", "mountPath": "/opt/emqx/etc/acl.conf", "subPath": "acl.conf",
        "readOnly": True}


def test_the_bridge_logs_in_to_nats_as_its_own_user(default_renders):
    _, _, container = _emqx(default_renders[3])
    env = helm.env_by_name(container)
    assert env["EMQX_CONNECTORS__MQTT__NATS__USERNAME"] == {
        "name": "EMQX_CONNECTORS__MQTT__NATS__USERNAME", "value": "emqx-bridge"}
    assert env["EMQX_CONNECTORS__MQTT__NATS__PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "iot-nats", "key": "emqx-bridge-password"}}
    secret = helm.by_kind_and_name(default_renders[3])[("Secret", "iot-nats")]
    assert "emqx-bridge-password" in secret["data"]


def test_no_credential_is_rendered_into_the_emqx_config(render, fixed_secrets):
    docs = render()
    conf, data, _ = _emqx(docs)
    for assignment in fixed_secrets:
        value = assignment.split("=", 1)[1]
        assert value not in conf and value not in data.get("acl.conf", "")


def test_the_iterations_are_configurable(render):
    conf, _, _ = _emqx(render("emqx.deviceAuth.pbkdf2Iterations=100000"))
    assert "iterations = 100000" in conf


def test_device_auth_off_allows_anyone_and_mounts_no_acl(render):
    conf, data, container = _emqx(render("emqx.deviceAuth.enabled=false"))
    assert "authentication = [" not in conf
    assert "no_match = allow" in conf
    assert "acl.conf" not in data
    assert all(mount["mountPath"] != "/opt/emqx/etc/acl.conf"
               for mount in container["volumeMounts"])


@pytest.mark.parametrize("values, message", [
    (("emqx.deviceAuth.pbkdf2Iterations=10",), "minimum"),
    (("emqx.deviceAuth.enabled=maybe",), "boolean"),
    (("emqx.deviceAuth.extra=1",), "additional"),
    (("nats.auth.passwords.nobody=x",), "additional"),
])
def test_bad_auth_values_are_refused_by_the_schema(values, message):
    with pytest.raises(helm.HelmRenderError) as refused:
        helm.render(set_values=values)
    assert message in str(refused.value).lower()
