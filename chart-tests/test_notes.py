"""NOTES.txt: what was installed, how to reach the UI, the broker and Keycloak for the Service
type / Ingress / HTTPRoute configured, and how to read the passwords — never a secret value.
Rendered with iot_tools.helm.notes (`helm template` of the real NOTES.txt, Helm 3 and 4), checked
once against what Helm 4's `install --dry-run=client` prints."""

from __future__ import annotations

import re

import pytest
from iot_tools import helm

MAJORS = (3, 4)


@pytest.fixture(scope="module")
def default_notes(fixed_secrets) -> str:
    return helm.notes(set_values=fixed_secrets)


def test_notes_name_the_release_and_what_was_installed(default_notes):
    assert "release iot in namespace iot" in default_notes
    for component in ("ingest", "uiIot", "EMQX", "NATS", "PostgreSQL (in-chart)", "Keycloak"):
        assert component in default_notes


def test_cluster_ip_notes_give_port_forwards(default_notes):
    assert "kubectl --namespace iot port-forward service/iot-ui-iot 10080:80" in default_notes
    assert "kubectl --namespace iot port-forward service/iot-emqx 1883:1883" in default_notes
    assert "mqtts" not in default_notes


def test_notes_tell_how_to_read_each_password_with_kubectl(default_notes):
    for secret, key in (("iot-postgresql", "password"), ("iot-keycloak", "admin-password"),
                        ("iot-emqx", "dashboard-password")):
        assert (f"kubectl --namespace iot get secret {secret} -o jsonpath='{{.data.{key}}}' "
                "| base64 -d") in default_notes


def test_notes_never_contain_a_secret_value(default_notes, fixed_secrets):
    for assignment in fixed_secrets:
        assert assignment.split("=", 1)[1] not in default_notes


def test_node_port_and_load_balancer_notes_say_how_to_find_the_address(fixed_secrets):
    notes = helm.notes(set_values=(*fixed_secrets, "uiIot.service.type=NodePort",
                                   "emqx.service.type=LoadBalancer",
                                   "emqx.tls.existingSecret=mqtt-tls"))
    node_port = "jsonpath='{.spec.ports[?(@.name==\"http\")].nodePort}'"
    assert f"get service iot-ui-iot -o {node_port}" in notes
    assert "get service iot-emqx -o jsonpath='{.status.loadBalancer.ingress[0].ip}" in notes
    assert "mqtts://<that address>:8883" in notes


def test_ingress_and_httproute_notes_give_their_urls(fixed_secrets):
    notes = helm.notes(set_values=(
        *fixed_secrets, "uiIot.ingress.enabled=true", "uiIot.ingress.hosts[0].host=iot.example.com",
        "uiIot.ingress.tls[0].secretName=t", "uiIot.ingress.tls[0].hosts[0]=iot.example.com",
        "keycloak.httpRelativePath=/auth", "keycloak.httpRoute.enabled=true",
        "keycloak.httpRoute.parentRefs[0].name=gw",
        "keycloak.httpRoute.hostnames[0]=id.example.com"))
    assert "https://iot.example.com/" in notes
    assert "HTTPRoute iot-keycloak on Gateway gw" in notes
    assert "://id.example.com/auth" in notes


def test_notes_name_an_existing_secret_instead_of_the_generated_one(fixed_secrets):
    notes = helm.notes(set_values=(*fixed_secrets, "postgresql.auth.existingSecret=my-db"))
    assert "get secret my-db -o jsonpath='{.data.password}'" in notes


def test_notes_render_identically_under_helm_3_and_4(fixed_secrets):
    assert helm.notes(major=3, set_values=fixed_secrets) == helm.notes(
        major=4, set_values=fixed_secrets)


def test_notes_helper_renders_what_helm_install_prints(fixed_secrets):
    """Helm 4's `install --dry-run=client` needs no cluster and prints the real NOTES."""
    args = ["install", "iot", str(helm.CHART_DIR), "--namespace", "iot", "--dry-run=client"]
    for assignment in fixed_secrets:
        args += ["--set", assignment]
    result = helm.run_helm(4, *args)
    assert result.returncode == 0, result.stderr
    printed = re.split(r"^NOTES:\n", result.stdout, maxsplit=1, flags=re.M)[1]
    assert printed.strip() == helm.notes(major=4, set_values=fixed_secrets).strip()
