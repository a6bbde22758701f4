"""Scheduling and pod metadata (_scheduling.tpl, _metadata.tpl): global defaults and
per-component overrides of nodeSelector, tolerations, affinity, topology spread, priority class,
pod labels and annotations, commonLabels, the ServiceAccount, security contexts merged over the
hardened defaults, and optional CPU limits. Rendered with the real Helm; the renders validate
strictly and are identical under Helm 3 and Helm 4."""

from __future__ import annotations

import textwrap

import pytest
from iot_tools import helm
from iot_tools.kube import KUBE_VERSIONS

SERVICES = ("iot-ingest", "iot-evaluator", "iot-ui-iot", "iot-ops-worker", "iot-route-delivery")
THIRD_PARTY = ("iot-keycloak", "iot-emqx", "iot-nats", "iot-postgresql")
WORKLOADS = SERVICES + THIRD_PARTY
MULTI_REPLICA = {"iot-ingest", "iot-ui-iot", "iot-route-delivery"}
CHART_LABEL_KEYS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/version",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
}

# Values a cluster running OpenShift's restricted SCC needs: the SCC assigns user, group and
# fsGroup from the namespace's range, so the chart must not pin them.
OPENSHIFT_VALUES = textwrap.dedent(
    """\
    global:
      podSecurityContext:
        runAsUser: null
        runAsGroup: null
        fsGroup: null
      containerSecurityContext:
        runAsUser: null
        runAsGroup: null
    """
)


def _pods(docs: list[dict]) -> dict[str, dict]:
    """{workload name: pod spec}."""
    return {w["metadata"]["name"]: helm.pod_spec(w) for w in helm.workloads(docs)}


def _pod_metadata(docs: list[dict]) -> dict[str, dict]:
    return {w["metadata"]["name"]: w["spec"]["template"]["metadata"] for w in helm.workloads(docs)}


def _selector(docs: list[dict], name: str) -> dict:
    workload = helm.by_kind_and_name(docs)
    kind = "StatefulSet" if name in ("iot-nats", "iot-postgresql") else "Deployment"
    return workload[(kind, name)]["spec"]["selector"]["matchLabels"]


def _containers(pod: dict) -> list[dict]:
    return pod.get("initContainers", []) + pod["containers"]


def _values_file(tmp_path, text: str):
    path = tmp_path / "values.yaml"
    path.write_text(text)
    return path


def test_default_spreads_multi_replica_services_softly_across_nodes(default_renders):
    docs = default_renders[3]
    for name, pod in _pods(docs).items():
        if name in MULTI_REPLICA:
            assert pod["topologySpreadConstraints"] == [
                {
                    "maxSkew": 1,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": _selector(docs, name)},
                }
            ], name
        else:
            assert "topologySpreadConstraints" not in pod, name


def test_default_render_sets_no_scheduling_constraints(default_renders):
    for name, pod in _pods(default_renders[3]).items():
        assert not {"nodeSelector", "tolerations", "affinity", "priorityClassName"} & pod.keys()
        assert pod["serviceAccountName"] == "default", name


def test_raising_replicas_to_two_adds_the_default_spread(render):
    pod = _pods(render("evaluator.replicas=2"))["iot-evaluator"]
    assert pod["topologySpreadConstraints"][0]["whenUnsatisfiable"] == "ScheduleAnyway"


def test_global_node_selector_reaches_every_pod_and_components_merge_over_it(render):
    docs = render(
        "global.nodeSelector.pool=iot",
        "global.nodeSelector.zone=a",
        "nats.nodeSelector.disk=ssd",
        "nats.nodeSelector.zone=null",
    )
    pods = _pods(docs)
    for name in WORKLOADS:
        expected = (
            {"pool": "iot", "disk": "ssd"} if name == "iot-nats" else {"pool": "iot", "zone": "a"}
        )
        assert pods[name]["nodeSelector"] == expected, name


def test_component_tolerations_replace_the_global_ones(render):
    docs = render(
        "global.tolerations[0].key=dedicated",
        "global.tolerations[0].operator=Exists",
        "postgresql.tolerations[0].key=db",
        "postgresql.tolerations[0].operator=Equal",
        "postgresql.tolerations[0].value=yes",
        "postgresql.tolerations[0].effect=NoSchedule",
    )
    pods = _pods(docs)
    for name in WORKLOADS:
        if name == "iot-postgresql":
            assert pods[name]["tolerations"] == [
                {"key": "db", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}
            ]
        else:
            assert pods[name]["tolerations"] == [{"key": "dedicated", "operator": "Exists"}], name


def test_component_affinity_merges_over_the_global_one_key_by_key(render, tmp_path):
    node_affinity = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "arch", "operator": "In", "values": ["amd64"]}]}
            ]
        }
    }
    values = textwrap.dedent(
        """\
        global:
          affinity:
            nodeAffinity:
              requiredDuringSchedulingIgnoredDuringExecution:
                nodeSelectorTerms:
                  - matchExpressions: [{key: arch, operator: In, values: [amd64]}]
        keycloak:
          affinity:
            podAntiAffinity:
              preferredDuringSchedulingIgnoredDuringExecution:
                - weight: 10
                  podAffinityTerm:
                    topologyKey: kubernetes.io/hostname
                    labelSelector: {matchLabels: {app.kubernetes.io/component: postgresql}}
        emqx:
          affinity:
            nodeAffinity: null
        """
    )
    pods = _pods(render(values_files=(_values_file(tmp_path, values),)))
    assert pods["iot-keycloak"]["affinity"]["nodeAffinity"] == node_affinity
    assert "podAntiAffinity" in pods["iot-keycloak"]["affinity"]
    assert "affinity" not in pods["iot-emqx"]
    assert pods["iot-ingest"]["affinity"] == {"nodeAffinity": node_affinity}


def test_user_spread_constraints_replace_the_default_and_get_the_component_selector(render):
    docs = render(
        "uiIot.topologySpreadConstraints[0].maxSkew=2",
        "uiIot.topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
        "uiIot.topologySpreadConstraints[0].whenUnsatisfiable=DoNotSchedule",
    )
    pods = _pods(docs)
    assert pods["iot-ui-iot"]["topologySpreadConstraints"] == [
        {
            "maxSkew": 2,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": _selector(docs, "iot-ui-iot")},
        }
    ]
    # the other multi-replica services keep the default
    assert pods["iot-ingest"]["topologySpreadConstraints"][0]["maxSkew"] == 1


def test_global_spread_constraints_reach_every_pod_each_selecting_its_own(render):
    docs = render(
        "global.topologySpreadConstraints[0].maxSkew=1",
        "global.topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
        "global.topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
    )
    for name, pod in _pods(docs).items():
        (constraint,) = pod["topologySpreadConstraints"]
        assert constraint["topologyKey"] == "topology.kubernetes.io/zone", name
        assert constraint["labelSelector"] == {"matchLabels": _selector(docs, name)}


def test_a_given_label_selector_is_kept(render):
    docs = render(
        "ingest.topologySpreadConstraints[0].maxSkew=1",
        "ingest.topologySpreadConstraints[0].topologyKey=kubernetes.io/hostname",
        "ingest.topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
        "ingest.topologySpreadConstraints[0].labelSelector.matchLabels.tier=backend",
    )
    (constraint,) = _pods(docs)["iot-ingest"]["topologySpreadConstraints"]
    assert constraint["labelSelector"] == {"matchLabels": {"tier": "backend"}}


def test_component_priority_class_wins_over_the_global_one(render):
    pods = _pods(render("global.priorityClassName=iot", "nats.priorityClassName=iot-critical"))
    for name, pod in pods.items():
        assert pod["priorityClassName"] == ("iot-critical" if name == "iot-nats" else "iot"), name


def test_pod_labels_and_annotations_merge_global_then_component(render):
    docs = render(
        "global.podLabels.team=iot",
        "global.podAnnotations.owner=platform",
        "ingest.podLabels.tier=backend",
        "ingest.podAnnotations.owner=ingest-team",
    )
    metadata = _pod_metadata(docs)
    assert metadata["iot-ingest"]["labels"]["tier"] == "backend"
    assert metadata["iot-ingest"]["annotations"]["owner"] == "ingest-team"
    for name in WORKLOADS:
        assert metadata[name]["labels"]["team"] == "iot", name
        assert metadata[name]["labels"]["app.kubernetes.io/component"], name
        if name != "iot-ingest":
            assert metadata[name]["annotations"]["owner"] == "platform", name


def test_pod_annotations_keep_the_charts_checksums(render, base_docs):
    # Both renders with the same fixed passwords: checksum/nats-secret hashes them.
    before = _pod_metadata(base_docs)["iot-nats"]["annotations"]
    after = _pod_metadata(render("nats.podAnnotations.team=iot"))["iot-nats"]["annotations"]
    assert before
    assert after == {**before, "team": "iot"}


def test_pod_labels_stay_off_the_selectors_and_other_objects(render, base_docs):
    docs = render("global.podLabels.team=iot")
    for name in WORKLOADS:
        assert _selector(docs, name) == _selector(base_docs, name)
    for doc in docs:
        assert "team" not in doc["metadata"]["labels"], doc["metadata"]["name"]


def test_common_labels_are_on_every_object_and_pod(render):
    docs = render("global.commonLabels.cost-center=iot-42", "serviceAccount.create=true")
    for doc in docs:
        assert doc["metadata"]["labels"]["cost-center"] == "iot-42", doc["metadata"]["name"]
    for name, metadata in _pod_metadata(docs).items():
        assert metadata["labels"]["cost-center"] == "iot-42", name


def test_common_labels_stay_off_selectors(render, base_docs):
    docs = render("global.commonLabels.cost-center=iot-42")
    for name in WORKLOADS:
        assert _selector(docs, name) == _selector(base_docs, name)


def test_service_account_is_created_with_its_annotations_and_no_token(render):
    docs = render(
        "serviceAccount.create=true",
        "serviceAccount.annotations.iam\\.gke\\.io/gcp-service-account=iot@p.iam.gserviceaccount.com",
    )
    (account,) = [doc for doc in docs if doc["kind"] == "ServiceAccount"]
    assert account["metadata"]["name"] == "iot"
    assert account["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": "iot@p.iam.gserviceaccount.com"
    }
    assert account["automountServiceAccountToken"] is False
    for name, pod in _pods(docs).items():
        assert pod["serviceAccountName"] == "iot", name
        assert pod["automountServiceAccountToken"] is False, name


def test_service_account_name_is_used_without_creating_it(render):
    docs = render("serviceAccount.name=platform-sa")
    assert not [doc for doc in docs if doc["kind"] == "ServiceAccount"]
    for name, pod in _pods(docs).items():
        assert pod["serviceAccountName"] == "platform-sa", name


def test_openshift_values_unset_every_pinned_id_and_keep_the_hardening(render, tmp_path):
    docs = render(values_files=(_values_file(tmp_path, OPENSHIFT_VALUES),))
    for name, pod in _pods(docs).items():
        assert pod["securityContext"] == {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        }, name
        for container in _containers(pod):
            context = container["securityContext"]
            assert not {"runAsUser", "runAsGroup"} & context.keys(), (name, container["name"])
            assert context["runAsNonRoot"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}


def test_openshift_values_unset_the_ids_via_set_too(render):
    docs = render(
        "global.podSecurityContext.runAsUser=null",
        "global.containerSecurityContext.runAsUser=null",
    )
    for name, pod in _pods(docs).items():
        assert "runAsUser" not in pod["securityContext"], name
        assert pod["securityContext"]["fsGroup"] >= 0
        for container in _containers(pod):
            assert "runAsUser" not in container["securityContext"], name


def test_component_security_context_override_reaches_only_its_containers(render, base_docs):
    docs = render(
        "keycloak.containerSecurityContext.readOnlyRootFilesystem=true",
        "ingest.podSecurityContext.fsGroupChangePolicy=OnRootMismatch",
        "ingest.containerSecurityContext.runAsUser=20000",
    )
    pods, before = _pods(docs), _pods(base_docs)
    assert pods["iot-keycloak"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"]
    assert pods["iot-ingest"]["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    assert pods["iot-ingest"]["securityContext"]["runAsUser"] == 10001
    for container in _containers(pods["iot-ingest"]):  # the migrate init container too
        assert container["securityContext"]["runAsUser"] == 20000
    for name in WORKLOADS:
        if name not in ("iot-keycloak", "iot-ingest"):
            assert pods[name] == before[name], name


def test_component_override_wins_over_the_global_security_context(render):
    pods = _pods(
        render("global.podSecurityContext.fsGroup=null", "nats.podSecurityContext.fsGroup=4242")
    )
    assert pods["iot-nats"]["securityContext"]["fsGroup"] == 4242
    assert "fsGroup" not in pods["iot-emqx"]["securityContext"]


def test_cpu_limit_null_drops_only_that_limit(render, base_docs):
    docs = render("ingest.resources.limits.cpu=null", "nats.resources.limits.cpu=null")
    pods, before = _pods(docs), _pods(base_docs)
    for name in ("iot-ingest", "iot-nats"):
        main = pods[name]["containers"][0]["resources"]
        assert "cpu" not in main["limits"], name
        assert (
            main["limits"]["memory"]
            == before[name]["containers"][0]["resources"]["limits"]["memory"]
        )
        assert main["requests"] == before[name]["containers"][0]["resources"]["requests"]
    assert "cpu" in pods["iot-ui-iot"]["containers"][0]["resources"]["limits"]


def test_migrate_cpu_limit_can_be_dropped(render):
    for name, pod in _pods(render("services.migrate.resources.limits.cpu=null")).items():
        for container in pod.get("initContainers", []):
            assert "cpu" not in container["resources"]["limits"], name


# Every knob of this file at once: validated strictly and rendered identically by both Helms.
FULL = (
    "global.nodeSelector.pool=iot",
    "global.tolerations[0].key=dedicated",
    "global.tolerations[0].operator=Exists",
    "global.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    ".nodeSelectorTerms[0].matchExpressions[0].key=arch",
    "global.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    ".nodeSelectorTerms[0].matchExpressions[0].operator=In",
    "global.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    ".nodeSelectorTerms[0].matchExpressions[0].values={amd64}",
    "emqx.topologySpreadConstraints[0].maxSkew=1",
    "emqx.topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
    "emqx.topologySpreadConstraints[0].whenUnsatisfiable=DoNotSchedule",
    "global.priorityClassName=iot",
    "global.podLabels.team=iot",
    "global.podAnnotations.owner=platform",
    "global.commonLabels.cost-center=iot-42",
    "serviceAccount.create=true",
    "serviceAccount.annotations.owner=platform",
    "global.podSecurityContext.runAsUser=null",
    "global.containerSecurityContext.runAsUser=null",
    "keycloak.containerSecurityContext.readOnlyRootFilesystem=true",
    "ingest.resources.limits.cpu=null",
)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_scheduling_render_validates_strictly(render, kube_validate, version):
    errors = [error for doc in render(*FULL) for error in kube_validate(doc, version)]
    assert errors == []


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_openshift_render_validates_strictly(render, kube_validate, version, tmp_path):
    docs = render(values_files=(_values_file(tmp_path, OPENSHIFT_VALUES),))
    assert [error for doc in docs for error in kube_validate(doc, version)] == []


def test_scheduling_render_is_identical_under_helm_3_and_4(fixed_secrets, tmp_path):
    values = (_values_file(tmp_path, OPENSHIFT_VALUES),)
    outputs = [
        helm.template(major=major, set_values=(*fixed_secrets, *FULL), values_files=values)
        for major in (3, 4)
    ]
    assert [o.returncode for o in outputs] == [0, 0], outputs[0].stderr + outputs[1].stderr
    assert outputs[0].stdout == outputs[1].stdout


# id -> (--set values, texts the error must contain)
BAD_VALUES = {
    "node-selector-value-not-a-label-value": (
        ["global.nodeSelector.pool=two words"],
        ["/global/nodeSelector/pool", "does not match pattern"],
    ),
    "toleration-typo": (
        ["ingest.tolerations[0].keys=x"],
        ["/ingest/tolerations/0", "'keys' not allowed"],
    ),
    "toleration-bad-effect": (
        ["nats.tolerations[0].key=x", "nats.tolerations[0].effect=NoRun"],
        ["/nats/tolerations/0/effect"],
    ),
    "tolerations-not-a-list": (["global.tolerations=x"], ["/global/tolerations", "want array"]),
    "affinity-typo": (
        ["keycloak.affinity.nodeAfinity.x=y"],
        ["/keycloak/affinity", "'nodeAfinity' not allowed"],
    ),
    "spread-without-topology-key": (
        [
            "uiIot.topologySpreadConstraints[0].maxSkew=1",
            "uiIot.topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
        ],
        ["/uiIot/topologySpreadConstraints/0", "topologyKey"],
    ),
    "spread-bad-when-unsatisfiable": (
        [
            "global.topologySpreadConstraints[0].maxSkew=1",
            "global.topologySpreadConstraints[0].topologyKey=zone",
            "global.topologySpreadConstraints[0].whenUnsatisfiable=Maybe",
        ],
        ["/global/topologySpreadConstraints/0/whenUnsatisfiable"],
    ),
    "spread-zero-skew": (
        [
            "ingest.topologySpreadConstraints[0].maxSkew=0",
            "ingest.topologySpreadConstraints[0].topologyKey=zone",
            "ingest.topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
        ],
        ["/ingest/topologySpreadConstraints/0/maxSkew", "minimum"],
    ),
    "priority-class-not-a-name": (
        ["global.priorityClassName=High_Priority"],
        ["/global/priorityClassName", "does not match pattern"],
    ),
    "common-label-value-too-long": (
        ["global.commonLabels.team=" + "x" * 64],
        ["/global/commonLabels/team"],
    ),
    "pod-security-context-typo": (
        ["emqx.podSecurityContext.runAsUsr=1"],
        ["/emqx/podSecurityContext", "'runAsUsr' not allowed"],
    ),
    "container-security-context-wrong-type": (
        ["global.containerSecurityContext.privileged=sometimes"],
        ["/global/containerSecurityContext/privileged", "want null or boolean"],
    ),
    "service-account-typo": (["serviceAccount.crate=true"], ["'crate' not allowed"]),
    "memory-limit-cannot-be-dropped": (
        ["uiIot.resources.limits.memory=null"],
        ["/uiIot/resources/limits", "memory"],
    ),
    # chart guards
    "common-label-replaces-a-chart-label": (
        ["global.commonLabels.app\\.kubernetes\\.io/component=mine"],
        [
            "global.commonLabels.app.kubernetes.io/component is a label the chart sets itself",
            "remove it from global.commonLabels",
        ],
    ),
    "pod-label-replaces-a-selector-label": (
        ["ingest.podLabels.app\\.kubernetes\\.io/instance=other"],
        [
            "ingest.podLabels.app.kubernetes.io/instance is a label the chart sets itself",
            "remove it from ingest.podLabels",
        ],
    ),
    "global-pod-label-replaces-a-selector-label": (
        ["global.podLabels.app\\.kubernetes\\.io/name=other"],
        ["global.podLabels.app.kubernetes.io/name is a label the chart sets itself"],
    ),
}


@pytest.mark.parametrize("major", [3, 4])
@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_scheduling_values_fail_naming_the_field(case, major):
    set_values, expected = BAD_VALUES[case]
    result = helm.template(major=major, set_values=tuple(set_values))
    assert result.returncode != 0, f"{case} rendered: {result.stdout[:300]}"
    for text in expected:
        assert text in result.stderr, f"{case}: {text!r} not in:\n{result.stderr}"
