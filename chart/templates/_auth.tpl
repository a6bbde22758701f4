{{/*
Sign-in: the realm the chart imports into Keycloak (a ConfigMap mounted at
/opt/keycloak/data/import, read by `--import-realm`), and the token settings of ui_iot.
No users and no secrets here: the UI's client is public (authorization code + PKCE S256),
people and their roles are added in Keycloak (README "Sign-in (Keycloak)").
*/}}

{{/* The realm roles: one per kind of data the API serves, and the composite iot-viewer. */}}
{{- define "iot.auth.readRoles" -}}
{{- list "iot-devices-read" "iot-telemetry-read" "iot-alerts-read" | toJson -}}
{{- end -}}

{{/* Keycloak's path prefix, always ending in "/" ("/" or e.g. "/auth/"). Args: root. */}}
{{- define "iot.auth.keycloakPath" -}}
{{- printf "%s/" (trimSuffix "/" .root.Values.keycloak.httpRelativePath) -}}
{{- end -}}

{{/*
The issuer (`iss`) of the realm's tokens as browsers see it: uiIot.auth.issuerUrl; else from
keycloak.hostname (a full URL is taken as Keycloak's base URL, a bare host name gets https and
httpRelativePath); else Keycloak's Service name (only right for clients that reach Keycloak by
that name). Args: root.
*/}}
{{- define "iot.auth.issuerUrl" -}}
{{- $auth := .root.Values.uiIot.auth -}}
{{- $keycloak := .root.Values.keycloak -}}
{{- if $auth.issuerUrl -}}
{{- trimSuffix "/" $auth.issuerUrl -}}
{{- else if not $keycloak.enabled -}}
{{- fail "uiIot.auth.issuerUrl is required when keycloak.enabled is false: set it to your identity provider's issuer URL (or set uiIot.auth.enabled=false)" -}}
{{- else if regexMatch "^https?://" $keycloak.hostname -}}
{{- printf "%s/realms/%s" (trimSuffix "/" $keycloak.hostname) $keycloak.realm.name -}}
{{- else if $keycloak.hostname -}}
{{- printf "https://%s%srealms/%s" $keycloak.hostname (include "iot.auth.keycloakPath" .) $keycloak.realm.name -}}
{{- else -}}
{{- printf "http://%s:%v%srealms/%s" (include "iot.componentName" (dict "root" .root "component" "keycloak")) $keycloak.service.port (include "iot.auth.keycloakPath" .) $keycloak.realm.name -}}
{{- end -}}
{{- end -}}

{{/*
Where ui_iot fetches the realm's signing keys: uiIot.auth.jwksUrl; else Keycloak's Service inside
the cluster (not the issuer's public URL: no hairpin through the Ingress, no public DNS or
certificate needed for a pod); empty with keycloak disabled (ui_iot then uses the issuer's
/protocol/openid-connect/certs). Args: root.
*/}}
{{- define "iot.auth.jwksUrl" -}}
{{- $auth := .root.Values.uiIot.auth -}}
{{- $keycloak := .root.Values.keycloak -}}
{{- if $auth.jwksUrl -}}
{{- $auth.jwksUrl -}}
{{- else if $keycloak.enabled -}}
{{- printf "http://%s:%v%srealms/%s/protocol/openid-connect/certs" (include "iot.componentName" (dict "root" .root "component" "keycloak")) $keycloak.service.port (include "iot.auth.keycloakPath" .) $keycloak.realm.name -}}
{{- end -}}
{{- end -}}

{{/*
Redirect URIs of the UI's client: uiIot.auth.redirectUris; else `<scheme>://<host>/*` for every
host of uiIot's Ingress (https when a TLS entry lists the host) and HTTPRoute (https). Args: root.
*/}}
{{- define "iot.auth.redirectUris" -}}
{{- $ui := .root.Values.uiIot -}}
{{- $uris := list -}}
{{- if $ui.auth.redirectUris -}}
{{- $uris = $ui.auth.redirectUris -}}
{{- else -}}
{{- if $ui.ingress.enabled -}}
{{- $tlsHosts := list -}}
{{- range $ui.ingress.tls }}{{ $tlsHosts = concat $tlsHosts (.hosts | default list) }}{{ end -}}
{{- range $ui.ingress.hosts -}}
{{- if .host -}}
{{- $uris = append $uris (printf "%s://%s/*" (ternary "https" "http" (has .host $tlsHosts)) .host) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $ui.httpRoute.enabled -}}
{{- range $ui.httpRoute.hostnames -}}
{{- $uris = append $uris (printf "https://%s/*" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $uris | uniq | toJson -}}
{{- end -}}

{{/* The realm as Keycloak's import format (RealmRepresentation), JSON. Args: root. */}}
{{- define "iot.auth.realm" -}}
{{- $keycloak := .root.Values.keycloak -}}
{{- $auth := .root.Values.uiIot.auth -}}
{{- $read := include "iot.auth.readRoles" . | fromJsonArray -}}
{{- $roles := list
  (dict "name" "iot-devices-read" "description" "List devices and their status (GET /api/devices).")
  (dict "name" "iot-telemetry-read" "description" "Read a device's telemetry (GET /api/devices/{id}/telemetry).")
  (dict "name" "iot-alerts-read" "description" "Read alerts (GET /api/alerts).")
  (dict "name" "iot-viewer" "description" "Everything the UI shows: all three read roles." "composite" true "composites" (dict "realm" $read)) -}}
{{- $client := dict
  "clientId" $auth.clientId
  "name" "iot-platform UI"
  "description" "The UI's single-page sign-in: public client, authorization code with PKCE (S256) only."
  "enabled" true
  "protocol" "openid-connect"
  "publicClient" true
  "standardFlowEnabled" true
  "implicitFlowEnabled" false
  "directAccessGrantsEnabled" false
  "serviceAccountsEnabled" false
  "frontchannelLogout" true
  "consentRequired" false
  "fullScopeAllowed" true
  "redirectUris" (include "iot.auth.redirectUris" . | fromJsonArray)
  "webOrigins" ($auth.webOrigins | default (list "+"))
  "attributes" (dict "pkce.code.challenge.method" "S256" "post.logout.redirect.uris" "+")
  "protocolMappers" (list (dict
    "name" "api-audience"
    "protocol" "openid-connect"
    "protocolMapper" "oidc-audience-mapper"
    "consentRequired" false
    "config" (dict "included.custom.audience" $auth.audience "access.token.claim" "true" "id.token.claim" "false" "introspection.token.claim" "true"))) -}}
{{- dict
  "realm" $keycloak.realm.name
  "enabled" true
  "sslRequired" $keycloak.realm.sslRequired
  "registrationAllowed" false
  "loginWithEmailAllowed" true
  "resetPasswordAllowed" false
  "bruteForceProtected" true
  "accessTokenLifespan" $keycloak.realm.accessTokenLifespanSeconds
  "ssoSessionIdleTimeout" $keycloak.realm.ssoSessionIdleTimeoutSeconds
  "roles" (dict "realm" $roles)
  "clients" (list $client) | toPrettyJson -}}
{{- end -}}

{{/*
The realm ConfigMap (only with keycloak.enabled and keycloak.realm.import). Keycloak imports it
at start when the realm does not exist yet; an existing realm is left as it is (Keycloak's
IGNORE_EXISTING strategy), so edits made in the admin console survive restarts.
Args: root, object ("ConfigMap").
*/}}
{{- define "iot.auth.realmManifest" -}}
{{- $keycloak := .root.Values.keycloak -}}
{{- if and $keycloak.enabled $keycloak.realm.import (eq .object "ConfigMap") -}}
{{- $ctx := dict "root" .root "component" "keycloak" "version" $keycloak.image.tag -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "iot.componentName" $ctx }}-realm
  labels:
    {{- include "iot.labels" $ctx | nindent 4 }}
data:
  {{ $keycloak.realm.name }}-realm.json: |
    {{- include "iot.auth.realm" . | nindent 4 }}
{{- end -}}
{{- end -}}

{{/* "true" when Keycloak imports the chart's realm. Args: root. */}}
{{- define "iot.auth.importing" -}}
{{- if and .root.Values.keycloak.enabled .root.Values.keycloak.realm.import -}}true{{- end -}}
{{- end -}}

{{/* Keycloak's container args: `start`, plus `--import-realm` when it imports. Args: root. */}}
{{- define "iot.auth.keycloakArgs" -}}
{{- if include "iot.auth.importing" . -}}
{{- list "start" "--import-realm" | toJson -}}
{{- else -}}
{{- list "start" | toJson -}}
{{- end -}}
{{- end -}}

{{/* Keycloak's realm volume mount (nothing without an import). Args: root. */}}
{{- define "iot.auth.keycloakVolumeMounts" -}}
{{- if include "iot.auth.importing" . }}
- name: realm
  mountPath: /opt/keycloak/data/import
  readOnly: true
{{- end }}
{{- end -}}

{{/* Keycloak's realm volume (nothing without an import). Args: root. */}}
{{- define "iot.auth.keycloakVolumes" -}}
{{- if include "iot.auth.importing" . }}
- name: realm
  configMap:
    name: {{ include "iot.componentName" (dict "root" .root "component" "keycloak") }}-realm
{{- end }}
{{- end -}}

{{/* ui_iot's token settings (README "Sign-in (Keycloak)"). Args: root. */}}
{{- define "iot.auth.uiEnv" -}}
{{- $auth := .root.Values.uiIot.auth }}
- name: AUTH_ENABLED
  value: {{ $auth.enabled | toString | quote }}
{{- if $auth.enabled }}
- name: AUTH_ISSUER_URL
  value: {{ include "iot.auth.issuerUrl" . | quote }}
- name: AUTH_AUDIENCE
  value: {{ $auth.audience | quote }}
- name: AUTH_CLIENT_ID
  value: {{ $auth.clientId | quote }}
{{- with include "iot.auth.jwksUrl" . }}
- name: AUTH_JWKS_URL
  value: {{ . | quote }}
{{- end }}
- name: AUTH_LEEWAY_SECONDS
  value: {{ $auth.leewaySeconds | quote }}
{{- end }}
{{- end -}}
