"""Probe overrides change exactly what they name and nothing else (renders compared
structurally against the default render, both with the same fixed secrets)."""

from __future__ import annotations

import textwrap

import pytest

SERVICES = ("iot-ingest", "iot-evaluator", "iot-ui-iot", "iot-ops-worker", "iot-route-delivery")
SERVICE_CONTAINERS = {name: name.removeprefix("iot-") for name in SERVICES}
THIRD_PARTY = ("iot-keycloak", "iot-emqx", "iot-nats", "iot-postgresql")


def _probe_path(workload: str, container: str, field: str, *path: str) -> tuple:
    kind = "StatefulSet" if workload in ("iot-nats", "iot-postgresql") else "Deployment"
    return (kind, workload, "spec", "template", "spec", "containers", container, field, *path)


def test_one_field_via_set_changes_only_that_field(base_docs, render, changes):
    after = render("ingest.probes.readiness.periodSeconds=5")
    assert changes(base_docs, after) == {
        _probe_path("iot-ingest", "ingest", "readinessProbe", "periodSeconds"): (10, 5)
    }


def test_changing_the_handler_path_keeps_its_port(base_docs, render, changes):
    after = render("evaluator.probes.liveness.httpGet.path=/livez")
    assert changes(base_docs, after) == {
        _probe_path("iot-evaluator", "evaluator", "livenessProbe", "httpGet", "path"): (
            "/health",
            "/livez",
        )
    }


def test_exec_handler_replaces_the_http_handler_and_keeps_timings(base_docs, render, changes):
    after = render("ingest.probes.liveness.exec.command={cat,/tmp/alive}")
    probe = _probe_path("iot-ingest", "ingest", "livenessProbe")
    assert changes(base_docs, after) == {
        (*probe, "httpGet", "path"): ("/health", None),
        (*probe, "httpGet", "port"): (8080, None),
        (*probe, "exec", "command"): (None, ["cat", "/tmp/alive"]),
    }


def test_tcp_socket_handler_by_port_name_resolves_to_its_number(base_docs, render, changes):
    after = render("uiIot.probes.readiness.tcpSocket.port=health")
    probe = _probe_path("iot-ui-iot", "ui-iot", "readinessProbe")
    assert changes(base_docs, after) == {
        (*probe, "httpGet", "path"): ("/ready", None),
        (*probe, "httpGet", "port"): (8080, None),
        (*probe, "tcpSocket", "port"): (None, 8080),
    }


def test_swapping_a_third_party_handler_needs_the_chart_handler_nulled(base_docs, render, changes):
    after = render(
        "keycloak.probes.liveness.httpGet=null", "keycloak.probes.liveness.tcpSocket.port=http"
    )
    probe = _probe_path("iot-keycloak", "keycloak", "livenessProbe")
    assert changes(base_docs, after) == {
        (*probe, "httpGet", "path"): ("/health/live", None),
        (*probe, "httpGet", "port"): (9000, None),
        (*probe, "tcpSocket", "port"): (None, 8080),
    }


@pytest.mark.parametrize("kind", ["liveness", "readiness", "startup"])
def test_enabled_false_omits_exactly_that_probe(base_docs, render, changes, kind):
    field = f"{kind}Probe"
    after = render(f"routeDelivery.probes.{kind}.enabled=false")
    changed = changes(base_docs, after)
    prefix = _probe_path("iot-route-delivery", "route-delivery", field)
    assert changed
    assert all(path[: len(prefix)] == prefix and new is None for path, (_, new) in changed.items())
    # every field of that probe is gone, and only those
    base_probe = [
        path for path, _ in changes([], base_docs).items() if path[: len(prefix)] == prefix
    ]
    assert set(changed) == set(base_probe)


def test_enabled_false_on_a_global_default_omits_it_everywhere(render, probes_of):
    after = probes_of(render("probes.startup.enabled=false"))
    assert all("startup" not in probes for probes in after.values())
    assert all({"liveness", "readiness"} <= probes.keys() for probes in after.values())


def test_values_file_with_several_overrides_changes_exactly_those(
    base_docs, render, changes, tmp_path
):
    values = tmp_path / "overrides.yaml"
    values.write_text(
        textwrap.dedent("""\
        ingest:
          probes:
            readiness:
              periodSeconds: 5
              failureThreshold: 4
        opsWorker:
          probes:
            startup:
              failureThreshold: 60
        nats:
          probes:
            liveness:
              timeoutSeconds: 10
    """)
    )
    after = render(values_files=(values,))
    assert changes(base_docs, after) == {
        _probe_path("iot-ingest", "ingest", "readinessProbe", "periodSeconds"): (10, 5),
        _probe_path("iot-ingest", "ingest", "readinessProbe", "failureThreshold"): (2, 4),
        _probe_path("iot-ops-worker", "ops-worker", "startupProbe", "failureThreshold"): (30, 60),
        _probe_path("iot-nats", "nats", "livenessProbe", "timeoutSeconds"): (5, 10),
    }


def test_set_on_a_global_default_changes_every_workload_not_overriding_it(
    base_docs, render, changes
):
    after = render("probes.readiness.timeoutSeconds=4")
    expected = {
        _probe_path(
            name,
            SERVICE_CONTAINERS.get(name, name.removeprefix("iot-")),
            "readinessProbe",
            "timeoutSeconds",
        ): (3, 4)
        for name in (*SERVICES, *THIRD_PARTY)
    }
    # pg_isready's own timeout follows the probe's (-t timeoutSeconds - 1)
    command = _probe_path("iot-postgresql", "postgresql", "readinessProbe", "exec", "command")
    pg_isready = ["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-t"]
    expected[command] = ([*pg_isready, "2"], [*pg_isready, "3"])
    assert changes(base_docs, after) == expected


def test_global_default_does_not_override_a_component_override(base_docs, render, changes):
    """keycloak and nats set startup.failureThreshold themselves; the others follow the default."""
    after = render("probes.startup.failureThreshold=40")
    touched = {path[1] for path in changes(base_docs, after)}
    assert touched == {*SERVICES, "iot-emqx"}


def test_global_handler_change_reaches_only_workloads_using_the_default_handler(
    base_docs, render, changes
):
    after = render("probes.liveness.httpGet.path=/livez")
    touched = {path[1] for path in changes(base_docs, after)}
    assert touched == set(SERVICES)
