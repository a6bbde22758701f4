{{/*
NATS with JetStream: ConfigMap (nats.conf) + Secret (the users' passwords) + StatefulSet with a
PVC + Service.
Renders the one object named by `object` (Helm 4 keeps a blank line inside multi-document
template files, so every object has a template file of its own). Args: root, object.
*/}}
{{- define "iot.nats.manifest" -}}
{{- $object := .object }}
{{- with .root.Values.nats }}
{{- if .enabled }}
{{- $root := $.root }}
{{- $ctx := dict "root" $root "component" "nats" "version" .image.tag }}
{{- $name := include "iot.componentName" $ctx }}
{{- $ports := list (dict "name" "client" "containerPort" 4222 "protocol" "TCP") (dict "name" "monitor" "containerPort" 8222 "protocol" "TCP") }}
{{- if .mqtt.enabled }}
{{- $ports = append $ports (dict "name" "mqtt" "containerPort" (int .mqtt.port) "protocol" "TCP") }}
{{- end }}
{{- $users := include "iot.nats.users" $root | fromJsonArray }}
{{- if and (eq $object "Secret") (not .auth.existingSecret) }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ include "iot.nats.secretName" $root }}
  labels:
    {{- include "iot.labels" $ctx | nindent 4 }}
  {{- include "iot.secret.annotations" . | nindent 2 }}
type: Opaque
data:
  {{- range $users }}
  {{ .key }}: {{ include "iot.secret.value" (dict "root" $root "name" (include "iot.nats.secretName" $root) "key" .key "given" (get $.root.Values.nats.auth.passwords .role)) }}
  {{- end }}
{{- end }}
{{- if eq $object "ConfigMap" }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $name }}
  labels:
    {{- include "iot.labels" $ctx | nindent 4 }}
data:
  nats.conf: |
    # server_name must be stable for JetStream (and is required by MQTT): the StatefulSet pod name.
    server_name: $POD_NAME
    listen: 0.0.0.0:4222
    # Monitoring (health endpoints for the probes and `helm test`; read-only).
    http_port: 8222
    # Lame-duck mode (entered by the preStop hook): stop accepting, wait the grace period, then
    # close the clients spread over the rest of the duration, then exit (nats.lameDuck).
    lame_duck_duration: {{ .lameDuck.durationSeconds }}s
    lame_duck_grace_period: {{ .lameDuck.gracePeriodSeconds }}s
    pid_file: {{ include "iot.nats.pidFile" . }}
    jetstream {
      store_dir: /data
      max_file_store: {{ .jetstream.maxFileStore }}
    }
    # One user per component, each with only the subjects it uses (README: NATS and MQTT
    # credentials). No anonymous clients: there is no no_auth_user. Passwords are environment
    # references ($NATS_..._PASSWORD), set from the Secret {{ include "iot.nats.secretName" $root }}.
    authorization {
      users = [
        {{- range $users }}
        {
          user: {{ .user | quote }}
          password: ${{ .env }}
          permissions: {
            publish: { allow: {{ include "iot.nats.confList" .publish }} }
            subscribe: {{ if .subscribe }}{ allow: {{ include "iot.nats.confList" .subscribe }} }{{ else }}{ deny: [">"] }{{ end }}
          }
          allowed_connection_types: {{ include "iot.nats.confList" .connectionTypes }}
        }
        {{- end }}
      ]
    }
    {{- if .mqtt.enabled }}
    mqtt {
      listen: 0.0.0.0:{{ .mqtt.port }}
    }
    {{- end }}
{{- end }}
{{- if eq $object "StatefulSet" }}
{{- include "iot.nats.guard.lameDuck" . }}
{{- /* stream limits are not in nats.conf (the services apply them): no restart for them */}}
{{ include "iot.workload.header" (merge (dict "kind" "StatefulSet" "replicas" 1 "key" "nats" "values" . "annotations" (include "iot.checksums" (dict "root" $root "objects" (list (dict "name" "nats-config" "template" "iot.nats.manifest" "object" "ConfigMap") (dict "name" "nats-secret" "template" "iot.nats.manifest" "object" "Secret"))) | fromJson)) $ctx) }}
    spec:
      {{- include "iot.thirdParty.podFields" (merge (dict "key" "nats" "values" .) $ctx) | nindent 6 }}
      containers:
        - name: nats
          {{- include "iot.thirdParty.containerFields" (dict "root" $root "key" "nats" "values" . "preStop" (include "iot.nats.preStop" . | fromJson)) | nindent 10 }}
          {{- include "iot.diagnostic.process" (dict "root" $root "args" (list "--config" "/etc/nats/nats.conf")) | nindent 10 }}
          ports:
            {{- toYaml $ports | nindent 12 }}
          env:
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            {{- range $users }}
            - name: {{ .env }}
              valueFrom:
                secretKeyRef:
                  name: {{ include "iot.nats.secretName" $root }}
                  key: {{ .key }}
            {{- end }}
          {{- with include "iot.probes.render" (dict "root" $root "key" "nats" "probes" .probes "ports" $ports) }}
          {{- . | nindent 10 }}
          {{- end }}
          volumeMounts:
            - name: config
              mountPath: /etc/nats
              readOnly: true
            - name: jetstream
              mountPath: /data
            - name: pid
              mountPath: {{ include "iot.nats.pidFile" . | dir }}
      volumes:
        - name: config
          configMap:
            name: {{ $name }}
        - name: pid
          emptyDir:
            sizeLimit: 1Mi
  volumeClaimTemplates:
    - apiVersion: v1
      kind: PersistentVolumeClaim
      metadata:
        name: jetstream
        labels:
          {{- include "iot.selectorLabels" $ctx | nindent 10 }}
      spec:
        accessModes: ["ReadWriteOnce"]
        {{- with .jetstream.storageClassName }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ .jetstream.storageSize }}
{{- end }}
{{- if eq $object "Service" }}
{{- /* monitor: read-only health and statistics, for `helm test` (templates/tests/nats-healthz.yaml) */}}
{{- $servicePorts := list (dict "name" "client" "port" .service.port "targetPort" "client") (dict "name" "monitor" "port" 8222 "targetPort" "monitor") }}
{{- if .mqtt.enabled }}
{{- $servicePorts = append $servicePorts (dict "name" "mqtt" "port" .mqtt.port "targetPort" "mqtt") }}
{{- end }}
{{ include "iot.service" (merge (dict "ports" $servicePorts) $ctx) }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Where nats-server writes its pid (an emptyDir), for the lame-duck signal. Args: nats values. */}}
{{- define "iot.nats.pidFile" -}}/var/run/nats/nats.pid{{- end -}}

{{/*
The preStop hook of NATS (a LifecycleHandler, JSON): signal the server into lame-duck mode. The
hook returns at once; the server then ignores the kubelet's SIGTERM and exits by itself at the
end of nats.lameDuck.durationSeconds. Args: nats values.
*/}}
{{- define "iot.nats.preStop" -}}
{{- dict "exec" (dict "command" (list "nats-server" "--signal" (printf "ldm=%s" (include "iot.nats.pidFile" .)))) | toJson -}}
{{- end -}}

{{/*
Fails unless lame-duck mode fits: its grace period below its duration (nats-server refuses
otherwise), and the pod's grace period above the duration plus the margin, or the kubelet kills
NATS before it has closed its clients. Args: nats values.
*/}}
{{- define "iot.nats.guard.lameDuck" -}}
{{- $duration := int .lameDuck.durationSeconds -}}
{{- $grace := int .lameDuck.gracePeriodSeconds -}}
{{- if ge $grace $duration -}}
{{- fail (printf "nats.lameDuck.gracePeriodSeconds (%d) must be below nats.lameDuck.durationSeconds (%d): lower the grace period or raise the duration" $grace $duration) -}}
{{- end -}}
{{- $margin := include "iot.graceMargin" . | int -}}
{{- include "iot.guard.gracePeriod" (dict "where" "nats.terminationGracePeriodSeconds" "grace" .terminationGracePeriodSeconds "needed" (add $duration $margin) "why" (printf "nats.lameDuck.durationSeconds + %d s margin, or the kubelet kills NATS in lame-duck mode" $margin)) -}}
{{- end -}}

{{/* The Secret with the NATS users' passwords: nats.auth.existingSecret, else the chart's. Args: root. */}}
{{- define "iot.nats.secretName" -}}
{{- .Values.nats.auth.existingSecret | default (include "iot.componentName" (dict "root" . "component" "nats")) -}}
{{- end -}}

{{/*
The NATS users, one per component (JSON list of {role, user, key, env, publish, subscribe,
connectionTypes}): key is the Secret key of its password, env the variable nats.conf reads it
from. Each has only the subjects its code uses (the list is in services/common/messaging/lean.py
and is checked against a real nats-server by chart-tests/test_nats_auth.py and
services/tests/test_nats_permissions.py); replies come back on `_INBOX.<user>.>` (the services'
NATS_INBOX_PREFIX), so no user can read another's. Only `owner` may create, change or delete
streams. Args: root.
*/}}
{{- define "iot.nats.users" -}}
{{- $ingest := get (.Values.ingest.env | default dict) "INGEST_DURABLE" | default "ingest" -}}
{{- $delivery := get (.Values.routeDelivery.env | default dict) "ROUTE_DURABLE" | default "route-delivery" -}}
{{- $users := list -}}
{{- $users = append $users (dict "role" "owner" "user" "owner" "publish" (list "$JS.API.>") "subscribe" (list "_INBOX.owner.>")) -}}
{{- $users = append $users (dict "role" "ingest" "user" "ingest" "publish" (concat (include "iot.nats.consumerSubjects" (dict "stream" "TELEMETRY" "durable" $ingest) | fromJsonArray) (list "$JS.API.STREAM.INFO.ROUTES" "routes.>")) "subscribe" (list "_INBOX.ingest.>")) -}}
{{- $users = append $users (dict "role" "routeDelivery" "user" "route-delivery" "publish" (include "iot.nats.consumerSubjects" (dict "stream" "ROUTES" "durable" $delivery) | fromJsonArray) "subscribe" (list "_INBOX.route-delivery.>")) -}}
{{- $users = append $users (dict "role" "emqxBridge" "user" "emqx-bridge" "publish" (list "telemetry.>") "subscribe" (list) "connectionTypes" (list "MQTT")) -}}
{{- $out := list -}}
{{- range $users -}}
{{- $_ := set . "key" (printf "%s-password" .user) -}}
{{- $_ := set . "env" (printf "NATS_%s_PASSWORD" (.user | upper | replace "-" "_")) -}}
{{- if not (hasKey . "connectionTypes") -}}
{{- $_ := set . "connectionTypes" (list "STANDARD") -}}
{{- end -}}
{{- $out = append $out . -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
What a consumer of one durable on one stream publishes (JSON list): pull requests, acks (and
naks, in-progress), flow-control answers, its own consumer's lookup and creation, and its stream's
lookup. Args: stream, durable.
*/}}
{{- define "iot.nats.consumerSubjects" -}}
{{- list (printf "$JS.API.CONSUMER.MSG.NEXT.%s.%s" .stream .durable) (printf "$JS.ACK.%s.%s.>" .stream .durable) (printf "$JS.FC.%s.%s.>" .stream .durable) (printf "$JS.API.CONSUMER.INFO.%s.%s" .stream .durable) (printf "$JS.API.CONSUMER.DURABLE.CREATE.%s.%s" .stream .durable) (printf "$JS.API.STREAM.INFO.%s" .stream) | toJson -}}
{{- end -}}

{{/*
The NATS login of one role (owner, ingest, routeDelivery, emqxBridge) as JSON {user, userSecret,
userKey, secret, passwordKey, inboxPrefix}: with the in-chart NATS its own user (name as a value,
password from the NATS Secret, inbox prefix _INBOX.<user>); with externalNats the one login of
externalNats.auth (both from its Secret; empty when it has none). Args: root, role.
*/}}
{{- define "iot.nats.login" -}}
{{- $login := dict "user" "" "userSecret" "" "userKey" "" "secret" "" "passwordKey" "" "inboxPrefix" "" -}}
{{- if .root.Values.nats.enabled -}}
{{- range include "iot.nats.users" .root | fromJsonArray -}}
{{- if eq .role $.role -}}
{{- $login = dict "user" .user "userSecret" "" "userKey" "" "secret" (include "iot.nats.secretName" $.root) "passwordKey" .key "inboxPrefix" (printf "_INBOX.%s" .user) -}}
{{- end -}}
{{- end -}}
{{- if not $login.user -}}
{{- fail (printf "iot.nats.login: unknown role %q" .role) -}}
{{- end -}}
{{- else -}}
{{- $auth := .root.Values.externalNats.auth -}}
{{- if $auth.existingSecret -}}
{{- $login = dict "user" "" "userSecret" $auth.existingSecret "userKey" $auth.usernameKey "secret" $auth.existingSecret "passwordKey" $auth.passwordKey "inboxPrefix" "" -}}
{{- end -}}
{{- end -}}
{{- toJson $login -}}
{{- end -}}

{{/* A list of strings in nats.conf syntax (toJson would write `>` as \u003e, which nats.conf does not read). Args: the list. */}}
{{- define "iot.nats.confList" -}}
[{{ range $index, $item := . }}{{ if $index }}, {{ end }}{{ $item | quote }}{{ end }}]
{{- end -}}
