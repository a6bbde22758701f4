"""Values `networkPolicy` (templates/_networkpolicy.tpl): a default deny for every pod of the
release, then exactly the platform's connection graph.

The graph test reads the rendered policies the way Kubernetes does (a connection between two
pods of the release needs the source's egress AND the destination's ingress to allow it; a
rule without peers allows any peer, without ports any port) and compares every allowed
(source, destination, port) with the expected graph written out below: an extra or a missing
edge fails. ipBlock peers are judged as addresses outside the cluster (Kubernetes leaves pod
IPs in ipBlocks to the network plugin). Nothing here enforces the policies (no network plugin
runs here): they are rendered, validated strictly offline and by a real API server's
server-side dry-run.
"""

from __future__ import annotations

import json

import pytest
from iot_tools import helm
from iot_tools.kube import KUBE_VERSIONS

from services.route_delivery.destinations import DEFAULT_DENY

TCP, UDP = "TCP", "UDP"
SERVICES = ("ingest", "evaluator", "ui-iot", "ops-worker", "route-delivery")
COMPONENTS = (*SERVICES, "keycloak", "emqx", "nats", "postgresql", "test")
DNS_PEER = "namespace kubernetes.io/metadata.name=kube-system, pods k8s-app=kube-dns"
DENIED_V4 = [c for c in DEFAULT_DENY if ":" not in c]
DENIED_V6 = [c for c in DEFAULT_DENY if ":" in c]

# The default graph: (source, destination, port, protocol); "*" = every port.
DEFAULT_GRAPH = {
    *((s, "postgresql", 5432, TCP) for s in (*SERVICES, "keycloak")),
    ("ingest", "nats", 4222, TCP), ("route-delivery", "nats", 4222, TCP),
    ("emqx", "nats", 1883, TCP),
    ("ui-iot", "keycloak", 8080, TCP),
    ("anywhere", "emqx", 1883, TCP), ("anywhere", "ui-iot", 8080, TCP),
    ("anywhere", "keycloak", 8080, TCP),
    ("test", "ui-iot", 8080, TCP), ("test", "nats", 8222, TCP), ("test", "postgresql", 5432, TCP),
    *((c, DNS_PEER, 53, p) for c in COMPONENTS for p in (UDP, TCP)),
    ("route-delivery", f"ipBlock 0.0.0.0/0 except {','.join(DENIED_V4)}", "*", "*"),
    ("route-delivery", f"ipBlock ::/0 except {','.join(DENIED_V6)}", "*", "*"),
}


# -- reading policies as Kubernetes does ------------------------------------------------------


def _matches(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # the chart renders matchLabels only
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _pods(docs: list[dict]) -> dict[str, dict]:
    """component -> pod labels, for every workload and `helm test` pod."""
    pods = {}
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            labels = doc["spec"]["template"]["metadata"]["labels"]
        elif doc["kind"] == "Pod":
            labels = doc["metadata"]["labels"]
        else:
            continue
        pods[labels["app.kubernetes.io/component"]] = labels
    return pods


def _selector_text(selector: dict) -> str:
    labels = selector.get("matchLabels", {})
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "all"


def _outside_peer(peer: dict) -> str | None:
    """A peer outside the release's pods, as text; None for a podSelector of this namespace."""
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        text = f"ipBlock {block['cidr']}"
        return text + (f" except {','.join(block['except'])}" if block.get("except") else "")
    if "namespaceSelector" in peer:
        return (f"namespace {_selector_text(peer['namespaceSelector'])}, "
                f"pods {_selector_text(peer.get('podSelector', {}))}")
    return None


def _ports(rule: dict) -> list[tuple[int | str, str]]:
    return [(p["port"], p.get("protocol", TCP)) for p in rule.get("ports", [])] or [("*", "*")]


def _rules(policies: list[dict], labels: dict, direction: str) -> list[dict]:
    return [rule for policy in policies if _matches(policy["spec"]["podSelector"], labels)
            for rule in policy["spec"].get(direction) or []]


def allowed_graph(docs: list[dict]) -> set[tuple]:
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    pods = _pods(docs)
    field = {"ingress": "from", "egress": "to"}
    graph = set()
    for component, labels in pods.items():
        # Every pod is isolated both ways (the default deny selects it).
        kinds = {kind for p in policies if _matches(p["spec"]["podSelector"], labels)
                 for kind in p["spec"]["policyTypes"]}
        assert kinds == {"Ingress", "Egress"}, component
        for direction in ("ingress", "egress"):
            for rule in _rules(policies, labels, direction):
                peers = rule.get(field[direction])
                outside = ["anywhere"] if not peers else [
                    text for text in map(_outside_peer, peers) if text]
                for text, (port, protocol) in ((t, p) for t in outside for p in _ports(rule)):
                    edge = (text, component) if direction == "ingress" else (component, text)
                    graph.add((*edge, port, protocol))
    # Between pods of the release: the source's egress and the destination's ingress.
    for source, source_labels in pods.items():
        for destination, destination_labels in pods.items():
            egress = {port for rule in _rules(policies, source_labels, "egress")
                      for peer in rule.get("to") or [{"podSelector": {}}]
                      if "podSelector" in peer and "namespaceSelector" not in peer
                      and _matches(peer["podSelector"], destination_labels)
                      for port in _ports(rule)}
            ingress = {port for rule in _rules(policies, destination_labels, "ingress")
                       for peer in rule.get("from") or [{"podSelector": {}}]
                       if "podSelector" in peer and "namespaceSelector" not in peer
                       and _matches(peer["podSelector"], source_labels)
                       for port in _ports(rule)}
            for port, protocol in egress & ingress:
                graph.add((source, destination, port, protocol))
    return graph


# -- the graph ---------------------------------------------------------------------------------


def test_the_default_render_allows_exactly_the_platform_graph(render):
    assert allowed_graph(render()) == DEFAULT_GRAPH


def test_every_pod_of_the_release_is_selected_by_the_default_deny(render):
    docs = render()
    (deny,) = [d for d in docs if d["kind"] == "NetworkPolicy"
               and d["metadata"]["name"] == "iot-default-deny-netpol"]
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    pods = _pods(docs)
    assert set(pods) == set(COMPONENTS)
    assert all(_matches(deny["spec"]["podSelector"], labels) for labels in pods.values())


def test_metrics_scraping_opens_the_scraped_ports_to_the_monitoring_namespace(render):
    graph = allowed_graph(render("metrics.podMonitor.enabled=true"))
    monitoring = "namespace kubernetes.io/metadata.name=monitoring, pods all"
    assert graph - DEFAULT_GRAPH == {
        *((monitoring, s, 8080, TCP) for s in SERVICES),
        (monitoring, "keycloak", 9000, TCP), (monitoring, "emqx", 18083, TCP)}
    assert graph >= DEFAULT_GRAPH


def test_configured_sources_replace_anywhere_and_extra_rules_add_edges(render):
    graph = allowed_graph(render(
        "networkPolicy.ingressFrom.uiIot[0].namespaceSelector.matchLabels"
        ".kubernetes\\.io/metadata\\.name=ingress-nginx",
        "networkPolicy.ingressFrom.emqx[0].ipBlock.cidr=203.0.113.0/24",
        "networkPolicy.extraEgress.opsWorker[0].to[0].ipBlock.cidr=198.51.100.7/32",
        "networkPolicy.extraEgress.opsWorker[0].ports[0].port=443",
        "networkPolicy.extraIngress.nats[0].from[0].podSelector.matchLabels.app=nats-box",
        "networkPolicy.extraIngress.nats[0].ports[0].port=4222"))
    nginx = "namespace kubernetes.io/metadata.name=ingress-nginx, pods all"
    assert DEFAULT_GRAPH - graph == {("anywhere", "ui-iot", 8080, TCP),
                                     ("anywhere", "emqx", 1883, TCP)}
    assert graph - DEFAULT_GRAPH == {
        (nginx, "ui-iot", 8080, TCP), ("ipBlock 203.0.113.0/24", "emqx", 1883, TCP),
        ("ops-worker", "ipBlock 198.51.100.7/32", 443, TCP)}
    # The nats-box rule is in NATS's policy (a pod outside the chart: no edge between its pods).
    docs = render("networkPolicy.extraIngress.nats[0].from[0].podSelector.matchLabels.app=x")
    nats = next(d for d in docs if d["metadata"]["name"] == "iot-nats-netpol")
    assert {"from": [{"podSelector": {"matchLabels": {"app": "x"}}}]} in nats["spec"]["ingress"]


def test_emqx_tls_opens_8883_and_external_services_become_egress_to_their_ports(render):
    graph = allowed_graph(render(
        "emqx.tls.existingSecret=emqx-tls", "postgresql.enabled=false",
        "externalDatabase.host=db.example", "externalDatabase.port=6432",
        "externalDatabase.username=iot", "externalDatabase.database=iot",
        "externalDatabase.existingSecret=iot-db", "keycloak.enabled=false",
        "uiIot.auth.enabled=false",
        *(f"externalDatabase.roles.{key}=db-{key.lower()}" for key in (
            "ingest", "evaluator", "uiIot", "opsWorker", "routeDelivery")),
        "nats.enabled=false", "externalNats.url=nats://nats.messaging:4333",
        "externalNats.mqtt.host=nats.messaging"))
    anywhere = ("ipBlock 0.0.0.0/0", "ipBlock ::/0")
    db_users = (*SERVICES, "test")
    expected = {
        ("anywhere", "emqx", 1883, TCP), ("anywhere", "emqx", 8883, TCP),
        ("anywhere", "ui-iot", 8080, TCP), ("test", "ui-iot", 8080, TCP),
        *((c, DNS_PEER, 53, p) for c in (*SERVICES, "emqx", "test")
          for p in (UDP, TCP)),
        *((u, a, 6432, TCP) for u in db_users for a in anywhere),
        *((u, a, 4333, TCP) for u in ("ingest", "route-delivery") for a in anywhere),
        *(("emqx", a, 1883, TCP) for a in anywhere),
        ("route-delivery", f"ipBlock 0.0.0.0/0 except {','.join(DENIED_V4)}", "*", "*"),
        ("route-delivery", f"ipBlock ::/0 except {','.join(DENIED_V6)}", "*", "*"),
    }
    assert graph == expected


def test_webhook_egress_excepts_the_guard_deny_list_and_opens_allowed_networks(render):
    docs = render("routeDelivery.webhooks.denyCidrs={10.96.0.0/12,fd10::/108,203.0.113.0/24}",
                  "routeDelivery.webhooks.allowCidrs={10.20.0.0/16}")
    graph = allowed_graph(docs)
    v4 = ",".join([*DENIED_V4, "10.96.0.0/12", "203.0.113.0/24"])
    v6 = ",".join([*DENIED_V6, "fd10::/108"])
    webhooks = {e for e in graph if e[0] == "route-delivery" and e[1].startswith("ipBlock")}
    assert webhooks == {("route-delivery", f"ipBlock 0.0.0.0/0 except {v4}", "*", "*"),
                        ("route-delivery", f"ipBlock ::/0 except {v6}", "*", "*"),
                        ("route-delivery", "ipBlock 10.20.0.0/16", "*", "*")}
    env = helm.env_by_name(helm.main_container(next(
        d for d in docs if d["metadata"]["name"] == "iot-route-delivery"
        and d["kind"] == "Deployment")))
    assert env["WEBHOOK_DENY_CIDRS"]["value"] == "10.96.0.0/12,fd10::/108,203.0.113.0/24"
    assert env["WEBHOOK_ALLOW_CIDRS"]["value"] == "10.20.0.0/16"
    assert "WEBHOOK_ALLOW_HOSTS" not in env


def test_the_chart_deny_list_is_route_delivery_default_deny(render):
    # The chart cannot import Python: the two lists are kept equal by this test.
    docs = render()
    policy = next(d for d in docs if d["metadata"]["name"] == "iot-route-delivery-netpol")
    blocks = [peer["ipBlock"] for rule in policy["spec"]["egress"] for peer in rule.get("to", [])
              if "ipBlock" in peer]
    assert [b["except"] for b in blocks] == [DENIED_V4, DENIED_V6]


def test_network_policies_off_renders_none(render):
    assert not [d for d in render("networkPolicy.enabled=false") if d["kind"] == "NetworkPolicy"]


def test_components_switched_off_have_no_policy_and_no_edges(render):
    docs = render("keycloak.enabled=false", "uiIot.auth.enabled=false", "tests.enabled=false",
                  "emqx.enabled=false")
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "NetworkPolicy"}
    assert names == {f"iot-{c}-netpol" for c in (*SERVICES, "nats", "postgresql",
                                                 "default-deny")}
    assert not {e for e in allowed_graph(docs) if "keycloak" in e or "emqx" in e or "test" in e}


# -- validation --------------------------------------------------------------------------------

VARIANT = (
    "metrics.serviceMonitor.enabled=true",
    "emqx.tls.existingSecret=emqx-tls",
    "networkPolicy.ingressFrom.keycloak[0].namespaceSelector.matchLabels.team=edge",
    "networkPolicy.ingressFrom.keycloak[0].podSelector.matchExpressions[0].key=app",
    "networkPolicy.ingressFrom.keycloak[0].podSelector.matchExpressions[0].operator=Exists",
    "networkPolicy.extraEgress.routeDelivery[0].to[0].ipBlock.cidr=10.30.0.0/16",
    "networkPolicy.extraEgress.routeDelivery[0].to[0].ipBlock.except[0]=10.30.1.0/24",
    "networkPolicy.extraEgress.routeDelivery[0].ports[0].port=8443",
    "networkPolicy.extraEgress.routeDelivery[0].ports[0].endPort=8543",
    "routeDelivery.webhooks.denyCidrs={10.96.0.0/12}",
    "routeDelivery.webhooks.allowCidrs={10.20.0.0/16}",
    "routeDelivery.webhooks.allowHosts={hooks.example.com,*.example.org}",
)


def _policies(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("set_values", [(), VARIANT], ids=["default", "variant"])
def test_network_policies_validate_strictly(render, kube_validate, version, set_values):
    docs = _policies(render(*set_values))
    assert len(docs) == 11
    assert [e for doc in docs for e in kube_validate(doc, version)] == []


def test_helm3_and_helm4_render_the_policies_identically(render):
    assert json.dumps(_policies(render(*VARIANT))) == json.dumps(
        _policies(render(*VARIANT, major=4)))


@pytest.fixture(scope="module")
def netpol_namespace(apiserver) -> str:
    status, answer = apiserver.request("POST", "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "netpol"}})
    assert status in (201, 409), answer
    return "netpol"


@pytest.mark.parametrize("set_values", [(), VARIANT], ids=["default", "variant"])
def test_the_api_server_accepts_the_policies_in_a_server_side_dry_run(
        render, apiserver, netpol_namespace, set_values):
    failures = []
    for doc in _policies(render(*set_values)):
        status, answer = apiserver.dry_run_create(doc, netpol_namespace)
        if status != 201:
            failures.append(f"{doc['metadata']['name']}: {answer.get('message')}")
    assert failures == []


def test_the_api_server_dry_run_refuses_a_broken_policy(render, apiserver, netpol_namespace):
    """Control: the dry-run really validates NetworkPolicies."""
    policy = _policies(render())[1]
    policy["spec"]["egress"][0]["ports"][0]["protocol"] = "ICMP"
    status, answer = apiserver.dry_run_create(policy, netpol_namespace)
    assert status == 422 and "protocol" in answer.get("message", ""), answer


BAD_VALUES = {
    "enabled-not-boolean": (["networkPolicy.enabled=yes"], ["/networkPolicy/enabled"]),
    "unknown-key": (["networkPolicy.egress=x"], ["'egress' not allowed"]),
    "unknown-component": (["networkPolicy.extraIngress.grafana[0].ports[0].port=1"],
                          ["'grafana' not allowed"]),
    "peer-typo": (["networkPolicy.ingressFrom.uiIot[0].namespaceSelecter.x=y"],
                  ["/networkPolicy/ingressFrom/uiIot/0", "'namespaceSelecter' not allowed"]),
    "ipblock-with-selector": (["networkPolicy.ingressFrom.emqx[0].ipBlock.cidr=10.0.0.0/8",
                               "networkPolicy.ingressFrom.emqx[0].podSelector.matchLabels.a=b"],
                              ["/networkPolicy/ingressFrom/emqx/0"]),
    "bad-cidr": (["routeDelivery.webhooks.denyCidrs={10.0.0.0}"],
                 ["/routeDelivery/webhooks/denyCidrs/0"]),
    "bad-host": (["routeDelivery.webhooks.allowHosts={https://hooks.example.com}"],
                 ["/routeDelivery/webhooks/allowHosts/0"]),
    "webhooks-on-another-service": (["ingest.webhooks.allowCidrs={10.0.0.0/8}"],
                                    ["/ingest"]),
    "no-dns-port": (["networkPolicy.dns.ports=null"], ["/networkPolicy/dns"]),
    "bad-protocol": (["networkPolicy.extraEgress.emqx[0].ports[0].protocol=ICMP"],
                     ["/networkPolicy/extraEgress/emqx/0/ports/0/protocol"]),
    "webhook-env-shadowed": (["routeDelivery.webhooks.allowCidrs={10.0.0.0/8}",
                              "routeDelivery.env.WEBHOOK_ALLOW_CIDRS=10.0.0.0/8"],
                             ["routeDelivery.env.WEBHOOK_ALLOW_CIDRS is set by the chart",
                              "routeDelivery.webhooks.allowCidrs"]),
}


@pytest.mark.parametrize("major", [3, 4])
@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_network_policy_values_fail_naming_the_field(case, major):
    set_values, expected = BAD_VALUES[case]
    result = helm.template(major=major, set_values=tuple(set_values))
    assert result.returncode != 0, f"{case} rendered"
    for text in expected:
        assert text in result.stderr, f"{case}: {text!r} not in:\n{result.stderr}"
