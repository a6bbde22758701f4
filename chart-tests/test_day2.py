"""Day-2 details of the chart: the Kubernetes versions it accepts (Chart.yaml kubeVersion)."""

from __future__ import annotations

import pytest
from iot_tools import helm
from iot_tools.kube import KUBE_VERSIONS

MAJORS = (3, 4)


@pytest.mark.parametrize("major", MAJORS)
def test_render_for_kubernetes_1_29_fails_with_helms_message(major):
    result = helm.template(major=major, kube_version="1.29.0")
    assert result.returncode != 0
    assert (
        "chart requires kubeVersion: >=1.30.0-0 which is incompatible with Kubernetes v1.29.0"
        in result.stderr
    )


@pytest.mark.parametrize("major", MAJORS)
@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_render_for_each_supported_kubernetes_validates_strictly(major, version, kube_validate):
    docs = helm.render(major=major, kube_version=version)
    errors = [error for doc in docs for error in kube_validate(doc, version)]
    assert errors == []
