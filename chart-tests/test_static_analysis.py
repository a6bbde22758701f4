"""Static analysis of the default render with the pinned kube-score and checkov
(scripts/bootstrap-tools.sh): kube-score reports nothing from its probe checks, and checkov
reports exactly the findings that chart/README.md lists under "Static analysis", each fixed or
justified there (a new finding fails until it is fixed or listed with its reason)."""

from __future__ import annotations

import json
import re
from collections import defaultdict

import pytest
from iot_tools import helm
from iot_tools.tools import run_tool

# kube-score's checks about probes (`kube-score list`): readiness/liveness present and safe,
# and liveness not the same check as readiness.
KUBE_SCORE_PROBE_CHECKS = ("pod-probes", "pod-probes-identical")
CHART_README = helm.CHART_DIR / "README.md"
# The objects column of a finding that concerns every object of the render.
EVERY_OBJECT = "every object"


def _manifest(*set_values: str) -> str:
    result = helm.template(set_values=set_values)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _kube_score_findings(manifest: str) -> dict[str, set[str]]:
    """{check id: {object}} of every check kube-score does not grade OK (10)."""
    result = run_tool("kube-score", "score", "-", "--output-format", "json", stdin=manifest)
    assert result.returncode in (0, 1), result.stderr  # 1: some check has findings
    findings: dict[str, set[str]] = defaultdict(set)
    for scored in json.loads(result.stdout):
        for check in scored["checks"]:
            if not check["skipped"] and check["grade"] < 10:
                findings[check["check"]["id"]].add(scored["object_name"])
    return findings


def test_kube_score_still_has_the_probe_checks():
    """A renamed or dropped check would make the test below pass vacuously."""
    result = run_tool("kube-score", "list")
    assert result.returncode == 0, result.stderr
    listed = {line.split(",", 1)[0] for line in result.stdout.splitlines()}
    assert set(KUBE_SCORE_PROBE_CHECKS) <= listed


def test_kube_score_finds_no_probe_issue_in_the_default_render():
    findings = _kube_score_findings(_manifest())
    assert {check: findings[check] for check in KUBE_SCORE_PROBE_CHECKS if check in findings} == {}


def test_kube_score_flags_a_liveness_probe_identical_to_readiness():
    """Control: with EMQX's liveness made the same request as its readiness (as it was before),
    kube-score reports it, so the test above means something."""
    findings = _kube_score_findings(_manifest(
        "emqx.probes.liveness.tcpSocket=null",
        "emqx.probes.liveness.httpGet.path=/api/v5/status",
        "emqx.probes.liveness.httpGet.port=dashboard",
    ))
    assert any("iot-emqx" in name for name in findings["pod-probes-identical"])


def _object_name(resource: str) -> str:
    """checkov's resource id (`Kind.namespace.name[.labels...]`) -> the object's name."""
    return resource.split(".", 2)[2].split(".", 1)[0]


@pytest.fixture(scope="module")
def checkov_findings(tmp_path_factory) -> dict[str, set[str]]:
    """{check id: {object name}} of checkov's failed checks on the default render."""
    directory = tmp_path_factory.mktemp("checkov")
    (directory / "render.yaml").write_text(_manifest())
    result = run_tool(
        "checkov", "--file", str(directory / "render.yaml"), "--framework", "kubernetes",
        "--output", "json", "--quiet", "--compact", "--skip-download", timeout=600,
    )
    assert result.returncode in (0, 1), result.stderr  # 1: some check failed
    report = json.loads(result.stdout)
    assert report["summary"]["parsing_errors"] == 0
    findings: dict[str, set[str]] = defaultdict(set)
    for failed in report["results"]["failed_checks"]:
        findings[failed["check_id"]].add(_object_name(failed["resource"]))
    return findings


def _listed_findings() -> dict[str, str]:
    """{check id: objects cell} of the table under "## Static analysis" in chart/README.md."""
    section = CHART_README.read_text().split("## Static analysis", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(CKV2?_K8S_\d+)` \|[^|]*\| ([^|]*) \|", section, re.M)
    return {check: objects.strip() for check, objects in rows}


def _row_objects(names: set[str]) -> str:
    return ", ".join(f"`{name}`" for name in sorted(names))


def test_checkov_findings_are_the_ones_the_chart_readme_lists(checkov_findings):
    listed = _listed_findings()
    assert listed, "chart/README.md has no checkov table under ## Static analysis"
    expected = {
        check: EVERY_OBJECT if listed.get(check) == EVERY_OBJECT else _row_objects(names)
        for check, names in checkov_findings.items()
    }
    missing = {check: cell for check, cell in expected.items() if listed.get(check) != cell}
    stale = sorted(listed.keys() - expected.keys())
    assert not missing and not stale, (
        "checkov's findings differ from chart/README.md (Static analysis; edit "
        "chart/README.md.gotmpl, then `make chart-readme`). Fix these or list them with their "
        f"reason: {missing}; no longer found: {stale}"
    )
