{{/*
In-chart PostgreSQL: Secret + init ConfigMap + StatefulSet with a PVC + Service.
Renders the one object named by `object` (Helm 4 keeps a blank line inside multi-document
template files, so every object has a template file of its own). Args: root, object.
*/}}
{{- define "iot.postgresql.manifest" -}}
{{- $object := .object }}
{{- with .root.Values.postgresql }}
{{- if .enabled }}
{{- $root := $.root }}
{{- $ctx := dict "root" $root "component" "postgresql" "version" .image.tag }}
{{- $name := include "iot.componentName" $ctx }}
{{- $db := include "iot.database" $root | fromJson }}
{{- $ports := list (dict "name" "postgresql" "containerPort" 5432 "protocol" "TCP") }}
{{- $keycloakHere := and $root.Values.keycloak.enabled (not $root.Values.keycloak.database.host) }}
{{- if and (eq $object "Secret") (not .auth.existingSecret) }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ $name }}
  labels:
    {{- include "iot.labels" $ctx | nindent 4 }}
  {{- include "iot.secret.annotations" . | nindent 2 }}
type: Opaque
data:
  password: {{ include "iot.secret.value" (dict "root" $root "name" $name "key" "password" "given" .auth.password) }}
{{- end }}
{{- if and (eq $object "RolesSecret") (not .roles.existingSecret) }}
{{- $secret := include "iot.database.rolesSecret" $root }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ $secret }}
  labels:
    {{- include "iot.labels" $ctx | nindent 4 }}
  {{- include "iot.secret.annotations" . | nindent 2 }}
type: Opaque
data:
  {{- /* the passwords of the roles migrate keeps (services/migrate/roles.py): generated once */}}
  {{- range list "owner" "ingest" "evaluator" "uiIot" "opsWorker" "routeDelivery" "keycloak" }}
  {{ . }}: {{ include "iot.secret.value" (dict "root" $root "name" $secret "key" . "given" (get $.root.Values.postgresql.roles.passwords .)) }}
  {{- end }}
{{- end }}
{{- if eq $object "ConfigMap" }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $name }}-init
  labels:
    {{- include "iot.labels" $ctx | nindent 4 }}
data:
  # Runs once, on an empty data directory (docker-entrypoint-initdb.d). The roles and
  # Keycloak's database are not made here but by the services' migrate init container, on
  # every start (this runs on first initialisation only, never on upgrades).
  10-keycloak.sql: |
    {{- if $keycloakHere }}
    -- Keycloak's role and database {{ $root.Values.keycloak.database.name | quote }}: created by migrate.
    {{- else }}
    -- Keycloak is disabled or uses another database server: nothing to create.
    {{- end }}
{{- end }}
{{- if eq $object "StatefulSet" }}
{{- /* no checksum of the init ConfigMap: PostgreSQL reads it only when it initialises an empty volume */}}
{{ include "iot.workload.header" (merge (dict "kind" "StatefulSet" "replicas" 1 "key" "postgresql" "values" . "annotations" (include "iot.checksums" (dict "root" $root "objects" (list (dict "name" "postgresql-secret" "template" "iot.postgresql.manifest" "object" "Secret"))) | fromJson)) $ctx) }}
    spec:
      {{- include "iot.thirdParty.podFields" (merge (dict "key" "postgresql" "values" .) $ctx) | nindent 6 }}
      containers:
        - name: postgresql
          {{- include "iot.thirdParty.containerFields" (dict "root" $root "key" "postgresql" "values" .) | nindent 10 }}
          {{- with include "iot.diagnostic.process" (dict "root" $root) }}
          {{- . | nindent 10 }}
          {{- end }}
          ports:
            {{- toYaml $ports | nindent 12 }}
          env:
            - name: POSTGRES_USER
              value: {{ .auth.username | quote }}
            - name: POSTGRES_DB
              value: {{ .auth.database | quote }}
            - name: POSTGRES_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {{ $db.secretName }}
                  key: {{ $db.secretKey }}
          {{- with include "iot.probes.render" (dict "root" $root "key" "postgresql" "probes" (include "iot.postgresql.probes" (dict "root" $root "probes" .probes) | fromJson) "ports" $ports) }}
          {{- . | nindent 10 }}
          {{- end }}
          volumeMounts:
            - name: data
              mountPath: /var/lib/postgresql
            - name: run
              mountPath: /var/run/postgresql
            - name: tmp
              mountPath: /tmp
            - name: init
              mountPath: /docker-entrypoint-initdb.d
              readOnly: true
      volumes:
        - name: run
          emptyDir: {}
        - name: tmp
          emptyDir:
            sizeLimit: 256Mi
        - name: init
          configMap:
            name: {{ $name }}-init
  volumeClaimTemplates:
    - apiVersion: v1
      kind: PersistentVolumeClaim
      metadata:
        name: data
        labels:
          {{- include "iot.selectorLabels" $ctx | nindent 10 }}
      spec:
        accessModes: ["ReadWriteOnce"]
        {{- with .persistence.storageClassName }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ .persistence.size }}
{{- end }}
{{- if eq $object "Service" }}
{{ include "iot.service" (merge (dict "ports" (list (dict "name" "postgresql" "port" .service.port "targetPort" "postgresql"))) $ctx) }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
PostgreSQL's probe overrides (JSON) with `pg_isready -t <seconds>` strictly below each probe's
timeout: every enabled exec probe running pg_isready without -t gets `-t <timeoutSeconds - 1>`
(merged timeout; Kubernetes' default is 1 s), so pg_isready reports "no response" before the
kubelet abandons the check (pg_isready's own default, 3 s, equals the readiness timeout; -t 0
waits forever). A -t given in the command must be below the timeout too.
Args: root, probes (postgresql.probes).
*/}}
{{- define "iot.postgresql.probes" -}}
{{- $out := deepCopy (.probes | default dict) -}}
{{- range $kind := list "liveness" "readiness" "startup" -}}
{{- $where := printf "postgresql.probes.%s" $kind -}}
{{- $merged := include "iot.probes.merge" (dict "defaults" (get $.root.Values.probes $kind) "override" (get $out $kind) "where" $where) | fromJson -}}
{{- $command := list -}}
{{- if kindIs "map" $merged.exec -}}{{- $command = $merged.exec.command | default list -}}{{- end -}}
{{- if and (include "iot.probes.isEnabled" (dict "probe" $merged)) $command (eq (base (toString (first $command))) "pg_isready") -}}
{{- $timeout := int (ternary $merged.timeoutSeconds 1 (hasKey $merged "timeoutSeconds")) -}}
{{- $given := "" -}}
{{- range $index, $word := $command -}}
{{- $word = toString $word -}}
{{- if and (or (eq $word "-t") (eq $word "--timeout")) (lt (add1 $index) (len $command)) -}}
{{- $given = toString (index $command (add1 $index)) -}}
{{- else if hasPrefix "--timeout=" $word -}}
{{- $given = trimPrefix "--timeout=" $word -}}
{{- end -}}
{{- end -}}
{{- if $given -}}
{{- if or (not (regexMatch "^[0-9]+$" $given)) (lt (atoi $given) 1) (ge (atoi $given) $timeout) -}}
{{- fail (printf "%s.exec.command runs pg_isready -t %s, which must be a whole number of seconds from 1 to %s.timeoutSeconds - 1 (%d): pg_isready must give up before the kubelet does (and -t 0 waits forever); lower -t, raise %s.timeoutSeconds, or drop -t to let the chart derive it" $where $given $where (sub $timeout 1) $where) -}}
{{- end -}}
{{- else -}}
{{- if lt $timeout 2 -}}
{{- fail (printf "%s.timeoutSeconds (%d) leaves pg_isready no timeout below it (the chart passes -t timeoutSeconds - 1, and -t 0 waits forever): set %s.timeoutSeconds to 2 or more" $where $timeout $where) -}}
{{- end -}}
{{- $override := deepCopy (get $out $kind | default dict) -}}
{{- $_ := set $override "exec" (dict "command" (concat $command (list "-t" (toString (sub $timeout 1))))) -}}
{{- $_ := set $out $kind $override -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}
