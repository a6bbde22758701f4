{{/*
Keycloak: Deployment + Service + (unless existingSecret) the admin Secret + optional Ingress
and HTTPRoute.
Renders the one object named by `object` (Helm 4 keeps a blank line inside multi-document
template files, so every object has a template file of its own). Args: root, object.
*/}}
{{- define "iot.keycloak.manifest" -}}
{{- $object := .object }}
{{- with .root.Values.keycloak }}
{{- if .enabled }}
{{- $root := $.root }}
{{- $ctx := dict "root" $root "component" "keycloak" "version" .image.tag }}
{{- $db := include "iot.keycloak.database" $root | fromJson }}
{{- $ports := list (dict "name" "http" "containerPort" 8080 "protocol" "TCP") (dict "name" "management" "containerPort" 9000 "protocol" "TCP") }}
{{- $adminSecret := .admin.existingSecret | default (include "iot.componentName" $ctx) }}
{{- if and (eq $object "Secret") (not .admin.existingSecret) }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ $adminSecret }}
  labels:
    {{- include "iot.labels" $ctx | nindent 4 }}
  {{- include "iot.secret.annotations" . | nindent 2 }}
type: Opaque
data:
  {{ .admin.existingSecretKey }}: {{ include "iot.secret.value" (dict "root" $root "name" $adminSecret "key" .admin.existingSecretKey "given" .admin.password) }}
{{- end }}
{{- if eq $object "Deployment" }}
{{ include "iot.workload.header" (merge (dict "kind" "Deployment" "replicas" 1 "key" "keycloak" "values" . "annotations" (include "iot.checksums" (dict "root" $root "objects" (list (dict "name" "postgresql-roles-secret" "template" "iot.postgresql.manifest" "object" "RolesSecret") (dict "name" "keycloak-secret" "template" "iot.keycloak.manifest" "object" "Secret") (dict "name" "keycloak-realm" "template" "iot.auth.realmManifest" "object" "ConfigMap"))) | fromJson)) $ctx) }}
    spec:
      {{- include "iot.thirdParty.podFields" (merge (dict "key" "keycloak" "values" .) $ctx) | nindent 6 }}
      containers:
        - name: keycloak
          {{- include "iot.thirdParty.containerFields" (dict "root" $root "key" "keycloak" "values" .) | nindent 10 }}
          {{- include "iot.diagnostic.process" (dict "root" $root "args" (include "iot.auth.keycloakArgs" (dict "root" $root) | fromJsonArray)) | nindent 10 }}
          ports:
            {{- toYaml $ports | nindent 12 }}
          env:
            - name: KC_HEALTH_ENABLED
              value: "true"
            {{- if include "iot.metrics.enabled" $root }}
            # Prometheus metrics on the management port (9000) at /metrics (values `metrics`).
            - name: KC_METRICS_ENABLED
              value: "true"
            {{- end }}
            - name: KC_HTTP_ENABLED
              value: "true"
            - name: KC_HTTP_PORT
              value: "8080"
            - name: KC_HTTP_MANAGEMENT_PORT
              value: "9000"
            - name: KC_PROXY_HEADERS
              value: xforwarded
            - name: KC_HTTP_RELATIVE_PATH
              value: {{ .httpRelativePath | quote }}
            # The management interface inherits the relative path otherwise: keep the probes'
            # /health/* where they are whatever path Keycloak is served under.
            - name: KC_HTTP_MANAGEMENT_RELATIVE_PATH
              value: /
            {{- if .hostname }}
            - name: KC_HOSTNAME
              value: {{ .hostname | quote }}
            {{- else }}
            - name: KC_HOSTNAME_STRICT
              value: "false"
            {{- end }}
            - name: KC_CACHE
              value: local
            - name: KC_DB
              value: postgres
            - name: KC_DB_URL_HOST
              value: {{ $db.host | quote }}
            - name: KC_DB_URL_PORT
              value: {{ $db.port | quote }}
            - name: KC_DB_URL_DATABASE
              value: {{ $db.database | quote }}
            - name: KC_DB_USERNAME
              value: {{ $db.username | quote }}
            - name: KC_DB_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {{ $db.secretName }}
                  key: {{ $db.secretKey }}
            - name: KC_BOOTSTRAP_ADMIN_USERNAME
              value: {{ .admin.username | quote }}
            - name: KC_BOOTSTRAP_ADMIN_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {{ $adminSecret }}
                  key: {{ .admin.existingSecretKey }}
          {{- with include "iot.probes.render" (dict "root" $root "key" "keycloak" "probes" .probes "ports" $ports) }}
          {{- . | nindent 10 }}
          {{- end }}
          {{- with include "iot.auth.keycloakVolumeMounts" (dict "root" $root) }}
          volumeMounts:
            {{- . | trim | nindent 12 }}
          {{- end }}
      {{- with include "iot.auth.keycloakVolumes" (dict "root" $root) }}
      volumes:
        {{- . | trim | nindent 8 }}
      {{- end }}
{{- end }}
{{- if eq $object "Service" }}
{{ include "iot.service" (merge (dict "ports" (list (dict "name" "http" "port" .service.port "targetPort" "http"))) $ctx) }}
{{- end }}
{{- if eq $object "Ingress" }}
{{- include "iot.exposure.ingress" (merge (dict "key" "keycloak" "ingress" .ingress "port" .service.port "path" .httpRelativePath "pathKey" "keycloak.httpRelativePath") $ctx) }}
{{- end }}
{{- if eq $object "HTTPRoute" }}
{{- include "iot.exposure.httpRoute" (merge (dict "key" "keycloak" "httpRoute" .httpRoute "port" .service.port "path" .httpRelativePath "pathKey" "keycloak.httpRelativePath") $ctx) }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}
