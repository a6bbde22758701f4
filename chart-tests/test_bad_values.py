"""Bad values fail the render with a non-zero exit and a message naming the field: the schema
(typos, types, ranges) and the chart's guards (`fail`), under Helm 3 and Helm 4."""

from __future__ import annotations

import pytest
from iot_tools import helm

# id -> (--set values, texts the error must contain: the field, and for guards what to change)
CASES = {
    # values-schema.json: unknown keys, wrong types, out-of-range numbers
    "typo-in-probe-field": (
        ["ingest.probes.readiness.periodSecond=5"],
        ["/ingest/probes/readiness", "'periodSecond' not allowed"],
    ),
    "typo-in-probe-kind": (
        ["ingest.probes.liveliness.periodSeconds=5"],
        ["/ingest/probes", "'liveliness' not allowed"],
    ),
    "typo-in-handler-field": (
        ["ingest.probes.liveness.httpGet.paht=/x"],
        ["/ingest/probes/liveness/httpGet", "'paht' not allowed"],
    ),
    "typo-in-component": (["ingset.replicas=2"], ["'ingset' not allowed"]),
    "period-not-a-number": (
        ["ingest.probes.readiness.periodSeconds=abc"],
        ["/ingest/probes/readiness/periodSeconds", "want integer"],
    ),
    "enabled-not-a-boolean": (
        ["uiIot.probes.startup.enabled=maybe"],
        ["/uiIot/probes/startup/enabled", "want boolean"],
    ),
    "exec-command-not-a-list": (
        ["ingest.probes.liveness.exec.command=cat"],
        ["/ingest/probes/liveness/exec/command", "want array"],
    ),
    "negative-initial-delay": (
        ["probes.liveness.initialDelaySeconds=-1"],
        ["/probes/liveness/initialDelaySeconds", "minimum"],
    ),
    "zero-period": (
        ["probes.readiness.periodSeconds=0"],
        ["/probes/readiness/periodSeconds", "minimum"],
    ),
    "zero-failure-threshold": (
        ["emqx.probes.startup.failureThreshold=0"],
        ["/emqx/probes/startup/failureThreshold", "minimum"],
    ),
    "zero-timeout": (
        ["nats.probes.readiness.timeoutSeconds=0"],
        ["/nats/probes/readiness/timeoutSeconds", "minimum"],
    ),
    "port-out-of-range": (
        ["ingest.probes.liveness.httpGet.port=70000"],
        ["/ingest/probes/liveness/httpGet/port", "maximum"],
    ),
    "negative-replicas": (["evaluator.replicas=-1"], ["/evaluator/replicas", "minimum"]),
    "extra-env-value-not-a-string": (
        ["routeDelivery.extraEnv[0].name=RETRIES", "routeDelivery.extraEnv[0].value=3"],
        ["/routeDelivery/extraEnv/0/value", "want string"],
    ),
    # chart guards (fail): each names component + probe + field and what to change
    "liveness-success-threshold": (
        ["ingest.probes.liveness.successThreshold=2"],
        ["ingest.probes.liveness.successThreshold is 2", "set it to 1"],
    ),
    "startup-success-threshold": (
        ["keycloak.probes.startup.successThreshold=3"],
        ["keycloak.probes.startup.successThreshold is 3", "set it to 1"],
    ),
    "global-liveness-success-threshold": (
        ["probes.liveness.successThreshold=2"],
        [".probes.liveness.successThreshold is 2", "set it to 1"],
    ),
    "timeout-not-below-period": (
        ["ingest.probes.readiness.timeoutSeconds=10"],
        [
            "ingest.probes.readiness.timeoutSeconds (10) must be below periodSeconds (10)",
            "lower ingest.probes.readiness.timeoutSeconds",
        ],
    ),
    "liveness-more-aggressive-than-readiness": (
        [
            "evaluator.probes.liveness.periodSeconds=15",
            "evaluator.probes.liveness.failureThreshold=1",
        ],
        [
            "evaluator.probes.liveness periodSeconds x failureThreshold (15 s)",
            "evaluator.probes.readiness's (20 s)",
            "raise liveness periodSeconds or failureThreshold",
        ],
    ),
    "readiness-with-termination-grace": (
        ["uiIot.probes.readiness.terminationGracePeriodSeconds=10"],
        ["uiIot.probes.readiness.terminationGracePeriodSeconds is set", "remove it"],
    ),
    "unknown-named-port": (
        ["ingest.probes.readiness.httpGet.port=metrics"],
        [
            'ingest.probes.readiness.httpGet.port "metrics" is not a port the container declares',
            "health=8080",
        ],
    ),
    "unknown-named-port-third-party": (
        ["emqx.probes.liveness.httpGet.port=dashbaord"],
        ['emqx.probes.liveness.httpGet.port "dashbaord"', "dashboard=18083"],
    ),
    "two-handlers": (
        ["keycloak.probes.liveness.exec.command={cat,/tmp/alive}"],
        [
            "keycloak.probes.liveness names 2 handlers (exec, httpGet)",
            "--set keycloak.probes.liveness.httpGet=null",
        ],
    ),
    "grace-shorter-than-drain": (
        ["services.terminationGracePeriodSeconds=20"],
        ["services.terminationGracePeriodSeconds (20) is too short: it must be at least 25"],
    ),
    "grace-shorter-than-prestop": (
        ["nats.terminationGracePeriodSeconds=8"],
        ["nats.terminationGracePeriodSeconds (8) is too short: it must be at least 10"],
    ),
    "external-database-without-secret": (
        [
            "postgresql.enabled=false",
            "externalDatabase.host=db.example",
            "externalDatabase.username=iot",
            "externalDatabase.database=iot",
        ],
        ["externalDatabase.existingSecret is empty"],
    ),
    "external-database-url-with-password": (
        [
            "postgresql.enabled=false",
            "externalDatabase.url=postgresql://iot:hunter2@db/iot",
            "externalDatabase.existingSecret=db",
        ],
        ["externalDatabase.url carries a password"],
    ),
    "bridge-without-nats-mqtt": (
        ["nats.mqtt.enabled=false"],
        ["emqx.bridgeToNats.enabled needs NATS's MQTT listener", "emqx.bridgeToNats.enabled=false"],
    ),
}


@pytest.mark.parametrize("major", [3, 4])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_values_fail_naming_the_field(case, major):
    set_values, expected = CASES[case]
    result = helm.template(major=major, set_values=tuple(set_values))
    assert result.returncode != 0, f"{case} rendered: {result.stdout[:300]}"
    assert "Error:" in result.stderr
    for text in expected:
        assert text in result.stderr, f"{case}: {text!r} not in:\n{result.stderr}"
