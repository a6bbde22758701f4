"""Probes come only from the probe library, and workloads only from shared helpers: no template
writes probe fields or a workload header by hand."""

from __future__ import annotations

import re

from iot_tools import helm

TEMPLATES = helm.CHART_DIR / "templates"
# Every template file, templates/tests/ (the `helm test` pods) included.
TEMPLATE_FILES = sorted(path for path in TEMPLATES.rglob("*") if path.is_file())
PROBE_FIELDS = re.compile(
    r"livenessProbe|readinessProbe|startupProbe|initialDelaySeconds|periodSeconds|failureThreshold"
)


def test_only_the_probe_library_writes_probe_fields():
    writers = {path.name for path in TEMPLATE_FILES if PROBE_FIELDS.search(path.read_text())}
    assert writers == {"_probes.tpl"}


def test_workload_kinds_are_written_only_by_the_shared_header():
    writers = {
        path.name
        for path in TEMPLATE_FILES
        # a top-level kind: an HPA's scaleTargetRef names a Deployment without being one
        if re.search(r"^kind: (Deployment|StatefulSet)", path.read_text(), re.M)
    }
    assert writers == set()
    assert 'define "iot.workload.header"' in (TEMPLATES / "_helpers.tpl").read_text()


def test_the_five_services_share_one_deployment_template():
    deployments = sorted(TEMPLATES.glob("*-deployment.yaml"))
    service_files = [p for p in deployments if "iot.services.manifest" in p.read_text()]
    assert len(service_files) == 5
    for path in service_files:
        # one line: an include of the shared helper with the service's values key
        assert path.read_text().count("\n") == 1
    assert (TEMPLATES / "_services.tpl").read_text().count('define "iot.services.manifest"') == 1
