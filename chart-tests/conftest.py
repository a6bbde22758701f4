"""Fixtures of the chart tests: the real `helm` binaries (iot_tools.helm), renders parsed once
per session, a structural diff of two renders, and offline Kubernetes schema validation.

Helpers are handed out as fixtures because pytest runs with --import-mode=importlib, where test
modules cannot import each other.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from iot_tools import helm

# Helm majors every render-level test runs under.
MAJORS = (3, 4)

# Explicit secrets: with them two renders differ only where their values differ (the chart
# generates random passwords otherwise, by design).
FIXED_SECRETS = (
    "postgresql.auth.password=pg-test-password-1",
    "keycloak.admin.password=kc-test-password-2",
    "emqx.auth.nodeCookie=emqx-test-cookie-3",
    "emqx.auth.dashboardPassword=emqx-test-password-4",
)

# Kubernetes versions the rendered objects must validate against: oldest supported and newest
# that kubernetes-validate ships.
KUBE_VERSIONS = ("1.30.0", "1.37.0")

PROBE_FIELDS = {
    "liveness": "livenessProbe",
    "readiness": "readinessProbe",
    "startup": "startupProbe",
}


@pytest.fixture(scope="session")
def fixed_secrets() -> tuple[str, ...]:
    return FIXED_SECRETS


@pytest.fixture(scope="session")
def default_renders() -> dict[int, list[dict]]:
    """The chart rendered with its default values only, once per Helm major."""
    return {major: helm.render(major=major) for major in MAJORS}


@pytest.fixture(scope="session")
def base_docs() -> list[dict]:
    """Default values plus the fixed secrets (Helm 3): the reference of the override diffs."""
    return helm.render(set_values=FIXED_SECRETS)


@pytest.fixture(scope="session")
def render() -> Callable[..., list[dict]]:
    """Render with the fixed secrets plus the given --set values / values files."""

    def _render(*set_values: str, values_files: tuple = (), major: int = 3) -> list[dict]:
        return helm.render(
            major=major, set_values=(*FIXED_SECRETS, *set_values), values_files=values_files
        )

    return _render


def _leaves(node: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list) and node and all(isinstance(item, dict) for item in node):
        # Lists of objects (containers, env, ports) are compared by their `name`.
        for index, item in enumerate(node):
            yield from _leaves(item, (*path, item.get("name", index)))
    else:
        yield path, node


def structural_changes(before: list[dict], after: list[dict]) -> dict[tuple, tuple[Any, Any]]:
    """Every leaf that differs between two renders: {(kind, name, *path): (before, after)};
    a missing leaf or document is None."""
    left = {key: dict(_leaves(doc)) for key, doc in helm.by_kind_and_name(before).items()}
    right = {key: dict(_leaves(doc)) for key, doc in helm.by_kind_and_name(after).items()}
    changes: dict[tuple, tuple[Any, Any]] = {}
    for key in left.keys() | right.keys():
        old, new = left.get(key, {}), right.get(key, {})
        for path in old.keys() | new.keys():
            if old.get(path) != new.get(path):
                changes[(*key, *path)] = (old.get(path), new.get(path))
    return changes


@pytest.fixture(scope="session")
def changes() -> Callable[[list[dict], list[dict]], dict[tuple, tuple[Any, Any]]]:
    return structural_changes


def container_probes(docs: list[dict]) -> dict[tuple[str, str], dict[str, dict]]:
    """{(workload name, container name): {probe kind: probe}} for every container of every
    workload (init containers carry no probes and are left out)."""
    found: dict[tuple[str, str], dict[str, dict]] = {}
    for workload in helm.workloads(docs):
        for container in helm.pod_spec(workload)["containers"]:
            found[(workload["metadata"]["name"], container["name"])] = {
                kind: container[field] for kind, field in PROBE_FIELDS.items() if field in container
            }
    return found


@pytest.fixture(scope="session")
def probes_of() -> Callable[[list[dict]], dict[tuple[str, str], dict[str, dict]]]:
    return container_probes


@functools.cache
def _kube_validator(version: str, kind: str, api_version: str):
    """A strict validator of one kind from kubernetes-validate's bundled schemas (loaded once)."""
    import re

    import jsonschema
    import referencing
    from kubernetes_validate import utils

    directory = f"kubernetes-json-schema/v{version}-local-strict"
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = utils.schema_contents(f"{directory}/{kind.lower()}-{group_version}.json", version)
    definitions = _kube_definitions(version)
    registry = referencing.Registry().with_resources(
        [
            (schema.get("$id", ""), referencing.Resource.from_contents(schema)),
            (definitions["$id"], referencing.Resource.from_contents(definitions)),
        ]
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


@functools.cache
def _kube_definitions(version: str) -> dict:
    from kubernetes_validate import utils

    return utils.schema_contents(
        f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version
    )


def kube_errors(doc: dict, version: str) -> list[str]:
    """Strict-mode schema errors of one object against one Kubernetes version (unknown fields
    are errors)."""
    validator = _kube_validator(version, doc["kind"], doc["apiVersion"])
    return [
        f"{doc['kind']}/{doc['metadata']['name']} at {'.'.join(map(str, error.path))}: "
        f"{error.message}"
        for error in validator.iter_errors(doc)
    ]


@pytest.fixture(scope="session")
def kube_validate() -> Callable[[dict, str], list[str]]:
    return kube_errors
