"""Generate the chart section's tables in README.md.

* the probe contract: every component's liveness/readiness/startup endpoint, port and timings,
  read from the chart as Helm renders it with its default values;
* the values table of the probe keys, and the table of the stream limits and service knobs
  (`nats.jetstream.streams.*`, `services.workerStallSeconds`, the services' `env` maps), from the
  `# -- description` comment right above each key in chart/values.yaml (helm-docs style).

Usage: python scripts/gen_values_table.py [--check]
  (no flag) rewrite the generated blocks of README.md in place;
  --check   exit 1 if README.md is not up to date (nothing is written).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import yaml
from iot_tools import helm

REPO_ROOT = Path(__file__).resolve().parents[1]
VALUES_FILE = REPO_ROOT / "chart" / "values.yaml"
README = REPO_ROOT / "README.md"

KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_-]*):(?: |$)")
DOC_START = re.compile(r"^ *# -- ?(?P<text>.*)$")
DOC_MORE = re.compile(r"^ *#(?: (?P<text>.*))?$")

# Workload name -> component label, in the order of the contract table.
COMPONENTS = {
    "iot-ingest": "ingest",
    "iot-evaluator": "evaluator",
    "iot-ui-iot": "ui-iot",
    "iot-ops-worker": "ops-worker",
    "iot-route-delivery": "route-delivery",
    "iot-keycloak": "keycloak",
    "iot-emqx": "emqx",
    "iot-nats": "nats",
    "iot-postgresql": "postgresql",
}
PROBE_KINDS = ("liveness", "readiness", "startup")
# Values keys of the five Python services (their `env` maps go into the knobs table).
SERVICE_KEYS = ("ingest", "evaluator", "uiIot", "opsWorker", "routeDelivery")


class ValueDoc(NamedTuple):
    path: str
    description: str
    line: int


def documented_values(text: str) -> tuple[list[ValueDoc], list[tuple[str, int]]]:
    """Every key of a values file with the `# --` comment right above it, and the keys that
    have none ((path, line) pairs)."""
    docs: list[ValueDoc] = []
    undocumented: list[tuple[str, int]] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if start := DOC_START.match(line):
            pending = [start.group("text").strip()]
            continue
        if pending is not None and (more := DOC_MORE.match(line)):
            pending.append((more.group("text") or "").strip())
            continue
        key = KEY_LINE.match(line)
        if not key:
            pending = None
            continue
        indent = len(key.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key.group("key")))
        path = ".".join(name for _, name in stack)
        if pending:
            docs.append(ValueDoc(path, " ".join(part for part in pending if part), number))
        else:
            undocumented.append((path, number))
        pending = None
    return docs, undocumented


def _lookup(data: dict, path: str):
    node = data
    for part in path.split("."):
        node = node[part]
    return node


def _is_leaf(value) -> bool:
    return not isinstance(value, dict) or not value


def _code(value) -> str:
    return f"`{json.dumps(value, separators=(', ', ': '))}`"


def _is_probe_key(path: str) -> bool:
    parts = path.split(".")
    return parts[0] == "probes" or (len(parts) > 1 and parts[1] == "probes")


def _is_limit_or_knob_key(path: str) -> bool:
    parts = path.split(".")
    return (
        path.startswith("nats.jetstream.streams.")
        or path == "services.workerStallSeconds"
        or (len(parts) > 2 and parts[0] in SERVICE_KEYS and parts[1] == "env")
    )


def values_table(values_text: str, selected: Callable[[str], bool] = _is_probe_key) -> str:
    """Markdown table of the selected keys (leaves) of values.yaml: key, default, description
    (by default the probe keys)."""
    data = yaml.safe_load(values_text)
    docs, _ = documented_values(values_text)
    rows = ["| key | default | description |", "|---|---|---|"]
    for doc in docs:
        value = _lookup(data, doc.path)
        if selected(doc.path) and _is_leaf(value):
            description = doc.description.replace("|", "\\|")
            rows.append(f"| `{doc.path}` | {_code(value)} | {description} |")
    return "\n".join(rows)


def _handler(probe: dict) -> tuple[str, str]:
    if "httpGet" in probe:
        return f"GET `{probe['httpGet']['path']}`", str(probe["httpGet"]["port"])
    if "tcpSocket" in probe:
        return "TCP connect", str(probe["tcpSocket"]["port"])
    if "grpc" in probe:
        return "gRPC health", str(probe["grpc"]["port"])
    return f"exec `{' '.join(probe['exec']['command'])}`", "—"


def contract_table(docs: list[dict]) -> str:
    """Markdown table of every workload's probes as rendered: endpoint, port and timings."""
    workloads = {w["metadata"]["name"]: w for w in helm.workloads(docs)}
    rows = [
        "| component | probe | handler | port | initialDelay | period | timeout | failures |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, component in COMPONENTS.items():
        container = helm.main_container(workloads[name])
        for kind in PROBE_KINDS:
            probe = container.get(f"{kind}Probe")
            if probe is None:
                rows.append(f"| {component} | {kind} | (disabled) | | | | | |")
                continue
            handler, port = _handler(probe)
            timings = [
                probe.get("initialDelaySeconds", 0),
                probe.get("periodSeconds", 10),
                probe.get("timeoutSeconds", 1),
                probe.get("failureThreshold", 3),
            ]
            seconds = " | ".join(f"{t} s" for t in timings[:3])
            rows.append(f"| {component} | {kind} | {handler} | {port} | {seconds} | {timings[3]} |")
    return "\n".join(rows)


def _replace_block(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- generated:{name}:begin -->", f"<!-- generated:{name}:end -->"
    if text.count(begin) != 1 or text.count(end) != 1:
        raise SystemExit(f"README.md needs exactly one {begin} ... {end} block")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def generated_readme(readme_text: str, values_text: str, docs: list[dict]) -> str:
    """README text with every generated block brought up to date."""
    text = _replace_block(readme_text, "probe-contract", contract_table(docs))
    text = _replace_block(text, "values-table", values_table(values_text))
    return _replace_block(
        text, "knobs-table", values_table(values_text, selected=_is_limit_or_knob_key)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is stale")
    args = parser.parse_args(argv)
    current = README.read_text()
    fresh = generated_readme(current, VALUES_FILE.read_text(), helm.render())
    if args.check:
        if fresh != current:
            print("README.md is stale: run python scripts/gen_values_table.py", file=sys.stderr)
            return 1
        return 0
    if fresh != current:
        README.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
