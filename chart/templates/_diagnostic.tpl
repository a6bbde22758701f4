{{/*
diagnosticMode: for debugging a crash loop, every workload keeps its pod (env, volumes,
Secrets, security context) but runs diagnosticMode.command/args instead of its process, with no
probes (iot.probes.render leaves them out) and without the services' `migrate` init containers,
so the pod stays up for `kubectl exec`.
*/}}

{{/* "true" when diagnosticMode is on, "" otherwise. Args: root. */}}
{{- define "iot.diagnostic.enabled" -}}
{{- if .root.Values.diagnosticMode.enabled -}}true{{- end -}}
{{- end -}}

{{/*
The `command` and `args` fields of a container: its own (either may be absent: the image's
entrypoint or cmd then applies), or diagnosticMode's in diagnostic mode. Renders nothing when
there is neither. Args: root; optional command, args (lists).
*/}}
{{- define "iot.diagnostic.process" -}}
{{- $process := dict "command" .command "args" .args -}}
{{- if include "iot.diagnostic.enabled" . -}}
{{- $process = dict "command" .root.Values.diagnosticMode.command "args" .root.Values.diagnosticMode.args -}}
{{- end -}}
{{- $lines := list -}}
{{- range $field := list "command" "args" -}}
{{- with get $process $field -}}
{{- $lines = append $lines (printf "%s: %s" $field (toJson .)) -}}
{{- end -}}
{{- end -}}
{{- join "\n" $lines -}}
{{- end -}}
