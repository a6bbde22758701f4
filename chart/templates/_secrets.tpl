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
{{- end -}}
{{- /* a user in the URL is the owner's name (as externalDatabase.username): the services get the
URL without it, since a user in DATABASE_URL would win over their own PGUSER */ -}}
{{- $urlUser := regexFind "^postgres(ql)?://[^/@]*@" $ext.url | regexFind "//[^/@]*@" | trimPrefix "//" | trimSuffix "@" -}}
{{- $owner := $ext.username | default $urlUser -}}
{{- if and $ext.username $urlUser (ne $ext.username $urlUser) -}}
{{- fail (printf "externalDatabase.url names user %q and externalDatabase.username %q: keep one (both name the owner role migrate runs as)" $urlUser $ext.username) -}}
{{- end -}}
{{- if not $owner -}}
{{- fail "externalDatabase.username is empty (and externalDatabase.url names no user): set it to the owner role migrate runs the migrations as (it owns the schema; no service logs in as it), its password in externalDatabase.existingSecret" -}}
{{- end -}}
{{- if and (not $ext.url) (not (and $ext.host $ext.database)) -}}
{{- fail "externalDatabase needs either url, or host and database: set them (postgresql.enabled=false)" -}}
{{- end -}}
{{- $url := regexReplaceAll "^(postgres(ql)?://)[^/@]*@" $ext.url "${1}" -}}
{{- $db = dict "host" $ext.host "port" (int $ext.port) "username" $owner "database" $ext.database "url" $url "secretName" $ext.existingSecret "secretKey" $ext.existingSecretPasswordKey -}}
{{- end -}}
{{- toJson $db -}}
{{- end -}}

{{/*
The database environment of a container: DATABASE_URL (no user, no password), then for a
service's container (`entry`) PGUSER and PGPASSWORD of its own role only, and for the migrate
init container (`migrate`) the owner's as PGUSER/PGPASSWORD, the admin's (DB_ADMIN_*), every
enabled service's role (DB_<SERVICE>_USER, with DB_<SERVICE>_PASSWORD when migrate sets
passwords) and Keycloak's (KEYCLOAK_DB_*) when migrate keeps its role and database.
Args: root, entry (catalog entry) or migrate (true); neither: DATABASE_URL alone.
*/}}
{{- define "iot.database.env" -}}
{{- $db := include "iot.database" .root | fromJson -}}
- name: DATABASE_URL
  value: {{ $db.url | default (printf "postgresql://%s:%d/%s" $db.host (int $db.port) $db.database) | quote }}
{{- if or .migrate .entry }}
{{- $roles := include "iot.database.roles" .root | fromJson }}
{{- if .migrate }}
{{ include "iot.database.loginEnv" (dict "userVar" "PGUSER" "passwordVar" "PGPASSWORD" "login" $roles.owner) }}
{{- with $roles.admin }}
{{ include "iot.database.loginEnv" (dict "userVar" "DB_ADMIN_USER" "passwordVar" "DB_ADMIN_PASSWORD" "login" .) }}
{{- end }}
{{- range $key, $login := $roles.services }}
{{- $prefix := get (include "iot.database.rolePrefixes" . | fromJson) $key }}
{{ include "iot.database.loginEnv" (dict "userVar" (printf "DB_%s_USER" $prefix) "passwordVar" (ternary (printf "DB_%s_PASSWORD" $prefix) "" (not (empty $roles.admin))) "login" $login) }}
{{- end }}
{{- with $roles.keycloak }}
- name: KEYCLOAK_DB_NAME
  value: {{ .database | quote }}
{{ include "iot.database.loginEnv" (dict "userVar" "KEYCLOAK_DB_USER" "passwordVar" "KEYCLOAK_DB_PASSWORD" "login" .) }}
{{- end }}
{{- else }}
{{ include "iot.database.loginEnv" (dict "userVar" "PGUSER" "passwordVar" "PGPASSWORD" "login" (get $roles.services .entry.key)) }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The env entries of one login: user (a value, or from a Secret) and password (from a Secret;
none when passwordVar is empty). Args: userVar, passwordVar, login ({user} or {userSecret,
userKey}, and secret, key). */}}
{{- define "iot.database.loginEnv" -}}
- name: {{ .userVar }}
{{- if .login.user }}
  value: {{ .login.user | quote }}
{{- else }}
  valueFrom:
    secretKeyRef:
      name: {{ .login.userSecret }}
      key: {{ .login.userKey }}
{{- end }}
{{- if .passwordVar }}
- name: {{ .passwordVar }}
  valueFrom:
    secretKeyRef:
      name: {{ .login.secret }}
      key: {{ .login.key }}
{{- end }}
{{- end -}}

{{/* Values key of each service -> the infix of its migrate variables (DB_<infix>_USER). */}}
{{- define "iot.database.rolePrefixes" -}}
{{- dict "ingest" "INGEST" "evaluator" "EVALUATOR" "uiIot" "UI" "opsWorker" "OPS" "routeDelivery" "ROUTE_DELIVERY" | toJson -}}
{{- end -}}

{{/* The in-chart PostgreSQL's role of each service (and the owner's). */}}
{{- define "iot.database.roleNames" -}}
{{- dict "owner" "iot_owner" "ingest" "iot_ingest" "evaluator" "iot_evaluator" "uiIot" "iot_ui" "opsWorker" "iot_ops" "routeDelivery" "iot_route_delivery" | toJson -}}
{{- end -}}

{{/* The Secret of the in-chart PostgreSQL's role passwords. Args: root. */}}
{{- define "iot.database.rolesSecret" -}}
{{- .Values.postgresql.roles.existingSecret | default (include "iot.componentName" (dict "root" . "component" "postgresql-roles")) -}}
{{- end -}}

{{/*
The platform's database logins as JSON {owner, admin, services, keycloak}, each login {user}
or {userSecret, userKey} plus {secret, key} (its password):
- in-chart PostgreSQL: admin = the bootstrap superuser (postgresql.auth); owner and services =
  the fixed roles of iot.database.roleNames, passwords in iot.database.rolesSecret;
- external: owner = externalDatabase.username/existingSecret; admin = externalDatabase.admin
  (null when not given); services = externalDatabase.roles.<key> (required for every enabled
  service).
services holds the enabled services only. keycloak (with `database`) is set when migrate keeps
Keycloak's role and database: Keycloak enabled, on the services' server, with an admin.
Args: the root context.
*/}}
{{- define "iot.database.roles" -}}
{{- $pg := .Values.postgresql -}}
{{- $db := include "iot.database" . | fromJson -}}
{{- $out := dict "services" dict "admin" nil "keycloak" nil -}}
{{- $keys := list "ingest" "evaluator" "uiIot" "opsWorker" "routeDelivery" -}}
{{- if $pg.enabled -}}
{{- $names := include "iot.database.roleNames" . | fromJson -}}
{{- $secret := include "iot.database.rolesSecret" . -}}
{{- $_ := set $out "admin" (dict "user" $pg.auth.username "secret" $db.secretName "key" $db.secretKey) -}}
{{- $_ := set $out "owner" (dict "user" $names.owner "secret" $secret "key" "owner") -}}
{{- range $keys -}}
{{- if (index $.Values .).enabled -}}
{{- $_ := set $out.services . (dict "user" (get $names .) "secret" $secret "key" .) -}}
{{- end -}}
{{- end -}}
{{- if has $pg.auth.username (values $names) -}}
{{- fail (printf "postgresql.auth.username %q is the name of one of the platform's roles (%s): choose another bootstrap superuser name" $pg.auth.username (values $names | sortAlpha | join ", ")) -}}
{{- end -}}
{{- else -}}
{{- $ext := .Values.externalDatabase -}}
{{- $_ := set $out "owner" (dict "user" $db.username "secret" $ext.existingSecret "key" $ext.existingSecretPasswordKey) -}}
{{- with $ext.admin.existingSecret -}}
{{- $_ := set $out "admin" (dict "userSecret" . "userKey" $ext.admin.usernameKey "secret" . "key" $ext.admin.passwordKey) -}}
{{- end -}}
{{- range $keys -}}
{{- if (index $.Values .).enabled -}}
{{- $name := get $ext.roles . -}}
{{- if not $name -}}
{{- fail (printf "externalDatabase.roles.%s is empty: with postgresql.enabled=false every service logs in with a role of its own; create a Secret with keys %s (the role's name) and %s (its password) and set externalDatabase.roles.%s to its name (migrate creates the role when externalDatabase.admin.existingSecret is set, else it must exist)" . $ext.roles.usernameKey $ext.roles.passwordKey .) -}}
{{- end -}}
{{- $_ := set $out.services . (dict "userSecret" $name "userKey" $ext.roles.usernameKey "secret" $name "key" $ext.roles.passwordKey) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $kc := .Values.keycloak -}}
{{- if and $kc.enabled (not $kc.database.host) $out.admin -}}
{{- $login := include "iot.keycloak.database" . | fromJson -}}
{{- if and $pg.enabled (or (eq $login.username $pg.auth.username) (has $login.username (values (include "iot.database.roleNames" . | fromJson)))) -}}
{{- fail (printf "keycloak.database.username %q is already the name of another of the database's roles: Keycloak needs a role of its own (e.g. keycloak)" $login.username) -}}
{{- end -}}
{{- $_ := set $out "keycloak" (dict "user" $login.username "secret" $login.secretName "key" $login.secretKey "database" $login.database) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
Keycloak's database as JSON {host, port, username, database, secretName, secretKey}: its own
keycloak.database fields over the services' database server. Keycloak has a role of its own:
on the in-chart PostgreSQL `keycloak` (password in iot.database.rolesSecret, key keycloak)
unless keycloak.database says otherwise; anywhere else keycloak.database.username and
existingSecret are required.
*/}}
{{- define "iot.keycloak.database" -}}
{{- $services := include "iot.database" . | fromJson -}}
{{- $kc := .Values.keycloak.database -}}
{{- $host := $kc.host | default $services.host -}}
{{- if not $host -}}
{{- fail "keycloak.database.host is empty and externalDatabase gives only a url: set keycloak.database.host (and port/username if they differ)" -}}
{{- end -}}
{{- $inChart := and .Values.postgresql.enabled (not $kc.host) -}}
{{- if and (not $inChart) (not (and $kc.username $kc.existingSecret)) -}}
{{- fail "keycloak.database.username and keycloak.database.existingSecret are required when Keycloak's database is not the in-chart PostgreSQL: Keycloak logs in with a role of its own (never the migration owner's); set both (migrate creates the role and database when externalDatabase.admin.existingSecret is set and keycloak.database.host is empty, else they must exist)" -}}
{{- end -}}
{{- $db := dict "host" $host "port" (int ($kc.port | default $services.port)) "username" ($kc.username | default "keycloak") "database" $kc.name -}}
{{- $_ := set $db "secretName" ($kc.existingSecret | default (include "iot.database.rolesSecret" .)) -}}
{{- $_ := set $db "secretKey" (ternary $kc.existingSecretPasswordKey "keycloak" (ne $kc.existingSecret "")) -}}
{{- toJson $db -}}
{{- end -}}
