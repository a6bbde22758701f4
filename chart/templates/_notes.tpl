{{/*
NOTES.txt (printed by `helm install` / `helm upgrade`): what was installed, how to reach the UI,
Keycloak and the MQTT broker for the Service type / Ingress / HTTPRoute configured, and the
kubectl commands that read the generated passwords. Never a secret value.
*/}}

{{/* `kubectl --namespace <ns>` of the release. Args: root. */}}
{{- define "iot.notes.kubectl" -}}
kubectl --namespace {{ .root.Release.Namespace }}
{{- end -}}

{{/*
How to reach one port of a component's Service, by its type. Args: root, component, service
(its values), port (the Service port), portName, scheme, path.
*/}}
{{- define "iot.notes.service" -}}
{{- $name := include "iot.componentName" . -}}
{{- $kubectl := include "iot.notes.kubectl" . -}}
{{- $type := .service.type | default "ClusterIP" -}}
{{- if eq $type "LoadBalancer" }}
    LoadBalancer Service {{ $name }}, port {{ .port }} (the address may take a minute):
      {{ $kubectl }} get service {{ $name }} -o jsonpath='{.status.loadBalancer.ingress[0].ip}{.status.loadBalancer.ingress[0].hostname}'
      then {{ .scheme }}://<that address>:{{ .port }}{{ .path }}
{{- else if eq $type "NodePort" }}
    NodePort Service {{ $name }}: {{ .scheme }}://<a node's address>:<node port>{{ .path }}, the node port being
      {{ $kubectl }} get service {{ $name }} -o jsonpath='{.spec.ports[?(@.name=="{{ .portName }}")].nodePort}'
{{- else }}
{{- /* a local port above 1023: no root needed on the user's machine */}}
{{- $local := ternary .port (add 10000 .port) (ge (int .port) 1024) }}
    ClusterIP Service {{ $name }} (in-cluster only): {{ .scheme }}://{{ $name }}.{{ .root.Release.Namespace }}.svc:{{ .port }}{{ .path }}
      from your machine: {{ $kubectl }} port-forward service/{{ $name }} {{ $local }}:{{ .port }}
      then {{ .scheme }}://127.0.0.1:{{ $local }}{{ .path }}
{{- end }}
{{- end -}}

{{/*
The URLs of a component's Ingress and HTTPRoute, when enabled. Args: root, component, ingress,
httpRoute (their values), path (the component's root path).
*/}}
{{- define "iot.notes.routes" -}}
{{- $name := include "iot.componentName" . -}}
{{- if .ingress.enabled }}
{{- $tlsHosts := list }}
{{- range .ingress.tls }}{{ $tlsHosts = concat $tlsHosts (.hosts | default list) }}{{ end }}
    Ingress {{ $name }}:
    {{- range .ingress.hosts }}
      {{ ternary "https" "http" (has .host $tlsHosts) }}://{{ .host }}{{ (first (.paths | default (list (dict "path" $.path)))).path }}
    {{- else }}
      any host name pointing at the Ingress controller: {{ include "iot.notes.kubectl" . }} get ingress {{ $name }}
    {{- end }}
{{- end }}
{{- if .httpRoute.enabled }}
    HTTPRoute {{ $name }} on Gateway {{ (first .httpRoute.parentRefs).name }}:
    {{- range .httpRoute.hostnames }}
      <scheme of the Gateway's listener>://{{ . }}{{ $.path }}
    {{- else }}
      the Gateway's host names, path {{ .path }}: {{ include "iot.notes.kubectl" . }} get httproute {{ $name }}
    {{- end }}
{{- end }}
{{- end -}}

{{/* How to read one password with kubectl. Args: root, what, user, secret, key. */}}
{{- define "iot.notes.secret" }}
  {{ .what }}{{ with .user }} (user {{ . }}){{ end }}:
    {{ include "iot.notes.kubectl" . }} get secret {{ .secret }} -o jsonpath='{.data.{{ .key | replace "." "\\." }}}' | base64 -d; echo
{{- end -}}

{{- define "iot.notes" -}}
{{- $root := . -}}
{{- $v := .Values -}}
{{- $args := dict "root" $root -}}
{{ .Chart.Name }} {{ .Chart.Version }} is {{ ternary "installed" "upgraded" .Release.IsInstall }}: release {{ .Release.Name }} in namespace {{ .Release.Namespace }}.

Components:
{{- range $key := list "ingest" "evaluator" "uiIot" "opsWorker" "routeDelivery" }}
{{- with index $v $key }}{{ if .enabled }}
  - {{ $key }}: {{ .replicas }} replica(s)
{{- end }}{{ end }}
{{- end }}
{{- if $v.emqx.enabled }}
  - EMQX (MQTT broker{{ if $v.emqx.bridgeToNats.enabled }}, bridged to NATS{{ end }})
{{- end }}
{{- if $v.nats.enabled }}
  - NATS with JetStream
{{- end }}
{{- if $v.postgresql.enabled }}
  - PostgreSQL (in-chart)
{{- else }}
  - database: external (externalDatabase)
{{- end }}
{{- if $v.keycloak.enabled }}
  - Keycloak
{{- end }}
{{- if $v.uiIot.enabled }}

Web UI (ui-iot):
{{- include "iot.notes.service" (dict "root" $root "component" "ui-iot" "service" $v.uiIot.service "port" (int $v.uiIot.service.port) "portName" "http" "scheme" "http" "path" "/") }}
{{- include "iot.notes.routes" (dict "root" $root "component" "ui-iot" "ingress" $v.uiIot.ingress "httpRoute" $v.uiIot.httpRoute "path" "/") }}
{{- end }}
{{- if $v.emqx.enabled }}

MQTT broker (EMQX), for devices:
{{- include "iot.notes.service" (dict "root" $root "component" "emqx" "service" $v.emqx.service "port" (int $v.emqx.service.port) "portName" "mqtt" "scheme" "mqtt" "path" "") }}
{{- if $v.emqx.tls.existingSecret }}
  MQTT over TLS (certificate from the Secret {{ $v.emqx.tls.existingSecret }}{{ if $v.emqx.tls.verifyClients }}; devices need a client certificate{{ end }}):
{{- include "iot.notes.service" (dict "root" $root "component" "emqx" "service" $v.emqx.service "port" (int $v.emqx.service.tlsPort) "portName" "mqtts" "scheme" "mqtts" "path" "") }}
{{- end }}
  Telemetry goes to topics {{ $v.emqx.bridgeToNats.topic | quote }}. Dashboard (not exposed):
    {{ include "iot.notes.kubectl" $args }} port-forward deployment/{{ include "iot.componentName" (dict "root" $root "component" "emqx") }} 18083:18083
{{- end }}
{{- if $v.keycloak.enabled }}

Keycloak (admin console at <address>{{ trimSuffix "/" $v.keycloak.httpRelativePath }}/admin/):
{{- include "iot.notes.service" (dict "root" $root "component" "keycloak" "service" $v.keycloak.service "port" (int $v.keycloak.service.port) "portName" "http" "scheme" "http" "path" $v.keycloak.httpRelativePath) }}
{{- include "iot.notes.routes" (dict "root" $root "component" "keycloak" "ingress" $v.keycloak.ingress "httpRoute" $v.keycloak.httpRoute "path" $v.keycloak.httpRelativePath) }}
{{- end }}

Passwords (never printed here; read them with kubectl):
{{- $db := include "iot.database" $root | fromJson }}
{{- include "iot.notes.secret" (dict "root" $root "what" "Database" "user" $db.username "secret" $db.secretName "key" $db.secretKey) }}
{{- if $v.keycloak.enabled }}
{{- include "iot.notes.secret" (dict "root" $root "what" "Keycloak admin" "user" $v.keycloak.admin.username "secret" ($v.keycloak.admin.existingSecret | default (include "iot.componentName" (dict "root" $root "component" "keycloak"))) "key" $v.keycloak.admin.existingSecretKey) }}
{{- end }}
{{- if $v.emqx.enabled }}
{{- include "iot.notes.secret" (dict "root" $root "what" "EMQX dashboard" "user" "admin" "secret" ($v.emqx.auth.existingSecret | default (include "iot.componentName" (dict "root" $root "component" "emqx"))) "key" "dashboard-password") }}
{{- end }}
{{- if $v.tests.enabled }}

Check the installation: helm test {{ .Release.Name }} --namespace {{ .Release.Namespace }}
{{- end }}
{{- end -}}
