"""Every rendered object validates offline, in strict mode (unknown fields fail), against the
Kubernetes OpenAPI schemas of the oldest supported (1.30) and the newest (1.37) version shipped
by kubernetes-validate; and `helm lint --strict` passes under both Helm majors."""

from __future__ import annotations

import copy

import pytest
from iot_tools import helm
from iot_tools.chart_cases import EXTERNAL_DATABASE_LOGINS, VARIANT
from iot_tools.kube import KUBE_VERSIONS

# Existing NATS and PostgreSQL with logins and CAs from Secrets; a mirror with pull secrets and
# digests (test_external_services.py, test_images.py).
EXTERNAL_AND_MIRROR = (
    "nats.enabled=false",
    "externalNats.url=tls://nats.messaging.svc:4222",
    "externalNats.auth.existingSecret=nats-login",
    "externalNats.tls.caSecret=nats-ca",
    "externalNats.mqtt.tls=true",
    "postgresql.enabled=false",
    "externalDatabase.host=db.example",
    "externalDatabase.username=iot",
    "externalDatabase.database=iot",
    "externalDatabase.existingSecret=iot-db",
    *EXTERNAL_DATABASE_LOGINS,
    "externalDatabase.sslmode=verify-full",
    "externalDatabase.tls.caSecret=db-ca",
    "global.imageRegistry=registry.corp.example:5000/mirror",
    "global.imagePullSecrets={regcred}",
    "services.image.digest=sha256:" + "ab" * 32,
    "keycloak.image.digest=sha256:" + "cd" * 32,
)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_default_render_validates_strictly(default_renders, kube_validate, version):
    errors = [error for doc in default_renders[3] for error in kube_validate(doc, version)]
    assert errors == []


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_variant_render_validates_strictly(render, kube_validate, version):
    docs = render(*VARIANT)
    errors = [error for doc in docs for error in kube_validate(doc, version)]
    assert errors == []


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_external_services_and_mirror_render_validates_strictly(render, kube_validate, version):
    docs = render(*EXTERNAL_AND_MIRROR)
    errors = [error for doc in docs for error in kube_validate(doc, version)]
    assert errors == []


# Exposure: Service types, Ingress, EMQX's TLS listener. HTTPRoute is a CRD the Kubernetes
# schemas do not have: test_exposure.py checks its shape against the Gateway API's.
EXPOSURE = (
    "uiIot.service.type=LoadBalancer",
    "uiIot.service.externalTrafficPolicy=Local",
    "uiIot.service.loadBalancerSourceRanges={10.0.0.0/8}",
    "uiIot.service.nodePorts.http=30080",
    "uiIot.service.annotations.example\\.com/lb=internal",
    "uiIot.ingress.enabled=true",
    "uiIot.ingress.className=nginx",
    "uiIot.ingress.hosts[0].host=iot.example.com",
    "uiIot.ingress.tls[0].secretName=iot-tls",
    "uiIot.ingress.tls[0].hosts[0]=iot.example.com",
    "uiIot.httpRoute.enabled=true",
    "uiIot.httpRoute.parentRefs[0].name=gw",
    "keycloak.httpRelativePath=/auth",
    "keycloak.ingress.enabled=true",
    "keycloak.ingress.hosts[0].host=iot.example.com",
    "emqx.service.type=NodePort",
    "emqx.service.nodePorts.mqtts=30883",
    "emqx.tls.existingSecret=mqtt-tls",
    "emqx.tls.verifyClients=true",
)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_exposure_render_validates_strictly(render, kube_validate, version):
    docs = [doc for doc in render(*EXPOSURE) if doc["kind"] != "HTTPRoute"]
    assert {"Ingress", "Pod"} <= {doc["kind"] for doc in docs}
    errors = [error for doc in docs for error in kube_validate(doc, version)]
    assert errors == []


# Scheduling, pod metadata, security-context overrides, autoscaling and disruption knobs
# (test_scheduling.py, test_autoscaling.py).
SCHEDULING_AND_AUTOSCALING = (
    "global.nodeSelector.pool=iot",
    "global.tolerations[0].key=dedicated",
    "global.tolerations[0].operator=Exists",
    "global.tolerations[0].effect=NoSchedule",
    "keycloak.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0]"
    ".weight=10",
    "keycloak.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0]"
    ".podAffinityTerm.topologyKey=kubernetes.io/hostname",
    "global.topologySpreadConstraints[0].maxSkew=1",
    "global.topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
    "global.topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
    "nats.priorityClassName=iot-critical",
    "global.podAnnotations.owner=platform",
    "global.podLabels.team=iot",
    "global.commonLabels.cost-center=iot-42",
    "serviceAccount.create=true",
    "global.podSecurityContext.runAsUser=null",
    "global.podSecurityContext.fsGroup=null",
    "global.containerSecurityContext.runAsUser=null",
    "postgresql.resources.limits.cpu=null",
    "ingest.autoscaling.enabled=true",
    "ingest.autoscaling.targetMemoryUtilizationPercentage=70",
    "uiIot.autoscaling.enabled=true",
    "uiIot.autoscaling.behavior.scaleDown.stabilizationWindowSeconds=300",
    "routeDelivery.pdb.minAvailable=50%",
    "routeDelivery.pdb.maxUnavailable=null",
    "keycloak.strategy.type=Recreate",
    "nats.updateStrategy.rollingUpdate.partition=0",
)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_scheduling_and_autoscaling_render_validates_strictly(render, kube_validate, version):
    docs = render(*SCHEDULING_AND_AUTOSCALING)
    assert {"HorizontalPodAutoscaler", "ServiceAccount"} <= {doc["kind"] for doc in docs}
    errors = [error for doc in docs for error in kube_validate(doc, version)]
    assert errors == []


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_strict_validation_rejects_an_unknown_field(default_renders, kube_validate, version):
    """Control: the validator really is strict, so the two tests above mean something."""
    deployment = copy.deepcopy(helm.workloads(default_renders[3])[0])
    helm.pod_spec(deployment)["containers"][0]["livenessProbe"]["periodSecond"] = 5
    assert any("periodSecond" in error for error in kube_validate(deployment, version))


@pytest.mark.parametrize("major", [3, 4])
def test_helm_lint_strict_passes(major):
    result = helm.run_helm(
        major, "lint", "--strict", str(helm.CHART_DIR), "--kube-version", helm.KUBE_VERSION
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
