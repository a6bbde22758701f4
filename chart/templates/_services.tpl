{{/*
The one workload helper of the five Python services (templates/services.yaml ranges over them).
*/}}

{{/*
The five services: values key, component label, Python module, whether they use NATS, and the
JetStream streams they create (their limits are rendered into them, see _streams.tpl).
*/}}
{{- define "iot.services.catalog" -}}
- {key: ingest, component: ingest, module: services.ingest_iot, nats: true, natsRole: ingest, streams: [telemetry, routes]}
- {key: evaluator, component: evaluator, module: services.evaluator_iot, nats: false, streams: []}
- {key: uiIot, component: ui-iot, module: services.ui_iot, nats: false, streams: []}
- {key: opsWorker, component: ops-worker, module: services.ops_worker, nats: false, streams: []}
- {key: routeDelivery, component: route-delivery, module: services.route_delivery, nats: true, natsRole: routeDelivery, streams: [routes]}
{{- end -}}

{{/* The container port every service serves /health and /ready on. */}}
{{- define "iot.services.healthPort" -}}8080{{- end -}}

{{/* Environment of every service process and of its `migrate` init container. Args: root. */}}
{{- define "iot.services.baseEnv" -}}
{{ include "iot.database.env" . }}
{{- include "iot.database.tlsEnv" . }}
- name: LOG_LEVEL
  value: {{ .root.Values.services.logLevel | quote }}
{{- end -}}

{{/*
The environment of one service's main container that the chart derives from its own values
(everything but `<key>.env` and `<key>.extraEnv`). Args: root, entry (catalog entry), values.
*/}}
{{- define "iot.services.managedEnv" -}}
{{- $svc := .root.Values.services -}}
{{ include "iot.services.baseEnv" . }}
- name: HEALTH_PORT
  value: {{ include "iot.services.healthPort" . | quote }}
- name: DRAIN_DELAY_SECONDS
  value: {{ $svc.drainDelaySeconds | quote }}
- name: SHUTDOWN_TIMEOUT_SECONDS
  value: {{ $svc.shutdownTimeoutSeconds | quote }}
- name: WORKER_STALL_SECONDS
  value: {{ $svc.workerStallSeconds | quote }}
{{- if .entry.nats }}
{{ include "iot.nats.env" (dict "root" .root "role" .entry.natsRole) }}
{{- end }}
{{- with .entry.streams }}
{{- include "iot.streams.env" (dict "root" $.root "streams" .) }}
{{- end }}
{{- if eq .entry.key "uiIot" }}
{{- include "iot.auth.uiEnv" . }}
{{- end }}
{{- if eq .entry.key "routeDelivery" }}
{{- include "iot.webhooks.env" . }}
{{- end }}
{{- end -}}

{{/* Values paths of the chart-derived variables a user would otherwise try to set through `env`. */}}
{{- define "iot.services.envSources" -}}
{{- dict "DRAIN_DELAY_SECONDS" "services.drainDelaySeconds" "SHUTDOWN_TIMEOUT_SECONDS" "services.shutdownTimeoutSeconds" "WORKER_STALL_SECONDS" "services.workerStallSeconds" "LOG_LEVEL" "services.logLevel" "NATS_URL" "nats.enabled or externalNats.url" "NATS_USER" "externalNats.auth.existingSecret" "NATS_PASSWORD" "externalNats.auth.existingSecret" "NATS_TLS_CA_FILE" "externalNats.tls.caSecret" "DATABASE_URL" "postgresql.auth or externalDatabase" "PGUSER" "postgresql.roles or externalDatabase.roles" "PGPASSWORD" "postgresql.roles or externalDatabase.roles" "PGSSLMODE" "externalDatabase.sslmode" "PGSSLROOTCERT" "externalDatabase.tls.caSecret" "TELEMETRY_MAX_BYTES" "nats.jetstream.streams.telemetry.maxBytes" "TELEMETRY_MAX_AGE_SECONDS" "nats.jetstream.streams.telemetry.maxAgeSeconds" "ROUTES_MAX_BYTES" "nats.jetstream.streams.routes.maxBytes" "ROUTES_MAX_AGE_SECONDS" "nats.jetstream.streams.routes.maxAgeSeconds" "AUTH_ENABLED" "uiIot.auth.enabled" "AUTH_ISSUER_URL" "uiIot.auth.issuerUrl" "AUTH_AUDIENCE" "uiIot.auth.audience" "AUTH_CLIENT_ID" "uiIot.auth.clientId" "AUTH_JWKS_URL" "uiIot.auth.jwksUrl" "AUTH_LEEWAY_SECONDS" "uiIot.auth.leewaySeconds" "WEBHOOK_ALLOW_CIDRS" "routeDelivery.webhooks.allowCidrs" "WEBHOOK_DENY_CIDRS" "routeDelivery.webhooks.denyCidrs" "WEBHOOK_ALLOW_HOSTS" "routeDelivery.webhooks.allowHosts" | toJson -}}
{{- end -}}

{{/*
Fails when `<key>.env` names a variable the chart already sets: the container would carry it
twice, and a stream limit set that way would bypass the capacity guard. Args: key, env, managed
(the chart-derived env entries).
*/}}
{{- define "iot.guard.envShadow" -}}
{{- $sources := include "iot.services.envSources" . | fromJson -}}
{{- range .managed -}}
{{- if hasKey ($.env | default dict) .name -}}
{{- fail (printf "%s.env.%s is set by the chart itself: remove it from %s.env and set %s instead" $.key .name $.key (get $sources .name | default "nothing (the chart derives it)")) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Fails when ingest's in-memory telemetry buffer (MAX_BUFFERED_BYTES, the code's default when
unset) exceeds half of its memory limit: the rest of the process (asyncpg, NATS client, Python
itself) needs the other half. Args: values (ingest's values), default (the code's default).
*/}}
{{- define "iot.guard.ingestBuffer" -}}
{{- $raw := toString (get (.values.env | default dict) "MAX_BUFFERED_BYTES" | default .default) -}}
{{- if not (regexMatch "^[0-9]+$" $raw) -}}
{{- fail (printf "ingest.env.MAX_BUFFERED_BYTES %q must be a whole number of bytes (e.g. 33554432 for 32 MiB)" $raw) -}}
{{- end -}}
{{- $buffered := atoi $raw | int64 -}}
{{- $memory := .values.resources.limits.memory -}}
{{- $limit := include "iot.quantity.bytes" (dict "quantity" $memory "where" "ingest.resources.limits.memory") | int64 -}}
{{- if gt $buffered (div $limit 2) -}}
{{- fail (printf "ingest.env.MAX_BUFFERED_BYTES (%d) exceeds half of ingest.resources.limits.memory (%v = %d bytes, half = %d): lower ingest.env.MAX_BUFFERED_BYTES or raise ingest.resources.limits.memory" $buffered $memory $limit (div $limit 2)) -}}
{{- end -}}
{{- end -}}

{{/* Environment of one service's main container. Args: root, entry (catalog entry), values. */}}
{{- define "iot.services.env" -}}
{{- $managed := include "iot.services.managedEnv" . -}}
{{- include "iot.guard.envShadow" (dict "key" .entry.key "env" .values.env "managed" ($managed | fromYamlArray)) -}}
{{- if eq .entry.key "ingest" -}}
{{- include "iot.guard.ingestBuffer" (dict "values" .values "default" "33554432") -}}
{{- end -}}
{{ $managed }}
{{- range $name, $value := .values.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with .values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
One object of one service: its Deployment, its PodDisruptionBudget (only with more than one
replica), its HorizontalPodAutoscaler (only ingest, uiIot and routeDelivery, when on), or its Service, Ingress and HTTPRoute (only uiIot has them: nothing outside the other
pods talks to them).
Every object has a template file of its own (Helm 4 keeps a blank line inside multi-document
template files). Args: root, key (values key), object (kind).
*/}}
{{- define "iot.services.manifest" -}}
{{- $root := .root -}}
{{- $key := .key -}}
{{- $entry := dict -}}
{{- range include "iot.services.catalog" . | fromYamlArray -}}
{{- if eq .key $key }}{{ $entry = . }}{{ end -}}
{{- end -}}
{{- $values := index $root.Values $key -}}
{{- if $values.enabled -}}
{{- $svc := $root.Values.services -}}
{{- $image := include "iot.image" (dict "root" $root "image" $values.image "fallback" $svc.image "where" (printf "%s.image" $key)) | fromJson -}}
{{- $ctx := dict "root" $root "component" $entry.component "version" $image.version -}}
{{- $ports := list (dict "name" "health" "containerPort" (include "iot.services.healthPort" . | int) "protocol" "TCP") -}}
{{- $margin := include "iot.graceMargin" . | int -}}
{{- include "iot.guard.gracePeriod" (dict "where" "services.terminationGracePeriodSeconds" "grace" $svc.terminationGracePeriodSeconds "needed" (add $svc.drainDelaySeconds $svc.shutdownTimeoutSeconds $margin) "why" (printf "services.drainDelaySeconds + services.shutdownTimeoutSeconds + %d s margin" $margin)) -}}
{{- if eq .object "Deployment" }}
{{ include "iot.workload.header" (merge (dict "kind" "Deployment" "replicas" $values.replicas "key" $key "values" $values "annotations" (include "iot.checksums" (dict "root" $root "objects" (concat (list (dict "name" "postgresql-secret" "template" "iot.postgresql.manifest" "object" "Secret") (dict "name" "postgresql-roles-secret" "template" "iot.postgresql.manifest" "object" "RolesSecret")) (ternary (list (dict "name" "nats-secret" "template" "iot.nats.manifest" "object" "Secret")) list $entry.nats))) | fromJson)) $ctx) }}
    spec:
      {{- include "iot.pod.fields" (merge (dict "key" $key "values" $values "maxReplicas" (include "iot.autoscaling.maxReplicas" (dict "values" $values)) "grace" $svc.terminationGracePeriodSeconds "securityContext" $svc.securityContext) $ctx) | nindent 6 }}
      {{- $streams := and $entry.nats (not (include "iot.diagnostic.enabled" $ctx)) }}
      {{- if or $streams (and $svc.migrate.enabled (not (include "iot.diagnostic.enabled" $ctx))) }}
      initContainers:
        {{- if $streams }}
        {{- include "iot.services.streamsInit" (dict "root" $root "values" $values "image" $image) | nindent 8 }}
        {{- end }}
        {{- if and $svc.migrate.enabled (not (include "iot.diagnostic.enabled" $ctx)) }}
        - name: migrate
          {{- include "iot.imageFields" $image | nindent 10 }}
          command: ["python", "-m", "services.migrate"]
          env:
            {{- include "iot.services.baseEnv" (merge (dict "migrate" true) .) | nindent 12 }}
            - name: MIGRATE_WAIT_SECONDS
              value: {{ $svc.migrate.waitSeconds | quote }}
          {{- include "iot.securityContext.container" (dict "root" $root "values" $values "base" $svc.securityContext) | nindent 10 }}
          resources:
            {{- toYaml $svc.migrate.resources | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- with include "iot.external.volumeMounts" (dict "root" $root "nats" false) | fromYamlArray }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
        {{- end }}
      {{- end }}
      containers:
        - name: {{ $entry.component }}
          {{- include "iot.imageFields" $image | nindent 10 }}
          {{- include "iot.diagnostic.process" (dict "root" $root "command" (list "python" "-m" $entry.module)) | nindent 10 }}
          ports:
            {{- toYaml $ports | nindent 12 }}
          env:
            {{- include "iot.services.env" (dict "root" $root "entry" $entry "values" $values) | nindent 12 }}
          {{- with include "iot.probes.render" (dict "root" $root "key" $key "probes" $values.probes "ports" $ports) }}
          {{- . | nindent 10 }}
          {{- end }}
          {{- include "iot.securityContext.container" (dict "root" $root "values" $values "base" $svc.securityContext) | nindent 10 }}
          resources:
            {{- toYaml $values.resources | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- with include "iot.external.volumeMounts" (dict "root" $root "nats" $entry.nats) | fromYamlArray }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- with include "iot.external.volumes" (dict "root" $root "nats" $entry.nats) | fromYamlArray }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- else if eq .object "PodDisruptionBudget" }}
{{- include "iot.pdb" (merge (dict "key" $key "values" $values) $ctx) }}
{{- else if eq .object "HorizontalPodAutoscaler" }}
{{- include "iot.autoscaling.hpa" (merge (dict "key" $key "values" $values) $ctx) }}
{{- else if and (eq .object "Service") $values.service }}
{{- include "iot.service" (merge (dict "ports" (list (dict "name" "http" "port" $values.service.port "targetPort" "health")) "service" $values.service "key" (printf "%s.service" $key)) $ctx) }}
{{- else if and (eq .object "Ingress") $values.ingress }}
{{- include "iot.exposure.ingress" (merge (dict "key" $key "ingress" $values.ingress "port" $values.service.port "path" "/" "pathKey" "") $ctx) }}
{{- else if and (eq .object "HTTPRoute") $values.httpRoute }}
{{- include "iot.exposure.httpRoute" (merge (dict "key" $key "httpRoute" $values.httpRoute "port" $values.service.port "path" "/" "pathKey" "") $ctx) }}
{{- end }}
{{- end -}}
{{- end -}}

{{/*
The `streams` init container of the pods that use NATS: `python -m services.migrate.nats`, logged
in as the NATS user `owner` (the only one allowed to manage streams), creates the JetStream streams
or brings their limits to nats.jetstream.streams, before the service binds its consumer. It runs
whatever services.migrate.enabled says (that switch is about the database schema), and not in
diagnosticMode. Args: root, values (the service's), image.
*/}}
{{- define "iot.services.streamsInit" -}}
{{- $svc := .root.Values.services -}}
- name: streams
  {{- include "iot.imageFields" .image | nindent 2 }}
  command: ["python", "-m", "services.migrate.nats"]
  env:
    {{- include "iot.nats.env" (dict "root" .root "role" "owner") | trim | nindent 4 }}
    {{- include "iot.streams.env" (dict "root" .root "streams" (list "telemetry" "routes")) | trim | nindent 4 }}
    - name: MIGRATE_WAIT_SECONDS
      value: {{ $svc.migrate.waitSeconds | quote }}
    - name: LOG_LEVEL
      value: {{ $svc.logLevel | quote }}
  {{- include "iot.securityContext.container" (dict "root" .root "values" .values "base" $svc.securityContext) | nindent 2 }}
  resources:
    {{- toYaml $svc.migrate.resources | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    {{- with include "iot.external.volumeMounts" (dict "root" .root "nats" true "database" false) | fromYamlArray }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}
