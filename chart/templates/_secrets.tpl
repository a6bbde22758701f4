{{/*
Secrets and the database connection. Passwords only ever reach pods through secretKeyRef.
*/}}

{{/*
The base64 value of one key of a Secret the chart owns: the given value, else the value already
in the cluster (so upgrades keep it), else a new random one. Args: root, name, key, given.
*/}}
{{- define "iot.secret.value" -}}
{{- if .given -}}
{{- .given | toString | b64enc -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name -}}
{{- if and $existing (hasKey ($existing.data | default dict) .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- /* Generated once per render (kept on the root context): the Secret and the checksum that
rolls its pods (iot.checksum) must see the same value. */ -}}
{{- if not (hasKey .root "iotGeneratedSecrets") -}}
{{- $_ := set .root "iotGeneratedSecrets" dict -}}
{{- end -}}
{{- $generated := get .root "iotGeneratedSecrets" -}}
{{- $id := printf "%s/%s" .name .key -}}
{{- if not (hasKey $generated $id) -}}
{{- $_ := set $generated $id (randAlphaNum 32 | b64enc) -}}
{{- end -}}
{{- get $generated $id -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Metadata annotations of every Secret the chart generates: `helm uninstall` keeps it, so that a
reinstall finds (iot.secret.value) the passwords the kept volumes were initialised with.
*/}}
{{- define "iot.secret.annotations" -}}
annotations:
  helm.sh/resource-policy: keep
{{- end -}}

{{/*
The services' database as JSON {host, port, username, database, url, secretName, secretKey}:
the in-chart PostgreSQL, or externalDatabase (whose checks fail with what to set).
*/}}
{{- define "iot.database" -}}
{{- $pg := .Values.postgresql -}}
{{- $db := dict -}}
{{- if $pg.enabled -}}
{{- $db = dict "host" (include "iot.componentName" (dict "root" . "component" "postgresql")) "port" (int $pg.service.port) "username" $pg.auth.username "database" $pg.auth.database "url" "" -}}
{{- $_ := set $db "secretName" ($pg.auth.existingSecret | default (include "iot.componentName" (dict "root" . "component" "postgresql"))) -}}
{{- $_ := set $db "secretKey" (ternary $pg.auth.existingSecretPasswordKey "password" (ne $pg.auth.existingSecret "")) -}}
{{- else -}}
{{- $ext := .Values.externalDatabase -}}
{{- if not $ext.existingSecret -}}
{{- fail "externalDatabase.existingSecret is empty: with postgresql.enabled=false the database password must come from an existing Secret; set externalDatabase.existingSecret" -}}
{{- end -}}
{{- if $ext.url -}}
{{- if regexMatch "^postgres(ql)?://[^/@]*:[^/@]*@" $ext.url -}}
{{- fail "externalDatabase.url carries a password: remove it from the URL; the password comes from externalDatabase.existingSecret" -}}
{{- end -}}
{{- else if not (and $ext.host $ext.username $ext.database) -}}
{{- fail "externalDatabase needs either url, or host, username and database: set them (postgresql.enabled=false)" -}}
{{- end -}}
{{- $db = dict "host" $ext.host "port" (int $ext.port) "username" $ext.username "database" $ext.database "url" $ext.url "secretName" $ext.existingSecret "secretKey" $ext.existingSecretPasswordKey -}}
{{- end -}}
{{- toJson $db -}}
{{- end -}}

{{/* DATABASE_URL (no password) and PGPASSWORD (from the Secret) of the services. Args: root. */}}
{{- define "iot.database.env" -}}
{{- $db := include "iot.database" .root | fromJson -}}
- name: DATABASE_URL
  value: {{ $db.url | default (printf "postgresql://%s@%s:%d/%s" $db.username $db.host (int $db.port) $db.database) | quote }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $db.secretName }}
      key: {{ $db.secretKey }}
{{- end -}}

{{/*
Keycloak's database as JSON {host, port, username, database, secretName, secretKey}: its own
keycloak.database fields over the services' database server.
*/}}
{{- define "iot.keycloak.database" -}}
{{- $services := include "iot.database" . | fromJson -}}
{{- $kc := .Values.keycloak.database -}}
{{- $host := $kc.host | default $services.host -}}
{{- if not $host -}}
{{- fail "keycloak.database.host is empty and externalDatabase gives only a url: set keycloak.database.host (and port/username if they differ)" -}}
{{- end -}}
{{- $db := dict "host" $host "port" (int ($kc.port | default $services.port)) "username" ($kc.username | default $services.username) "database" $kc.name -}}
{{- $_ := set $db "secretName" ($kc.existingSecret | default $services.secretName) -}}
{{- $_ := set $db "secretKey" (ternary $kc.existingSecretPasswordKey $services.secretKey (ne $kc.existingSecret "")) -}}
{{- toJson $db -}}
{{- end -}}
