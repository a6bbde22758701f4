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
{{- if eq $object "ConfigMap" }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $name }}-init
  labels:
    {{- include "iot.labels" $ctx | nindent 4 }}
data:
  # Runs once, on an empty data directory (docker-entrypoint-initdb.d).
  10-keycloak.sql: |
    {{- if $keycloakHere }}
    CREATE DATABASE {{ $root.Values.keycloak.database.name | quote }} OWNER {{ .auth.username | quote }};
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
          {{- include "iot.probes.render" (dict "root" $root "key" "postgresql" "probes" .probes "ports" $ports) | nindent 10 }}
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
