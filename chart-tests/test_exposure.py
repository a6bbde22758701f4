"""Exposure: Service type/annotations/loadBalancerSourceRanges/externalTrafficPolicy/nodePorts
for EMQX's MQTT (and MQTT over TLS from a Secret) and ui-iot; Ingress and Gateway API HTTPRoute
for ui-iot and Keycloak from one named template each; guards and schema for nonsense values;
Helm 3 == Helm 4. HTTPRoute is a CRD absent from the Kubernetes schemas: its shape is checked
here against a strict subset of the Gateway API v1 HTTPRoute schema written from its spec."""

from __future__ import annotations

import jsonschema
import pytest
from iot_tools import helm

MAJORS = (3, 4)

EXPOSED = (
    "uiIot.service.type=LoadBalancer",
    "uiIot.service.externalTrafficPolicy=Local",
    "uiIot.service.loadBalancerSourceRanges={10.0.0.0/8,192.168.0.0/16}",
    "uiIot.service.annotations.service\\.beta\\.kubernetes\\.io/aws-load-balancer-type=nlb",
    "uiIot.service.nodePorts.http=30080",
    "uiIot.ingress.enabled=true",
    "uiIot.ingress.className=nginx",
    "uiIot.ingress.annotations.cert-manager\\.io/cluster-issuer=letsencrypt",
    "uiIot.ingress.hosts[0].host=iot.example.com",
    "uiIot.ingress.tls[0].secretName=iot-tls",
    "uiIot.ingress.tls[0].hosts[0]=iot.example.com",
    "uiIot.httpRoute.enabled=true",
    "uiIot.httpRoute.parentRefs[0].name=public",
    "uiIot.httpRoute.parentRefs[0].namespace=gateways",
    "uiIot.httpRoute.hostnames[0]=iot.example.com",
    "keycloak.httpRelativePath=/auth",
    "keycloak.hostname=https://iot.example.com/auth",
    "keycloak.ingress.enabled=true",
    "keycloak.ingress.hosts[0].host=iot.example.com",
    "keycloak.httpRoute.enabled=true",
    "keycloak.httpRoute.parentRefs[0].name=public",
    "keycloak.httpRoute.parentRefs[0].sectionName=https",
    "emqx.service.type=NodePort",
    "emqx.service.externalTrafficPolicy=Local",
    "emqx.service.nodePorts.mqtt=31883",
    "emqx.service.nodePorts.mqtts=31884",
    "emqx.tls.existingSecret=mqtt-tls",
)

# The parts of gateway.networking.k8s.io/v1 HTTPRoute the chart writes (field names, enums and
# limits from the Gateway API v1 spec); closed objects, so a misspelt field fails.
_HOSTNAME = {"type": "string", "maxLength": 253,
             "pattern": r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"}
HTTPROUTE_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "HTTPRoute"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {"type": "object", "additionalProperties": False, "properties": {
            "parentRefs": {"type": "array", "maxItems": 32, "items": {
                "type": "object", "additionalProperties": False, "required": ["name"],
                "properties": {"group": {"type": "string"}, "kind": {"type": "string"},
                               "namespace": {"type": "string"}, "name": {"type": "string"},
                               "sectionName": {"type": "string"},
                               "port": {"type": "integer", "minimum": 1, "maximum": 65535}}}},
            "hostnames": {"type": "array", "maxItems": 16, "items": _HOSTNAME},
            "rules": {"type": "array", "minItems": 1, "maxItems": 16, "items": {
                "type": "object", "additionalProperties": False, "properties": {
                    "matches": {"type": "array", "maxItems": 64, "items": {
                        "type": "object", "additionalProperties": False, "properties": {
                            "path": {"type": "object", "additionalProperties": False,
                                     "properties": {
                                         "type": {"enum": ["Exact", "PathPrefix",
                                                           "RegularExpression"]},
                                         "value": {"type": "string", "pattern": "^/",
                                                   "maxLength": 1024}}}}}},
                    "backendRefs": {"type": "array", "maxItems": 16, "items": {
                        "type": "object", "additionalProperties": False,
                        "required": ["name", "port"],
                        "properties": {"name": {"type": "string"},
                                       "port": {"type": "integer", "minimum": 1,
                                                "maximum": 65535}}}}}}}}},
    },
}


def _get(docs: list[dict], kind: str, name: str) -> dict:
    return helm.by_kind_and_name(docs)[(kind, name)]


def _ports(service: dict) -> dict[str, dict]:
    return {port["name"]: port for port in service["spec"]["ports"]}


@pytest.fixture(scope="module")
def exposed(render) -> list[dict]:
    return render(*EXPOSED)


def test_default_services_are_cluster_ip_without_exposure_fields(default_renders):
    for doc in default_renders[3]:
        assert doc["kind"] not in ("Ingress", "HTTPRoute")
        if doc["kind"] == "Service":
            assert doc["spec"]["type"] == "ClusterIP"
            assert not {"externalTrafficPolicy", "loadBalancerSourceRanges"} & doc["spec"].keys()
            assert "annotations" not in doc["metadata"]
            assert all("nodePort" not in port for port in doc["spec"]["ports"])


def test_ui_load_balancer_carries_every_exposure_field(exposed):
    service = _get(exposed, "Service", "iot-ui-iot")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert service["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8", "192.168.0.0/16"]
    assert service["metadata"]["annotations"] == {
        "service.beta.kubernetes.io/aws-load-balancer-type": "nlb"
    }
    assert _ports(service)["http"]["nodePort"] == 30080


def test_emqx_tls_adds_the_mqtts_port_end_to_end(exposed):
    ports = _ports(_get(exposed, "Service", "iot-emqx"))
    assert ports["mqtt"] == {"name": "mqtt", "port": 1883, "targetPort": "mqtt",
                             "protocol": "TCP", "nodePort": 31883}
    assert ports["mqtts"] == {"name": "mqtts", "port": 8883, "targetPort": "mqtts",
                              "protocol": "TCP", "nodePort": 31884}
    pod = helm.pod_spec(_get(exposed, "Deployment", "iot-emqx"))
    container = pod["containers"][0]
    assert {"name": "mqtts", "containerPort": 8883, "protocol": "TCP"} in container["ports"]
    assert {"name": "tls", "mountPath": "/opt/emqx/etc/tls", "readOnly": True} in container[
        "volumeMounts"]
    assert {"name": "tls", "secret": {"secretName": "mqtt-tls", "defaultMode": 0o440}} in pod[
        "volumes"]
    conf = _get(exposed, "ConfigMap", "iot-emqx")["data"]["emqx.conf"]
    listener = conf.split("listeners.ssl.default {", 1)[1]
    assert 'bind = "0.0.0.0:8883"' in listener
    assert 'certfile = "/opt/emqx/etc/tls/tls.crt"' in listener
    assert 'keyfile = "/opt/emqx/etc/tls/tls.key"' in listener
    assert "verify_peer" not in listener


def test_without_tls_emqx_serves_no_ssl_listener_and_no_mqtts(default_renders):
    docs = default_renders[3]
    conf = _get(docs, "ConfigMap", "iot-emqx")["data"]["emqx.conf"]
    assert "listeners.ssl.default {\n  enabled = false\n}" in conf
    assert set(_ports(_get(docs, "Service", "iot-emqx"))) == {"mqtt"}
    container = helm.main_container(_get(docs, "Deployment", "iot-emqx"))
    assert "mqtts" not in {port["name"] for port in container["ports"]}


def test_emqx_verify_clients_requires_certificates_signed_by_the_secrets_ca(render):
    docs = render("emqx.tls.existingSecret=mqtt-tls", "emqx.tls.verifyClients=true")
    conf = _get(docs, "ConfigMap", "iot-emqx")["data"]["emqx.conf"]
    assert 'cacertfile = "/opt/emqx/etc/tls/ca.crt"' in conf
    assert "verify = verify_peer" in conf and "fail_if_no_peer_cert = true" in conf


def test_ui_ingress_has_class_annotations_hosts_and_tls(exposed):
    ingress = _get(exposed, "Ingress", "iot-ui-iot")
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "iot-tls", "hosts": ["iot.example.com"]}]
    assert ingress["spec"]["rules"] == [{"host": "iot.example.com", "http": {"paths": [{
        "path": "/", "pathType": "Prefix",
        "backend": {"service": {"name": "iot-ui-iot", "port": {"number": 80}}}}]}}]


def test_ingress_without_hosts_has_one_rule_for_every_host(render):
    ingress = _get(render("uiIot.ingress.enabled=true"), "Ingress", "iot-ui-iot")
    assert [set(rule) for rule in ingress["spec"]["rules"]] == [{"http"}]
    assert "ingressClassName" not in ingress["spec"] and "tls" not in ingress["spec"]


def test_ingress_paths_from_values(render):
    docs = render("uiIot.ingress.enabled=true", "uiIot.ingress.hosts[0].host=a.example.com",
                  "uiIot.ingress.hosts[0].paths[0].path=/ui",
                  "uiIot.ingress.hosts[0].paths[0].pathType=Exact")
    (path,) = _get(docs, "Ingress", "iot-ui-iot")["spec"]["rules"][0]["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/ui", "Exact")


def test_keycloak_behind_a_path_serves_there_and_keeps_its_probes(exposed):
    container = helm.main_container(_get(exposed, "Deployment", "iot-keycloak"))
    env = helm.env_by_name(container)
    assert env["KC_HTTP_RELATIVE_PATH"]["value"] == "/auth"
    assert env["KC_HTTP_MANAGEMENT_RELATIVE_PATH"]["value"] == "/"
    assert env["KC_PROXY_HEADERS"]["value"] == "xforwarded"
    assert env["KC_HOSTNAME"]["value"] == "https://iot.example.com/auth"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    (rule,) = _get(exposed, "Ingress", "iot-keycloak")["spec"]["rules"]
    assert rule["http"]["paths"][0]["path"] == "/auth"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": "iot-keycloak", "port": {"number": 8080}}
    route = _get(exposed, "HTTPRoute", "iot-keycloak")
    assert route["spec"]["rules"][0]["matches"] == [{"path": {"type": "PathPrefix",
                                                              "value": "/auth"}}]


def test_keycloak_default_path_is_the_root(default_renders):
    env = helm.env_by_name(helm.main_container(
        _get(default_renders[3], "Deployment", "iot-keycloak")))
    assert env["KC_HTTP_RELATIVE_PATH"]["value"] == "/"


def test_ui_httproute_attaches_to_the_gateway_with_hostnames(exposed):
    route = _get(exposed, "HTTPRoute", "iot-ui-iot")
    assert route["spec"]["parentRefs"] == [{"name": "public", "namespace": "gateways"}]
    assert route["spec"]["hostnames"] == ["iot.example.com"]
    assert route["spec"]["rules"] == [{
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        "backendRefs": [{"name": "iot-ui-iot", "port": 80}]}]


def test_httproutes_have_the_gateway_api_v1_shape(exposed):
    routes = [doc for doc in exposed if doc["kind"] == "HTTPRoute"]
    assert len(routes) == 2
    for route in routes:
        jsonschema.validate(route, HTTPROUTE_SCHEMA)


def test_httproute_shape_check_rejects_a_misspelt_field(exposed):
    """Control: the hand-written HTTPRoute schema is strict."""
    route = _get(exposed, "HTTPRoute", "iot-ui-iot")
    bad = {**route, "spec": {**route["spec"], "hostname": ["x"]}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, HTTPROUTE_SCHEMA)


def test_one_named_template_writes_every_ingress_and_httproute():
    templates = helm.CHART_DIR / "templates"
    for kind in ("Ingress", "HTTPRoute"):
        writers = {p.name for p in templates.rglob("*") if p.is_file()
                   and f"kind: {kind}\n" in p.read_text()}
        assert writers == {"_exposure.tpl"}
    text = (templates / "_exposure.tpl").read_text()
    assert text.count('define "iot.exposure.ingress"') == 1
    assert text.count('define "iot.exposure.httpRoute"') == 1


def test_helm3_and_helm4_render_exposure_byte_identically(fixed_secrets):
    values = (*fixed_secrets, *EXPOSED)
    renders = [helm.template(major=major, set_values=values) for major in MAJORS]
    assert all(result.returncode == 0 for result in renders), renders[0].stderr
    assert renders[0].stdout == renders[1].stdout


# id -> (--set values, texts the error must contain)
BAD = {
    "service-type-unknown": (["uiIot.service.type=ExternalName"], ["/uiIot/service/type"]),
    "traffic-policy-unknown": (["emqx.service.externalTrafficPolicy=Nearest"],
                               ["/emqx/service/externalTrafficPolicy"]),
    "node-port-out-of-range": (["uiIot.service.nodePorts.http=70000"],
                               ["/uiIot/service/nodePorts/http", "maximum"]),
    "node-port-for-an-unknown-port": (["emqx.service.nodePorts.ws=30000"],
                                      ["/emqx/service/nodePorts", "'ws' not allowed"]),
    "source-range-not-a-cidr": (["uiIot.service.loadBalancerSourceRanges={10.0.0.1}"],
                                ["/uiIot/service/loadBalancerSourceRanges/0"]),
    "ingress-path-type-unknown": (
        ["uiIot.ingress.hosts[0].host=a.example.com",
         "uiIot.ingress.hosts[0].paths[0].path=/", "uiIot.ingress.hosts[0].paths[0].pathType=All"],
        ["/uiIot/ingress/hosts/0/paths/0/pathType"]),
    "ingress-host-not-a-hostname": (["keycloak.ingress.hosts[0].host=Bad_Host"],
                                    ["/keycloak/ingress/hosts/0/host"]),
    "ingress-typo": (["uiIot.ingress.classname=nginx"], ["/uiIot/ingress", "'classname'"]),
    "httproute-typo": (["uiIot.httpRoute.hostname[0]=a.example.com"],
                       ["/uiIot/httpRoute", "'hostname'"]),
    "relative-path-trailing-slash": (["keycloak.httpRelativePath=/auth/"],
                                     ["/keycloak/httpRelativePath"]),
    "verify-clients-not-boolean": (["emqx.tls.verifyClients=maybe"],
                                   ["/emqx/tls/verifyClients", "want boolean"]),
    # guards: name the value and what to change
    "traffic-policy-on-cluster-ip": (
        ["uiIot.service.externalTrafficPolicy=Local"],
        ["uiIot.service.externalTrafficPolicy (Local) applies only to NodePort and LoadBalancer",
         "uiIot.service.type is ClusterIP", "remove uiIot.service.externalTrafficPolicy"]),
    "source-ranges-on-node-port": (
        ["emqx.service.type=NodePort", "emqx.service.loadBalancerSourceRanges={10.0.0.0/8}"],
        ["emqx.service.loadBalancerSourceRanges is set, but emqx.service.type is NodePort",
         "emqx.service.type=LoadBalancer"]),
    "node-port-on-cluster-ip": (
        ["uiIot.service.nodePorts.http=30080"],
        ["uiIot.service.nodePorts.http (30080) is set, but uiIot.service.type is ClusterIP"]),
    "mqtts-node-port-without-tls": (
        ["emqx.service.type=NodePort", "emqx.service.nodePorts.mqtts=30883"],
        ["emqx.service.nodePorts.mqtts (30883) is set, but MQTT over TLS is off",
         "set emqx.tls.existingSecret"]),
    "verify-clients-without-tls": (
        ["emqx.tls.verifyClients=true"],
        ["emqx.tls.verifyClients is true, but MQTT over TLS is off"]),
    "httproute-without-parent": (
        ["keycloak.httpRoute.enabled=true"],
        ["keycloak.httpRoute.parentRefs is empty", "keycloak.httpRoute.parentRefs[0].name"]),
    "keycloak-ingress-path-outside-its-relative-path": (
        ["keycloak.httpRelativePath=/auth", "keycloak.ingress.enabled=true",
         "keycloak.ingress.hosts[0].host=id.example.com",
         "keycloak.ingress.hosts[0].paths[0].path=/admin"],
        ["keycloak.ingress.hosts[0].paths[0].path (/admin) is outside keycloak.httpRelativePath "
         "(/auth)"]),
}


@pytest.mark.parametrize("major", MAJORS)
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_exposure_values_fail_naming_the_value(case, major):
    set_values, expected = BAD[case]
    result = helm.template(major=major, set_values=tuple(set_values))
    assert result.returncode != 0, f"{case} rendered"
    for text in expected:
        assert text in result.stderr, f"{case}: {text!r} not in:\n{result.stderr}"
