"""The probe drill checked against the real kubelet: the drill's faults (NATS killed, PostgreSQL
shut down fast, ingest's event loop hung) played on a real single-node Kubernetes (the
`cluster` fixture) with the drill's values (iot_tools.cluster.drill.DRILL_SETS: probes a few
seconds apart), every pod's Ready condition, restart count and the kubelet's Killing events
watched through the API, and compared with the drill's own model for the same render
(iot_tools.drill.limits.Limits: no bound re-derived here).

Tolerances, added to the model's bounds: STATUS_TOLERANCE (2 s) on readiness changes — the
watch sees the kubelet's status write within milliseconds, the kubelet writes a readiness
change at once, 2 busy cores may delay either; RESTART_TOLERANCE
(5 s) on a new container — the kubelet notices an exit by relisting every 1 s (PLEG), then
creates the container. Generous, so a busy CI machine does not flake;
the measured figures are in the report.
Times are the watch's receive times, not lastTransitionTime (1 s resolution; kept in the
report as *_api). A service with several replicas counts by its slowest pod.

The comparison (model bound, kubelet observed, and a local drill run's observations when
test-artifacts/cluster-drill-local.json holds one) is written to
test-artifacts/cluster-drill.json.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from iot_tools.cluster import Cluster
from iot_tools.cluster import drill as cluster_drill
from iot_tools.cluster.drill import (
    FAULTS,
    HANG_TARGET,
    RESTART_TOLERANCE,
    STATUS_TOLERANCE,
    ClusterDrill,
    FaultResult,
)

# Install (~1 min), three faults (~3.5 min on 2 busy cores), catch-up, uninstall.
pytestmark = pytest.mark.timeout(1500)
LOCAL_DRILL_REPORT = cluster_drill.ARTIFACT.with_name("cluster-drill-local.json")
OUTAGES = ("nats-outage", "postgres-outage")


@pytest.fixture(scope="module")
def played(cluster: Cluster) -> Iterator[ClusterDrill]:
    """The chart installed in namespace `drill` with the drill's values, the feed started,
    the three faults played in the drill's order, the feed stopped and its readings counted;
    uninstalled at the end whatever happened."""
    drill = ClusterDrill(cluster, namespace="drill")
    try:
        drill.run(FAULTS)
    finally:
        local = (json.loads(LOCAL_DRILL_REPORT.read_text())
                 if LOCAL_DRILL_REPORT.exists() else None)
        cluster_drill.write(drill.report(local))
    yield drill


def result(drill: ClusterDrill, fault: str) -> FaultResult:
    return next(r for r in drill.results if r.fault == fault)


@pytest.mark.parametrize("fault", OUTAGES)
def test_an_outage_takes_its_users_out_of_rotation_within_the_models_bound(
        played: ClusterDrill, fault: str):
    outcome = result(played, fault)
    assert outcome.affected, fault
    for service in outcome.affected:
        bound = played.model.limits.not_ready(service)
        assert bound is not None
        for pod, seen in outcome.pods[service].items():
            assert seen.not_ready_after is not None, f"{pod} never NotReady"
            assert seen.not_ready_after <= bound + STATUS_TOLERANCE, (pod, seen, bound)


@pytest.mark.parametrize("fault", OUTAGES)
def test_after_an_outage_its_users_are_ready_again_within_the_models_bound(
        played: ClusterDrill, fault: str):
    outcome = result(played, fault)
    for service in outcome.affected:
        bound = played.model.limits.ready_again(service)
        for pod, seen in outcome.pods[service].items():
            assert seen.ready_at_end, f"{pod} not Ready at the end"
            assert seen.ready_again_after is not None
            assert seen.ready_again_after <= bound + STATUS_TOLERANCE, (pod, seen, bound)


@pytest.mark.parametrize("fault", OUTAGES)
def test_an_outage_restarts_no_service_and_the_others_stay_ready(
        played: ClusterDrill, fault: str):
    outcome = result(played, fault)
    for service, pods in outcome.pods.items():
        for pod, seen in pods.items():
            assert seen.restarts == 0, (pod, seen)
            if service not in outcome.affected:
                assert seen.not_ready_after is None, (pod, seen)


def test_the_hung_ingest_pod_is_restarted_within_the_models_window(played: ClusterDrill):
    outcome = result(played, "hung-service")
    ((pod, seen),) = outcome.pods[HANG_TARGET].items()
    limits = played.model.limits
    lower, upper = limits.hang_restart_window(HANG_TARGET)
    assert lower is not None and upper is not None
    assert seen.restarts == 1, (pod, seen)
    assert seen.restart_decided_after is not None, f"no Killing event for {pod}"
    assert lower - STATUS_TOLERANCE <= seen.restart_decided_after <= upper + STATUS_TOLERANCE
    # The hung process ignores SIGTERM: the new container comes after the full grace period.
    assert seen.restarted_after is not None
    assert seen.restarted_after <= upper + limits.termination(HANG_TARGET) + RESTART_TOLERANCE


def test_the_hung_ingest_pod_leaves_rotation_and_is_ready_again_after_its_restart(
        played: ClusterDrill):
    outcome = result(played, "hung-service")
    ((pod, seen),) = outcome.pods[HANG_TARGET].items()
    limits = played.model.limits
    assert seen.not_ready_after is not None, f"{pod} never NotReady"
    assert seen.not_ready_after <= limits.not_ready(HANG_TARGET) + STATUS_TOLERANCE
    assert seen.ready_at_end and seen.ready_again_after is not None
    assert seen.ready_again_after <= limits.started_and_ready(HANG_TARGET) + STATUS_TOLERANCE


def test_while_ingest_hangs_every_other_pod_stays_ready_without_restarts(
        played: ClusterDrill):
    outcome = result(played, "hung-service")
    others = {name: seen for service, pods in outcome.pods.items() if service != HANG_TARGET
              for name, seen in pods.items()} | outcome.others
    assert any(name.startswith("iot-ingest-") for name in others), "the other ingest replica"
    for name, seen in others.items():
        assert seen.not_ready_after is None and seen.restarts == 0, (name, seen)


def test_every_reading_published_through_the_nats_service_is_stored_once(
        played: ClusterDrill):
    feed = played.figures["feed"]
    stored = played.figures["stored"]
    assert feed["published"] > 1000, feed
    # The outage made the feed retry: the readings crossed the faults.
    assert feed["publish_retries"] > 0, feed
    assert stored["distinct"] == feed["published"], (feed, stored)
    assert stored["rows"] == stored["distinct"], stored
