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
    "stream-max-bytes-not-a-quantity": (
        ["nats.jetstream.streams.telemetry.maxBytes=4GB"],
        ["/nats/jetstream/streams/telemetry/maxBytes", "'4GB' does not match pattern"],
    ),
    "stream-max-bytes-zero": (
        ["nats.jetstream.streams.routes.maxBytes=0"],
        ["/nats/jetstream/streams/routes/maxBytes", "minimum"],
    ),
    "stream-max-age-not-a-number": (
        ["nats.jetstream.streams.telemetry.maxAgeSeconds=7d"],
        ["/nats/jetstream/streams/telemetry/maxAgeSeconds", "want integer"],
    ),
    "stream-max-age-below-a-minute": (
        ["nats.jetstream.streams.routes.maxAgeSeconds=59"],
        ["/nats/jetstream/streams/routes/maxAgeSeconds", "minimum"],
    ),
    "typo-in-stream-name": (
        ["nats.jetstream.streams.telemetri.maxBytes=1Gi"],
        ["/nats/jetstream/streams", "'telemetri' not allowed"],
    ),
    "worker-stall-zero": (
        ["services.workerStallSeconds=0"],
        ["/services/workerStallSeconds", "minimum"],
    ),
    "worker-stall-above-an-hour": (
        ["services.workerStallSeconds=3601"],
        ["/services/workerStallSeconds", "maximum"],
    ),
    "worker-stall-not-a-number": (
        ["services.workerStallSeconds=2m"],
        ["/services/workerStallSeconds", "want integer"],
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
        ["emqx.probes.readiness.httpGet.port=dashbaord"],
        ['emqx.probes.readiness.httpGet.port "dashbaord"', "dashboard=18083"],
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
        ["emqx.terminationGracePeriodSeconds=8"],
        ["emqx.terminationGracePeriodSeconds (8) is too short: it must be at least 10"],
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
    "streams-exceed-the-file-store": (
        ["nats.jetstream.streams.telemetry.maxBytes=7Gi"],
        [
            "nats.jetstream.streams.telemetry.maxBytes 7Gi = 7516192768",
            "together 8589934592 bytes, but at most 7200000000 bytes",
            "lower nats.jetstream.streams.routes.maxBytes or nats.jetstream.streams.telemetry"
            ".maxBytes, or raise both nats.jetstream.storageSize and nats.jetstream.maxFileStore",
        ],
    ),
    "stream-max-bytes-zero-with-unit": (
        ["nats.jetstream.streams.telemetry.maxBytes=0Gi"],
        ["nats.jetstream.streams.telemetry.maxBytes is 0Gi", "set it above 0"],
    ),
    "ingest-buffer-over-half-the-memory-limit": (
        ["ingest.env.MAX_BUFFERED_BYTES=200000000"],
        [
            "ingest.env.MAX_BUFFERED_BYTES (200000000) exceeds half of "
            "ingest.resources.limits.memory (256Mi = 268435456 bytes, half = 134217728)",
            "lower ingest.env.MAX_BUFFERED_BYTES or raise ingest.resources.limits.memory",
        ],
    ),
    "env-shadows-a-stream-limit": (
        ["ingest.env.ROUTES_MAX_BYTES=1"],
        ["ingest.env.ROUTES_MAX_BYTES is set by the chart itself", "nats.jetstream.streams"],
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
