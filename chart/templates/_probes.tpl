{{/*
The probe library. Every workload renders its probes with one call:

  {{- include "iot.probes.render" (dict "root" $ "key" "ingest" "probes" .Values.ingest.probes "ports" $ports) | nindent 10 }}

which, for each of liveness, readiness and startup, merges the global default
(.Values.probes.<kind>) with the component's override (<key>.probes.<kind>), drops disabled
probes, resolves named ports against the container's declared ports, checks the guards and
renders `livenessProbe:` / `readinessProbe:` / `startupProbe:`. Each template below does one of
those steps. Merged probes travel between templates as JSON (include can only return text).
*/}}

{{/* The probe kinds, in render order, with their Kubernetes field names. */}}
{{- define "iot.probes.kinds" -}}
{{- dict "liveness" "livenessProbe" "readiness" "readinessProbe" "startup" "startupProbe" | toJson -}}
{{- end -}}

{{/* The handler fields of a Kubernetes probe; a rendered probe carries exactly one. */}}
{{- define "iot.probes.handlerNames" -}}
{{- list "exec" "grpc" "httpGet" "tcpSocket" | toJson -}}
{{- end -}}

{{/* The handlers named in a probe map, as a JSON list. Args: probe. */}}
{{- define "iot.probes.handlersOf" -}}
{{- $found := list -}}
{{- range $name := include "iot.probes.handlerNames" . | fromJsonArray -}}
{{- if and (hasKey $.probe $name) (not (kindIs "invalid" (get $.probe $name))) -}}
{{- $found = append $found $name -}}
{{- end -}}
{{- end -}}
{{- toJson $found -}}
{{- end -}}

{{/*
Recursive merge of `override` into `base` (JSON). Maps merge key by key; anything else in the
override (scalars, lists, false, 0) replaces the base value; a null removes the key. Written by
hand because sprig's merge/mergeOverwrite skip "empty" values such as false and 0.
*/}}
{{- define "iot.probes.deepMerge" -}}
{{- $out := deepCopy (.base | default dict) -}}
{{- range $key, $value := .override -}}
{{- if kindIs "invalid" $value -}}
{{- $_ := unset $out $key -}}
{{- else if and (kindIs "map" $value) (kindIs "map" (get $out $key)) -}}
{{- $_ := set $out $key (include "iot.probes.deepMerge" (dict "base" (get $out $key) "override" $value) | fromJson) -}}
{{- else -}}
{{- $_ := set $out $key $value -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
A component's probe of one kind: its override deep-merged over the global default (JSON).
An override that names a handler other than the default's replaces the default's handler, so
the result never carries two handlers; an override naming two handlers fails.
Args: defaults, override, where (values path of the override, for messages).
*/}}
{{- define "iot.probes.merge" -}}
{{- $override := .override | default dict -}}
{{- $named := include "iot.probes.handlersOf" (dict "probe" $override) | fromJsonArray -}}
{{- if gt (len $named) 1 -}}
{{- fail (printf "%s names %d handlers (%s) but a probe takes exactly one: keep one and set the handler you replace to null (e.g. --set %s.%s=null)" .where (len $named) (join ", " $named) .where (last $named)) -}}
{{- end -}}
{{- $base := deepCopy (.defaults | default dict) -}}
{{- if $named -}}
{{- range $handler := include "iot.probes.handlerNames" . | fromJsonArray -}}
{{- if ne $handler (first $named) -}}
{{- $_ := unset $base $handler -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- include "iot.probes.deepMerge" (dict "base" $base "override" $override) -}}
{{- end -}}

{{/*
"true" if a merged probe is enabled, "" if not. A missing `enabled` means enabled; an explicit
false stays false (no `default true .enabled`, which turns false into true). Args: probe.
*/}}
{{- define "iot.probes.isEnabled" -}}
{{- if or (not (hasKey .probe "enabled")) (eq (toString .probe.enabled) "true") -}}true{{- end -}}
{{- end -}}

{{/*
A probe port as a number: numbers (and numeric strings) pass through, a name must be one of the
container's declared ports and becomes its containerPort. Args: port, ports, where.
*/}}
{{- define "iot.probes.resolvePort" -}}
{{- $port := .port -}}
{{- if kindIs "invalid" $port -}}
{{- fail (printf "%s.port is missing: set it to a port number or to the name of a port the container declares" .where) -}}
{{- else if and (kindIs "string" $port) (not (regexMatch "^[0-9]+$" $port)) -}}
{{- $resolved := "" -}}
{{- $declared := list -}}
{{- range .ports -}}
{{- $declared = append $declared (printf "%s=%v" .name .containerPort) -}}
{{- if eq .name $port -}}{{- $resolved = toString .containerPort -}}{{- end -}}
{{- end -}}
{{- if not $resolved -}}
{{- fail (printf "%s.port %q is not a port the container declares (%s): use one of those names or a port number" .where $port (join ", " $declared)) -}}
{{- end -}}
{{- $resolved -}}
{{- else -}}
{{- $port | int -}}
{{- end -}}
{{- end -}}

{{/* A merged probe with the port of its handler resolved to a number (JSON). Args: probe, ports, where. */}}
{{- define "iot.probes.withResolvedPort" -}}
{{- $probe := deepCopy .probe -}}
{{- range $handler := list "grpc" "httpGet" "tcpSocket" -}}
{{- if hasKey $probe $handler -}}
{{- $fields := get $probe $handler | default dict -}}
{{- $port := include "iot.probes.resolvePort" (dict "port" (get $fields "port") "ports" $.ports "where" (printf "%s.%s" $.where $handler)) -}}
{{- $_ := set $fields "port" ($port | int) -}}
{{- $_ := set $probe $handler $fields -}}
{{- end -}}
{{- end -}}
{{- toJson $probe -}}
{{- end -}}

{{/*
Guards on one enabled, merged probe. Args: probe, kind, where. Each failure names the field and
what to change.
*/}}
{{- define "iot.probes.validate" -}}
{{- $p := .probe -}}
{{- $handlers := include "iot.probes.handlersOf" (dict "probe" $p) | fromJsonArray -}}
{{- if ne (len $handlers) 1 -}}
{{- fail (printf "%s has %d handlers (%s): give it exactly one of exec, grpc, httpGet, tcpSocket" .where (len $handlers) (join ", " $handlers)) -}}
{{- end -}}
{{- if and (ne .kind "readiness") (hasKey $p "successThreshold") (ne (int $p.successThreshold) 1) -}}
{{- fail (printf "%s.successThreshold is %d but Kubernetes accepts only 1 for %s probes: set it to 1 or remove it" .where (int $p.successThreshold) .kind) -}}
{{- end -}}
{{- $timeout := int (ternary $p.timeoutSeconds 1 (hasKey $p "timeoutSeconds")) -}}
{{- $period := int (ternary $p.periodSeconds 10 (hasKey $p "periodSeconds")) -}}
{{- if ge $timeout $period -}}
{{- fail (printf "%s.timeoutSeconds (%d) must be below periodSeconds (%d): lower %s.timeoutSeconds or raise %s.periodSeconds" .where $timeout $period .where .where) -}}
{{- end -}}
{{- if and (eq .kind "readiness") (hasKey $p "terminationGracePeriodSeconds") -}}
{{- fail (printf "%s.terminationGracePeriodSeconds is set but Kubernetes rejects it on readiness probes: remove it (set the pod's grace period instead)" .where) -}}
{{- end -}}
{{- end -}}

{{/*
Liveness must not be more aggressive than readiness: a slow dependency makes a pod NotReady
long before it could restart it. Args: liveness, readiness (merged, enabled), where.
*/}}
{{- define "iot.probes.validateLivenessVsReadiness" -}}
{{- $live := mul (int (.liveness.periodSeconds | default 10)) (int (.liveness.failureThreshold | default 3)) -}}
{{- $ready := mul (int (.readiness.periodSeconds | default 10)) (int (.readiness.failureThreshold | default 3)) -}}
{{- if lt $live $ready -}}
{{- fail (printf "%s.liveness periodSeconds x failureThreshold (%d s) is below %s.readiness's (%d s): a slow dependency would restart pods before taking them out of service; raise liveness periodSeconds or failureThreshold, or lower readiness's" .where $live .where $ready) -}}
{{- end -}}
{{- end -}}

{{/*
The public entry point: the probes of one container, as Kubernetes container fields.
Args: root, key (the component's values key, e.g. ingest), probes (its overrides), ports (the
container's declared ports: list of {name, containerPort}).
*/}}
{{- define "iot.probes.render" -}}
{{- $enabled := dict -}}
{{- range $kind, $field := include "iot.probes.kinds" . | fromJson -}}
{{- $where := printf "%s.probes.%s" $.key $kind -}}
{{- $merged := include "iot.probes.merge" (dict "defaults" (get $.root.Values.probes $kind) "override" (get ($.probes | default dict) $kind) "where" $where) | fromJson -}}
{{- if include "iot.probes.isEnabled" (dict "probe" $merged) -}}
{{- $probe := include "iot.probes.withResolvedPort" (dict "probe" (omit $merged "enabled") "ports" $.ports "where" $where) | fromJson -}}
{{- include "iot.probes.validate" (dict "probe" $probe "kind" $kind "where" $where) -}}
{{- $_ := set $enabled $kind $probe -}}
{{- end -}}
{{- end -}}
{{- if and (hasKey $enabled "liveness") (hasKey $enabled "readiness") -}}
{{- include "iot.probes.validateLivenessVsReadiness" (dict "liveness" $enabled.liveness "readiness" $enabled.readiness "where" (printf "%s.probes" .key)) -}}
{{- end -}}
{{- $fields := dict -}}
{{- range $kind, $field := include "iot.probes.kinds" . | fromJson -}}
{{- if hasKey $enabled $kind -}}
{{- $_ := set $fields $field (get $enabled $kind) -}}
{{- end -}}
{{- end -}}
{{- /* diagnosticMode: the guards above still ran; the probes are left out */}}
{{- if not (include "iot.diagnostic.enabled" .) -}}
{{- with $fields -}}
{{- toYaml . -}}
{{- end -}}
{{- end -}}
{{- end -}}
