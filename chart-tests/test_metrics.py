"""Values `metrics`: the opt-in PodMonitor / ServiceMonitor (monitoring.coreos.com/v1), rendered
only when enabled and the cluster serves the CRD (simulated with `--api-versions`), Keycloak's
and EMQX's own metrics switched on with them, and the values' schema and guards.

The monitors are custom resources: kubernetes-validate has no schema for them, so their shape is
checked against MONITOR_SCHEMA below, a closed subset of the Prometheus Operator CRDs'
openAPIV3Schema written from the CRD reference (only the fields the chart renders; an unknown or
misspelt field fails). The headless Service is validated strictly like every other object.
"""

from __future__ import annotations

import jsonschema
import pytest
from iot_tools import helm
from iot_tools.kube import KUBE_VERSIONS

POD_MONITOR_API = "monitoring.coreos.com/v1/PodMonitor"
SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"
CRDS = ("--api-versions", POD_MONITOR_API, "--api-versions", SERVICE_MONITOR_API)
PYTHON_COMPONENTS = {"ingest", "evaluator", "ui-iot", "ops-worker", "route-delivery"}
# Where each scraped component serves its metrics: container port name -> (components, path).
EXPECTED_ENDPOINTS = {
    "health": (PYTHON_COMPONENTS, "/metrics"),
    "management": ({"keycloak"}, "/metrics"),
    "dashboard": ({"emqx"}, "/api/v5/prometheus/stats"),
}

_DURATION = {"type": "string", "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
_RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "action": {"type": "string"}, "modulus": {"type": "integer"},
        "regex": {"type": "string"}, "replacement": {"type": "string"},
        "separator": {"type": "string"}, "targetLabel": {"type": "string"},
        "sourceLabels": {"type": "array", "items": {"type": "string"}},
    },
}
_ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["port", "path"],
    "properties": {
        "port": {"type": "string", "minLength": 1}, "path": {"type": "string"},
        "scheme": {"enum": ["http", "https"]}, "interval": _DURATION,
        "scrapeTimeout": _DURATION,
        "relabelings": {"type": "array", "items": _RELABEL},
        "metricRelabelings": {"type": "array", "items": _RELABEL},
    },
}
_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array", "items": {
            "type": "object", "additionalProperties": False,
            "required": ["key", "operator"],
            "properties": {"key": {"type": "string"},
                           "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                           "values": {"type": "array", "items": {"type": "string"}}}}},
    },
}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                            "maxLength": 63},
                   "labels": {"type": "object", "additionalProperties": {"type": "string"}}},
}


def _monitor_schema(kind: str, endpoints_key: str) -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", endpoints_key],
                "properties": {
                    "selector": _SELECTOR,
                    "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                    endpoints_key: {"type": "array", "minItems": 1, "items": _ENDPOINT},
                },
            },
        },
    }


MONITOR_SCHEMA = {
    "PodMonitor": _monitor_schema("PodMonitor", "podMetricsEndpoints"),
    "ServiceMonitor": _monitor_schema("ServiceMonitor", "endpoints"),
}


def render(*set_values: str, crds: bool = True, major: int = 3) -> list[dict]:
    return helm.render(major=major, set_values=set_values, extra_args=CRDS if crds else ())


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def metrics_service(docs: list[dict]) -> list[dict]:
    return [doc for doc in of_kind(docs, "Service") if doc["metadata"]["name"] == "iot-metrics"]


def pods_by_component(docs: list[dict]) -> dict[str, dict]:
    """Pod template of every workload, by component label."""
    return {workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]:
            workload["spec"]["template"] for workload in helm.workloads(docs)}


def port_names(pod: dict) -> set[str]:
    return {port["name"] for container in pod["spec"]["containers"]
            for port in container.get("ports", [])}


def selects(selector: dict, labels: dict) -> bool:
    """A label selector (matchLabels and In expressions) against one object's labels."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    return all(labels.get(expression["key"]) in expression["values"]
               for expression in selector.get("matchExpressions", []))


def env_of(docs: list[dict], component: str) -> dict[str, str]:
    pod = pods_by_component(docs)[component]
    return {item["name"]: item.get("value") for item in pod["spec"]["containers"][0]["env"]}


# -- off by default ------------------------------------------------------------------------------


def test_the_default_render_has_no_monitor_and_keycloak_metrics_stay_off(default_renders):
    docs = default_renders[3]
    assert of_kind(docs, "PodMonitor") == of_kind(docs, "ServiceMonitor") == []
    assert metrics_service(docs) == []
    assert "KC_METRICS_ENABLED" not in env_of(docs, "keycloak")


@pytest.mark.parametrize("kind", ["podMonitor", "serviceMonitor"])
def test_an_enabled_monitor_is_left_out_where_the_crd_is_missing(kind):
    docs = render(f"metrics.{kind}.enabled=true", crds=False)
    assert of_kind(docs, "PodMonitor") == of_kind(docs, "ServiceMonitor") == []
    assert metrics_service(docs) == []


# -- PodMonitor ----------------------------------------------------------------------------------


def test_the_pod_monitor_scrapes_each_component_on_its_own_metrics_port():
    docs = render("metrics.podMonitor.enabled=true")
    (monitor,) = of_kind(docs, "PodMonitor")
    pods = pods_by_component(docs)
    endpoints = {endpoint["port"]: endpoint for endpoint in monitor["spec"]["podMetricsEndpoints"]}
    assert set(endpoints) == set(EXPECTED_ENDPOINTS)
    for port, (components, path) in EXPECTED_ENDPOINTS.items():
        scraped = {component for component, pod in pods.items()
                   if selects(monitor["spec"]["selector"], pod["metadata"]["labels"])
                   and port in port_names(pod)}
        assert scraped == components, port
        assert endpoints[port]["path"] == path


def test_the_pod_monitor_needs_no_metrics_service():
    docs = render("metrics.podMonitor.enabled=true")
    assert metrics_service(docs) == [] and of_kind(docs, "ServiceMonitor") == []


def test_a_disabled_component_is_not_scraped():
    docs = render("metrics.podMonitor.enabled=true", "keycloak.enabled=false",
                  "uiIot.auth.issuerUrl=https://id.example.com/realms/iot",
                  "ingest.enabled=false")
    (monitor,) = of_kind(docs, "PodMonitor")
    (expression,) = monitor["spec"]["selector"]["matchExpressions"]
    assert "ingest" not in expression["values"] and "keycloak" not in expression["values"]
    assert "management" not in {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}


def test_monitor_settings_reach_every_endpoint():
    docs = render("metrics.podMonitor.enabled=true", "metrics.podMonitor.interval=15s",
                  "metrics.podMonitor.scrapeTimeout=5s",
                  "metrics.podMonitor.labels.release=kube-prometheus",
                  "metrics.podMonitor.relabelings[0].targetLabel=cluster",
                  "metrics.podMonitor.relabelings[0].replacement=eu-1",
                  "metrics.podMonitor.metricRelabelings[0].action=drop",
                  "metrics.podMonitor.metricRelabelings[0].sourceLabels[0]=__name__",
                  "metrics.podMonitor.metricRelabelings[0].regex=python_gc_.*")
    (monitor,) = of_kind(docs, "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("15s", "5s")
        assert endpoint["relabelings"] == [{"targetLabel": "cluster", "replacement": "eu-1"}]
        assert endpoint["metricRelabelings"] == [
            {"action": "drop", "sourceLabels": ["__name__"], "regex": "python_gc_.*"}]


# -- ServiceMonitor --------------------------------------------------------------------------------


def test_the_service_monitor_selects_the_headless_metrics_service():
    docs = render("metrics.serviceMonitor.enabled=true")
    (monitor,) = of_kind(docs, "ServiceMonitor")
    (service,) = metrics_service(docs)
    assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert [s for s in of_kind(docs, "Service")
            if selects(monitor["spec"]["selector"], s["metadata"]["labels"])] == [service]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True  # not-ready pods are scraped


def test_the_metrics_service_gives_each_component_endpoints_on_its_metrics_port_only():
    docs = render("metrics.serviceMonitor.enabled=true")
    (monitor,) = of_kind(docs, "ServiceMonitor")
    (service,) = metrics_service(docs)
    pods = pods_by_component(docs)
    paths = {endpoint["port"]: endpoint["path"] for endpoint in monitor["spec"]["endpoints"]}
    for port in service["spec"]["ports"]:
        # A pod gets an endpoint on a named targetPort only if it has a port of that name.
        with_port = {component for component, pod in pods.items()
                     if selects({"matchLabels": service["spec"]["selector"]},
                                pod["metadata"]["labels"])
                     and port["targetPort"] in port_names(pod)}
        components, path = EXPECTED_ENDPOINTS[port["targetPort"]]
        assert with_port == components
        assert paths[port["name"]] == path


# -- the third-party components' own metrics -------------------------------------------------------


@pytest.mark.parametrize("kind", ["podMonitor", "serviceMonitor"])
def test_keycloak_metrics_are_switched_on_with_a_monitor(kind):
    assert env_of(render(f"metrics.{kind}.enabled=true"), "keycloak")["KC_METRICS_ENABLED"] \
        == "true"


def test_emqx_prometheus_endpoint_is_opened_to_scrapes_with_a_monitor():
    def config(docs: list[dict]) -> str:
        (configmap,) = [doc for doc in of_kind(docs, "ConfigMap")
                        if doc["metadata"]["name"] == "iot-emqx"]
        return configmap["data"]["emqx.conf"]

    assert "enable_basic_auth = false" in config(render("metrics.podMonitor.enabled=true"))
    assert "prometheus" not in config(render())


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["podMonitor", "serviceMonitor"])
def test_monitors_have_the_crd_shape(kind):
    docs = render(f"metrics.{kind}.enabled=true",
                  f"metrics.{kind}.relabelings[0].targetLabel=cluster",
                  f"metrics.{kind}.relabelings[0].replacement=eu-1")
    monitors = of_kind(docs, "PodMonitor") + of_kind(docs, "ServiceMonitor")
    assert len(monitors) == 1
    jsonschema.validate(monitors[0], MONITOR_SCHEMA[monitors[0]["kind"]])


def test_the_crd_shape_check_rejects_a_misspelt_field():
    """Control: the hand-written CRD schema is closed, so the test above means something."""
    (monitor,) = of_kind(render("metrics.podMonitor.enabled=true"), "PodMonitor")
    monitor["spec"]["podMetricsEndpoints"][0]["scrapeTimout"] = "5s"
    with pytest.raises(jsonschema.ValidationError, match="scrapeTimout"):
        jsonschema.validate(monitor, MONITOR_SCHEMA["PodMonitor"])


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_monitor_renders_validate_strictly(kube_validate, version):
    for kind in ("podMonitor", "serviceMonitor"):
        docs = [doc for doc in render(f"metrics.{kind}.enabled=true")
                if not doc["apiVersion"].startswith("monitoring.coreos.com/")]
        errors = [error for doc in docs for error in kube_validate(doc, version)]
        assert errors == [], kind


@pytest.mark.parametrize("kind", ["podMonitor", "serviceMonitor"])
def test_helm3_and_helm4_render_monitors_byte_identically(fixed_secrets, kind):
    def template(major: int) -> str:
        result = helm.template(major=major, set_values=(*fixed_secrets,
                                                        f"metrics.{kind}.enabled=true"),
                               extra_args=CRDS)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert template(3) == template(4)


# -- bad values ----------------------------------------------------------------------------------

BAD = {
    "both-monitors": (
        ["metrics.podMonitor.enabled=true", "metrics.serviceMonitor.enabled=true"],
        ["metrics.serviceMonitor.enabled and metrics.podMonitor.enabled are both true",
         "set one of them to false"],
    ),
    "timeout-over-interval": (
        ["metrics.serviceMonitor.interval=10s", "metrics.serviceMonitor.scrapeTimeout=1m"],
        ["metrics.serviceMonitor.scrapeTimeout (1m) exceeds metrics.serviceMonitor.interval",
         "lower the timeout or raise the interval"],
    ),
    "interval-not-a-duration": (
        ["metrics.podMonitor.interval=30sec"],
        ["/metrics/podMonitor/interval", "does not match"],
    ),
    "typo-in-monitor": (
        ["metrics.podMonitor.intervall=30s"],
        ["/metrics/podMonitor", "'intervall' not allowed"],
    ),
    "unknown-relabel-action": (
        ["metrics.serviceMonitor.relabelings[0].action=rename"],
        ["/metrics/serviceMonitor/relabelings/0/action", "value must be one of"],
    ),
    "enabled-not-a-boolean": (
        ["metrics.serviceMonitor.enabled=yes-please"],
        ["/metrics/serviceMonitor/enabled", "want boolean"],
    ),
}


@pytest.mark.parametrize("major", [3, 4])
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_metrics_values_fail_naming_the_field(case, major):
    set_values, expected = BAD[case]
    result = helm.template(major=major, set_values=tuple(set_values), extra_args=CRDS)
    assert result.returncode != 0, f"{case} rendered: {result.stdout[:300]}"
    for text in expected:
        assert text in result.stderr, f"{case}: {text!r} not in:\n{result.stderr}"
