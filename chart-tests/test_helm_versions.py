"""The chart renders byte-identically under Helm 3 and Helm 4.

Generated passwords are random by design (every render makes new ones), so the comparison runs
with explicit passwords given; the default renders are compared with their Secrets' data left
out.
"""

from __future__ import annotations

import copy

from iot_tools import helm


def _template(major: int, set_values: tuple[str, ...]) -> str:
    result = helm.template(major=major, set_values=set_values)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_helm3_and_helm4_render_byte_identically_with_explicit_passwords(fixed_secrets):
    helm3 = _template(3, fixed_secrets)
    assert helm3 == _template(4, fixed_secrets)
    assert "kind: Deployment" in helm3


def test_helm3_and_helm4_render_overrides_byte_identically(fixed_secrets):
    overrides = (
        *fixed_secrets,
        "ingest.probes.liveness.exec.command={cat,/tmp/alive}",
        "opsWorker.probes.startup.enabled=false",
        "evaluator.replicas=3",
        "postgresql.auth.existingSecret=db",
    )
    assert _template(3, overrides) == _template(4, overrides)


def test_helm3_and_helm4_default_renders_differ_only_in_generated_secrets(default_renders):
    def without_secret_data(docs: list[dict]) -> list[dict]:
        # the Secrets' checksums (test_checksums) hash the generated passwords too
        docs = copy.deepcopy(docs)
        for workload in helm.workloads(docs):
            annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
            for key in annotations:
                if key.startswith("checksum/") and key.endswith("-secret"):
                    annotations[key] = "generated"
        return [
            doc if doc["kind"] != "Secret" else {**doc, "data": sorted(doc["data"])} for doc in docs
        ]

    assert without_secret_data(default_renders[3]) == without_secret_data(default_renders[4])
