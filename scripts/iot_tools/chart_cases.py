"""Values sets several chart test modules render (test modules cannot import each other under
pytest's importlib mode, so the sets live here)."""

from __future__ import annotations

# The logins an external database must provide: one role per service (its Secret holds
# username and password) and Keycloak's own (see README "Database roles").
EXTERNAL_DATABASE_LOGINS = (
    "externalDatabase.roles.ingest=db-ingest",
    "externalDatabase.roles.evaluator=db-evaluator",
    "externalDatabase.roles.uiIot=db-ui",
    "externalDatabase.roles.opsWorker=db-ops",
    "externalDatabase.roles.routeDelivery=db-route-delivery",
    "keycloak.database.username=keycloak",
    "keycloak.database.existingSecret=kc-db",
)

# A render that switches on the templates' other branches: external database with an admin
# login, existing Secrets, no MQTT bridge, every probe handler kind, extra env.
VARIANT = (
    "postgresql.enabled=false",
    "externalDatabase.url=postgresql://iot@db.example:5432/iot",
    "externalDatabase.existingSecret=iot-db",
    *EXTERNAL_DATABASE_LOGINS,
    "externalDatabase.admin.existingSecret=db-admin",
    "keycloak.database.host=kc-db.example",
    "keycloak.admin.existingSecret=kc-admin",
    "keycloak.hostname=id.example.com",
    "emqx.auth.existingSecret=emqx-secrets",
    "nats.mqtt.enabled=false",
    "emqx.bridgeToNats.enabled=false",
    "ingest.probes.liveness.exec.command={cat,/tmp/alive}",
    "uiIot.probes.readiness.tcpSocket.port=health",
    "evaluator.probes.startup.grpc.port=8080",
    "opsWorker.probes.startup.enabled=false",
    "routeDelivery.extraEnv[0].name=EXTRA",
    "routeDelivery.extraEnv[0].value=one",
)
