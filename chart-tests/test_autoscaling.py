"""Autoscaling and disruption (_autoscaling.tpl): the HorizontalPodAutoscaler of ingest, uiIot
and routeDelivery (off by default), the PodDisruptionBudget and the rollout strategy of each
component. Rendered with the real Helm; the renders validate strictly and are identical under
Helm 3 and Helm 4."""

from __future__ import annotations

import pytest
from iot_tools import helm
from iot_tools.kube import KUBE_VERSIONS

AUTOSCALABLE = {
    "ingest": "iot-ingest",
    "uiIot": "iot-ui-iot",
    "routeDelivery": "iot-route-delivery",
}


def _objects(docs: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def _deployment(docs: list[dict], name: str) -> dict:
    return _objects(docs, "Deployment")[name]


def test_no_autoscaler_by_default(default_renders):
    for major in (3, 4):
        assert _objects(default_renders[major], "HorizontalPodAutoscaler") == {}


@pytest.mark.parametrize("key", sorted(AUTOSCALABLE))
def test_autoscaling_renders_an_hpa_on_cpu_and_drops_the_replicas(render, key):
    name = AUTOSCALABLE[key]
    docs = render(f"{key}.autoscaling.enabled=true")
    hpa = _objects(docs, "HorizontalPodAutoscaler")[name]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "minReplicas": 2,
        "maxReplicas": 6,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80},
                },
            }
        ],
    }
    assert hpa["metadata"]["labels"] == _deployment(docs, name)["metadata"]["labels"]
    assert "replicas" not in _deployment(docs, name)["spec"]
    assert set(_objects(docs, "HorizontalPodAutoscaler")) == {name}


def test_memory_target_alone_when_cpu_target_is_zero(render):
    docs = render(
        "ingest.autoscaling.enabled=true",
        "ingest.autoscaling.targetCPUUtilizationPercentage=0",
        "ingest.autoscaling.targetMemoryUtilizationPercentage=75",
    )
    metrics = _objects(docs, "HorizontalPodAutoscaler")["iot-ingest"]["spec"]["metrics"]
    assert metrics == [
        {
            "type": "Resource",
            "resource": {
                "name": "memory",
                "target": {"type": "Utilization", "averageUtilization": 75},
            },
        }
    ]


def test_behavior_is_passed_through(render):
    docs = render(
        "routeDelivery.autoscaling.enabled=true",
        "routeDelivery.autoscaling.behavior.scaleDown.stabilizationWindowSeconds=600",
    )
    hpa = _objects(docs, "HorizontalPodAutoscaler")["iot-route-delivery"]
    assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 600}}


def test_autoscaled_budget_and_spread_follow_min_and_max_replicas(render):
    docs = render(
        "uiIot.autoscaling.enabled=true",
        "uiIot.autoscaling.minReplicas=1",
        "uiIot.autoscaling.maxReplicas=4",
    )
    # one replica at the low end: a budget would block drains or protect nothing
    assert "iot-ui-iot" not in _objects(docs, "PodDisruptionBudget")
    # up to four: the soft spread across nodes applies
    pod = helm.pod_spec(_deployment(docs, "iot-ui-iot"))
    assert pod["topologySpreadConstraints"][0]["whenUnsatisfiable"] == "ScheduleAnyway"


def test_autoscaled_budget_exists_from_two_min_replicas(render):
    docs = render("evaluator.replicas=1", "ingest.replicas=1", "ingest.autoscaling.enabled=true")
    assert _objects(docs, "PodDisruptionBudget")["iot-ingest"]["spec"]["maxUnavailable"] == 1


def test_budget_min_available_replaces_max_unavailable(render, base_docs, changes):
    docs = render("ingest.pdb.minAvailable=50%", "ingest.pdb.maxUnavailable=null")
    assert changes(base_docs, docs) == {
        ("PodDisruptionBudget", "iot-ingest", "spec", "maxUnavailable"): (1, None),
        ("PodDisruptionBudget", "iot-ingest", "spec", "minAvailable"): (None, "50%"),
    }


def test_budget_max_unavailable_zero_is_kept(render):
    docs = render("routeDelivery.pdb.maxUnavailable=0")
    budget = _objects(docs, "PodDisruptionBudget")["iot-route-delivery"]
    assert budget["spec"]["maxUnavailable"] == 0


def test_budget_can_be_switched_off(render):
    docs = render("uiIot.pdb.enabled=false")
    assert set(_objects(docs, "PodDisruptionBudget")) == {"iot-ingest", "iot-route-delivery"}


def test_budget_follows_replicas(render):
    docs = render("opsWorker.replicas=3")
    assert "iot-ops-worker" in _objects(docs, "PodDisruptionBudget")


def test_rollout_bounds_are_settable_per_deployment(render, base_docs, changes):
    docs = render(
        "ingest.strategy.rollingUpdate.maxSurge=25%", "emqx.strategy.rollingUpdate.maxUnavailable=1"
    )
    path = ("spec", "strategy", "rollingUpdate")
    assert changes(base_docs, docs) == {
        ("Deployment", "iot-ingest", *path, "maxSurge"): (1, "25%"),
        ("Deployment", "iot-emqx", *path, "maxUnavailable"): (0, 1),
    }


def test_recreate_drops_the_rolling_update_bounds(render):
    strategy = _deployment(render("keycloak.strategy.type=Recreate"), "iot-keycloak")["spec"][
        "strategy"
    ]
    assert strategy == {"type": "Recreate"}


def test_statefulset_update_strategy_is_settable(render):
    docs = render(
        "postgresql.updateStrategy.type=OnDelete",
        "nats.updateStrategy.rollingUpdate.partition=1",
    )
    sets = _objects(docs, "StatefulSet")
    assert sets["iot-postgresql"]["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert sets["iot-nats"]["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"partition": 1},
    }


FULL = (
    "ingest.autoscaling.enabled=true",
    "ingest.autoscaling.targetMemoryUtilizationPercentage=70",
    "ingest.autoscaling.behavior.scaleDown.policies[0].type=Pods",
    "ingest.autoscaling.behavior.scaleDown.policies[0].value=1",
    "ingest.autoscaling.behavior.scaleDown.policies[0].periodSeconds=60",
    "uiIot.autoscaling.enabled=true",
    "routeDelivery.autoscaling.enabled=true",
    "routeDelivery.pdb.minAvailable=1",
    "routeDelivery.pdb.maxUnavailable=null",
    "uiIot.pdb.maxUnavailable=25%",
    "evaluator.strategy.type=Recreate",
    "emqx.strategy.rollingUpdate.maxSurge=50%",
    "nats.updateStrategy.rollingUpdate.partition=0",
    "postgresql.updateStrategy.type=OnDelete",
)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_autoscaling_render_validates_strictly(render, kube_validate, version):
    errors = [error for doc in render(*FULL) for error in kube_validate(doc, version)]
    assert errors == []


def test_autoscaling_render_is_identical_under_helm_3_and_4(fixed_secrets):
    outputs = [helm.template(major=major, set_values=(*fixed_secrets, *FULL)) for major in (3, 4)]
    assert [o.returncode for o in outputs] == [0, 0], outputs[0].stderr + outputs[1].stderr
    assert outputs[0].stdout == outputs[1].stdout


# id -> (--set values, texts the error must contain)
BAD_VALUES = {
    # schema
    "autoscaling-on-a-service-without-hpa": (
        ["evaluator.autoscaling.enabled=true"],
        ["/evaluator/autoscaling"],
    ),
    "autoscaling-typo": (
        ["ingest.autoscaling.maxReplica=3"],
        ["/ingest/autoscaling", "'maxReplica' not allowed"],
    ),
    "autoscaling-zero-min-replicas": (
        ["uiIot.autoscaling.minReplicas=0"],
        ["/uiIot/autoscaling/minReplicas", "minimum"],
    ),
    "autoscaling-negative-target": (
        ["routeDelivery.autoscaling.targetCPUUtilizationPercentage=-5"],
        ["/routeDelivery/autoscaling/targetCPUUtilizationPercentage", "minimum"],
    ),
    "autoscaling-behavior-typo": (
        ["ingest.autoscaling.behavior.scaleDwn.selectPolicy=Max"],
        ["/ingest/autoscaling/behavior", "'scaleDwn' not allowed"],
    ),
    "pdb-bound-not-a-number-or-percentage": (
        ["ingest.pdb.maxUnavailable=half"],
        ["/ingest/pdb/maxUnavailable"],
    ),
    "pdb-typo": (["opsWorker.pdb.minAvailble=1"], ["/opsWorker/pdb", "'minAvailble' not allowed"]),
    "strategy-unknown-type": (
        ["keycloak.strategy.type=BlueGreen"],
        ["/keycloak/strategy/type"],
    ),
    "statefulset-strategy-deployment-type": (
        ["nats.updateStrategy.type=Recreate"],
        ["/nats/updateStrategy/type"],
    ),
    "strategy-negative-partition": (
        ["postgresql.updateStrategy.rollingUpdate.partition=-1"],
        ["/postgresql/updateStrategy/rollingUpdate/partition", "minimum"],
    ),
    # chart guards
    "autoscaling-min-above-max": (
        [
            "ingest.autoscaling.enabled=true",
            "ingest.autoscaling.minReplicas=5",
            "ingest.autoscaling.maxReplicas=3",
        ],
        [
            "ingest.autoscaling.minReplicas (5) is above maxReplicas (3)",
            "lower ingest.autoscaling.minReplicas or raise ingest.autoscaling.maxReplicas",
        ],
    ),
    "autoscaling-without-a-target": (
        ["uiIot.autoscaling.enabled=true", "uiIot.autoscaling.targetCPUUtilizationPercentage=0"],
        [
            "uiIot.autoscaling has no target",
            "set uiIot.autoscaling.targetCPUUtilizationPercentage or "
            "targetMemoryUtilizationPercentage",
        ],
    ),
    "pdb-with-both-bounds": (
        ["ingest.pdb.minAvailable=1"],
        [
            "ingest.pdb needs exactly one of minAvailable and maxUnavailable (given: both)",
            "--set ingest.pdb.maxUnavailable=null",
        ],
    ),
    "pdb-with-neither-bound": (
        ["uiIot.pdb.maxUnavailable=null"],
        ["uiIot.pdb needs exactly one of minAvailable and maxUnavailable (given: neither)"],
    ),
    "rollout-that-cannot-progress": (
        ["routeDelivery.strategy.rollingUpdate.maxSurge=0"],
        [
            "routeDelivery.strategy.rollingUpdate has maxSurge and maxUnavailable both 0",
            "raise one of them",
        ],
    ),
}


@pytest.mark.parametrize("major", [3, 4])
@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_autoscaling_values_fail_naming_the_field(case, major):
    set_values, expected = BAD_VALUES[case]
    result = helm.template(major=major, set_values=tuple(set_values))
    assert result.returncode != 0, f"{case} rendered: {result.stdout[:300]}"
    for text in expected:
        assert text in result.stderr, f"{case}: {text!r} not in:\n{result.stderr}"
