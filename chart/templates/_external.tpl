{{/*
External services: the NATS the services and EMQX's bridge talk to (the in-chart one or
externalNats), and the TLS of an external database. Credentials and CA certificates only ever
come from existing Secrets (secretKeyRef and Secret volumes); nothing secret is rendered.
*/}}

{{/* Where the services find the CA certificates the chart mounts from Secrets. */}}
{{- define "iot.external.natsCaDir" -}}/etc/iot/nats-ca{{- end -}}
{{- define "iot.external.dbCaDir" -}}/etc/iot/db-ca{{- end -}}

{{/*
The NATS of the release as JSON {url, userSecret, userKey, passwordKey, caSecret, caKey,
mqttHost, mqttPort, mqttTls}: the in-chart server (nats.enabled), else externalNats, whose checks
fail with what to set. mqttPort is 0 when the server has no MQTT listener. Args: root.
*/}}
{{- define "iot.nats" -}}
{{- $root := . -}}
{{- $nats := dict -}}
{{- if .Values.nats.enabled -}}
{{- $host := include "iot.componentName" (dict "root" $root "component" "nats") -}}
{{- $nats = dict "url" (printf "nats://%s:%d" $host (int .Values.nats.service.port)) "userSecret" "" "userKey" "" "passwordKey" "" "caSecret" "" "caKey" "" "mqttHost" $host "mqttPort" (ternary (int .Values.nats.mqtt.port) 0 .Values.nats.mqtt.enabled) "mqttTls" false -}}
{{- else -}}
{{- $ext := .Values.externalNats -}}
{{- if not $ext.url -}}
{{- fail "nats.enabled=false and externalNats.url is empty: ingest and routeDelivery need a NATS server with JetStream; set externalNats.url (e.g. nats://nats.messaging:4222, credentials in externalNats.auth.existingSecret) or nats.enabled=true" -}}
{{- end -}}
{{- if regexMatch "^[a-z]+://[^/]*@" $ext.url -}}
{{- fail "externalNats.url carries credentials: remove them from the URL; the user and password come from externalNats.auth.existingSecret" -}}
{{- end -}}
{{- if and $ext.mqtt.tls (not $ext.tls.caSecret) -}}
{{- fail "externalNats.mqtt.tls=true needs the CA that signed the server's certificate: set externalNats.tls.caSecret (and externalNats.tls.caKey)" -}}
{{- end -}}
{{- $urlHost := regexReplaceAll "^[a-z]+://([^:/]+).*$" $ext.url "${1}" -}}
{{- $nats = dict "url" $ext.url "userSecret" $ext.auth.existingSecret "userKey" $ext.auth.usernameKey "passwordKey" $ext.auth.passwordKey "caSecret" $ext.tls.caSecret "caKey" $ext.tls.caKey "mqttHost" ($ext.mqtt.host | default $urlHost) "mqttPort" (int $ext.mqtt.port) "mqttTls" $ext.mqtt.tls -}}
{{- end -}}
{{- toJson $nats -}}
{{- end -}}

{{/*
NATS_URL, and the login of `role` (iot.nats.login): NATS_USER, NATS_PASSWORD (secretKeyRef) and
NATS_INBOX_PREFIX for the in-chart NATS's users, externalNats.auth's when it has one;
NATS_TLS_CA_FILE when externalNats has a CA. Args: root, role.
*/}}
{{- define "iot.nats.env" -}}
{{- $nats := include "iot.nats" .root | fromJson -}}
{{- $login := include "iot.nats.login" (dict "root" .root "role" .role) | fromJson -}}
- name: NATS_URL
  value: {{ $nats.url | quote }}
{{- if $login.user }}
- name: NATS_USER
  value: {{ $login.user | quote }}
{{- else if $login.userSecret }}
- name: NATS_USER
  valueFrom:
    secretKeyRef:
      name: {{ $login.userSecret }}
      key: {{ $login.userKey }}
{{- end }}
{{- if $login.secret }}
- name: NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $login.secret }}
      key: {{ $login.passwordKey }}
{{- end }}
{{- with $login.inboxPrefix }}
- name: NATS_INBOX_PREFIX
  value: {{ . | quote }}
{{- end }}
{{- if $nats.caSecret }}
- name: NATS_TLS_CA_FILE
  value: {{ printf "%s/ca.crt" (include "iot.external.natsCaDir" .) | quote }}
{{- end }}
{{- end -}}

{{/*
The TLS of the services' database as JSON {sslmode, caSecret, caKey}: externalDatabase's, empty
with the in-chart PostgreSQL (it serves no TLS). Fails when a CA is given but sslmode would not
check it. Args: root.
*/}}
{{- define "iot.database.tls" -}}
{{- $tls := dict "sslmode" "" "caSecret" "" "caKey" "" -}}
{{- if not .Values.postgresql.enabled -}}
{{- $ext := .Values.externalDatabase -}}
{{- if and $ext.tls.caSecret (not (has $ext.sslmode (list "verify-ca" "verify-full"))) -}}
{{- fail (printf "externalDatabase.tls.caSecret is set but externalDatabase.sslmode is %q: the CA is only checked with sslmode verify-ca or verify-full; set externalDatabase.sslmode=verify-full" $ext.sslmode) -}}
{{- end -}}
{{- $tls = dict "sslmode" $ext.sslmode "caSecret" $ext.tls.caSecret "caKey" $ext.tls.caKey -}}
{{- end -}}
{{- toJson $tls -}}
{{- end -}}

{{/* PGSSLMODE and PGSSLROOTCERT (libpq's names; asyncpg reads them) when set. Args: root. */}}
{{- define "iot.database.tlsEnv" -}}
{{- $tls := include "iot.database.tls" .root | fromJson -}}
{{- with $tls.sslmode }}
- name: PGSSLMODE
  value: {{ . | quote }}
{{- end }}
{{- if $tls.caSecret }}
- name: PGSSLROOTCERT
  value: {{ printf "%s/ca.crt" (include "iot.external.dbCaDir" .) | quote }}
{{- end }}
{{- end -}}

{{/*
Volume mounts of one service container for the CA certificates it uses (a YAML list, possibly
empty). Args: root, nats (whether the container talks to NATS), database (optional, default
true: whether it talks to PostgreSQL; the `streams` init container does not).
*/}}
{{- define "iot.external.volumeMounts" -}}
{{- $mounts := list -}}
{{- if and (dig "database" true .) (include "iot.database.tls" .root | fromJson).caSecret -}}
{{- $mounts = append $mounts (dict "name" "db-ca" "mountPath" (include "iot.external.dbCaDir" .) "readOnly" true) -}}
{{- end -}}
{{- if and .nats (include "iot.nats" .root | fromJson).caSecret -}}
{{- $mounts = append $mounts (dict "name" "nats-ca" "mountPath" (include "iot.external.natsCaDir" .) "readOnly" true) -}}
{{- end -}}
{{- toYaml $mounts -}}
{{- end -}}

{{/*
Secret volumes of the CA certificates a pod's containers mount (a YAML list, possibly empty):
each holds one file, ca.crt. Args: root, nats (whether the pod talks to NATS).
*/}}
{{- define "iot.external.volumes" -}}
{{- $volumes := list -}}
{{- $db := include "iot.database.tls" .root | fromJson -}}
{{- if $db.caSecret -}}
{{- $volumes = append $volumes (dict "name" "db-ca" "secret" (dict "secretName" $db.caSecret "items" (list (dict "key" $db.caKey "path" "ca.crt")))) -}}
{{- end -}}
{{- $nats := include "iot.nats" .root | fromJson -}}
{{- if and .nats $nats.caSecret -}}
{{- $volumes = append $volumes (dict "name" "nats-ca" "secret" (dict "secretName" $nats.caSecret "items" (list (dict "key" $nats.caKey "path" "ca.crt")))) -}}
{{- end -}}
{{- toYaml $volumes -}}
{{- end -}}
