"""Fixtures of the chart tests: the real `helm` binaries (iot_tools.helm), renders parsed once
per session, a structural diff of two renders, and offline Kubernetes schema validation
(iot_tools.kube).

Helpers are handed out as fixtures because pytest runs with --import-mode=importlib, where test
modules cannot import each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from iot_tools import helm, images
from iot_tools.apiserver import ApiServer
from iot_tools.cluster import Cluster
from iot_tools.kube import kube_errors

# Helm majors every render-level test runs under.
MAJORS = (3, 4)

# Explicit secrets: with them two renders differ only where their values differ (the chart
# generates random passwords otherwise, by design).
FIXED_SECRETS = (
    "postgresql.auth.password=pg-test-password-1",
    "keycloak.admin.password=kc-test-password-2",
    "emqx.auth.nodeCookie=emqx-test-cookie-3",
    "emqx.auth.dashboardPassword=emqx-test-password-4",
    "nats.auth.passwords.owner=nats-owner-test-5",
    "nats.auth.passwords.ingest=nats-ingest-test-6",
    "nats.auth.passwords.routeDelivery=nats-delivery-test-7",
    "nats.auth.passwords.emqxBridge=nats-bridge-test-8",
    *(f"postgresql.roles.passwords.{key}=pg-{key.lower()}-test-9"
      for key in ("owner", "ingest", "evaluator", "uiIot", "opsWorker", "routeDelivery",
                  "keycloak")),
)

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


@pytest.fixture(scope="session")
def kube_validate() -> Callable[[dict, str], list[str]]:
    return kube_errors


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A real kube-apiserver + etcd on loopback (iot_tools.apiserver), started on first use and
    stopped, with nothing left running, at the end of the session."""
    server = ApiServer(tmp_path_factory.mktemp("apiserver")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real single-node Kubernetes (iot_tools.cluster) with every image iot_tools.images
    builds imported, started on first use in a tmp dir; at the end of the session it is taken
    down and must leave nothing behind."""
    built = images.build_all()
    running = Cluster(tmp_path_factory.mktemp("cluster")).up(built, timeout=420)
    try:
        yield running
    finally:
        left = running.down()
        assert not left, f"the cluster left behind: {left}"

