"""The README cannot lie about the chart: its generated tables are up to date, every value is
documented where it is defined, and its probe-override examples, extracted from README.md and
rendered with the real Helm, change exactly the fields they name."""

from __future__ import annotations

import importlib.util
import re
import shlex

import yaml
from iot_tools import helm

README = helm.REPO_ROOT / "README.md"
VALUES = helm.CHART_DIR / "values.yaml"

# values key -> (workload kind, workload name, container name)
WORKLOADS = {
    "ingest": ("Deployment", "iot-ingest", "ingest"),
    "evaluator": ("Deployment", "iot-evaluator", "evaluator"),
    "uiIot": ("Deployment", "iot-ui-iot", "ui-iot"),
    "opsWorker": ("Deployment", "iot-ops-worker", "ops-worker"),
    "routeDelivery": ("Deployment", "iot-route-delivery", "route-delivery"),
    "keycloak": ("Deployment", "iot-keycloak", "keycloak"),
    "emqx": ("Deployment", "iot-emqx", "emqx"),
    "nats": ("StatefulSet", "iot-nats", "nats"),
    "postgresql": ("StatefulSet", "iot-postgresql", "postgresql"),
}


def _generator():
    path = helm.REPO_ROOT / "scripts" / "gen_values_table.py"
    spec = importlib.util.spec_from_file_location("gen_values_table", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _example(name: str) -> str:
    """The fenced code block that follows `<!-- example:<name> -->` in README.md."""
    match = re.search(
        rf"<!-- example:{name} -->\n```[a-z]*\n(?P<body>.*?)\n```", README.read_text(), re.S
    )
    assert match, f"README.md has no example:{name} block"
    return match.group("body")


def _expected_changes(overrides: dict, base_docs: list[dict], changes) -> dict:
    """What a nested {component: {probes: {kind: {field: value}}}} override must change."""
    base_leaves = changes([], base_docs)
    expected = {}
    for key, component in overrides.items():
        kind, workload, container = WORKLOADS[key]
        for probe_kind, fields in component["probes"].items():
            probe = (kind, workload, "spec", "template", "spec", "containers", container)
            probe = (*probe, f"{probe_kind}Probe")
            if fields.get("enabled") is False:
                expected |= {
                    path: (old, None)
                    for path, (_, old) in base_leaves.items()
                    if path[: len(probe)] == probe
                }
                continue
            for field, value in fields.items():
                (_, old) = base_leaves[(*probe, field)]
                expected[(*probe, field)] = (old, value)
    return expected


def _nest(assignments: dict[str, str]) -> dict:
    nested: dict = {}
    for dotted, raw in assignments.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return nested


def test_readme_generated_tables_are_up_to_date(default_renders):
    generator = _generator()
    current = README.read_text()
    assert generator.generated_readme(current, VALUES.read_text(), default_renders[3]) == current


def test_every_value_is_documented_right_above_its_key():
    docs, undocumented = _generator().documented_values(VALUES.read_text())
    assert undocumented == []
    assert len(docs) > 100


def test_readme_set_example_changes_exactly_what_it_names(base_docs, render, changes):
    words = shlex.split(_example("set").replace("\\\n", " "))
    assert words[:3] == ["helm", "upgrade", "--install"]
    assignments = dict(
        words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "--set"
    )
    assert assignments
    after = render(*(f"{k}={v}" for k, v in assignments.items()))
    assert changes(base_docs, after) == _expected_changes(_nest(assignments), base_docs, changes)


def test_readme_values_file_example_changes_exactly_what_it_names(
    base_docs, render, changes, tmp_path
):
    text = _example("values-file")
    values = tmp_path / "probe-overrides.yaml"
    values.write_text(text)
    after = render(values_files=(values,))
    expected = _expected_changes(yaml.safe_load(text), base_docs, changes)
    assert len(expected) >= 4
    assert changes(base_docs, after) == expected
