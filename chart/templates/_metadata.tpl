{{/*
Metadata every workload shares: `global.commonLabels` on every object, pod labels and
annotations (global default, then the component's own, merged key by key; a null removes an
inherited key), the ServiceAccount. One concern per template.
*/}}

{{/* The label keys the chart sets itself; user labels must not replace them (selectors use them). */}}
{{- define "iot.metadata.chartLabelKeys" -}}
{{- list "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/component" "app.kubernetes.io/version" "app.kubernetes.io/part-of" "app.kubernetes.io/managed-by" "helm.sh/chart" | toJson -}}
{{- end -}}

{{/* Fails when user labels name a key the chart sets. Args: labels, where (values path). */}}
{{- define "iot.guard.userLabels" -}}
{{- range $key := include "iot.metadata.chartLabelKeys" . | fromJsonArray -}}
{{- if hasKey ($.labels | default dict) $key -}}
{{- fail (printf "%s.%s is a label the chart sets itself (its selectors use it): remove it from %s" $.where $key $.where) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* `global.commonLabels` as YAML lines (nothing when empty), for iot.labels. Args: root. */}}
{{- define "iot.metadata.commonLabels" -}}
{{- $labels := (.Values.global | default dict).commonLabels -}}
{{- include "iot.guard.userLabels" (dict "labels" $labels "where" "global.commonLabels") -}}
{{- with $labels }}
{{ toYaml . }}
{{- end -}}
{{- end -}}

{{/*
One map-valued pod setting of a component as JSON: `global.<name>` with `<key>.<name>` merged
over it key by key (a null in the component's map removes the inherited key).
Args: root, values (the component's values), name.
*/}}
{{- define "iot.metadata.mergedMap" -}}
{{- $global := get (.root.Values.global | default dict) .name | default dict -}}
{{- include "iot.probes.deepMerge" (dict "base" $global "override" (get .values .name | default dict)) -}}
{{- end -}}

{{/*
The `labels:` and (when any) `annotations:` of a pod template: the standard labels plus
`podLabels`, the chart's own annotations plus `podAnnotations` (the chart's win: they are
checksums the rollout depends on). Args: root, component, version, key, values, annotations.
*/}}
{{- define "iot.pod.metadata" -}}
{{- include "iot.guard.userLabels" (dict "labels" (.root.Values.global | default dict).podLabels "where" "global.podLabels") -}}
{{- include "iot.guard.userLabels" (dict "labels" .values.podLabels "where" (printf "%s.podLabels" .key)) -}}
{{- $podLabels := include "iot.metadata.mergedMap" (dict "root" .root "values" .values "name" "podLabels") | fromJson -}}
{{- $annotations := include "iot.metadata.mergedMap" (dict "root" .root "values" .values "name" "podAnnotations") | fromJson -}}
{{- $annotations = merge (deepCopy (.annotations | default dict)) $annotations -}}
labels:
  {{- include "iot.labels" . | nindent 2 }}
  {{- with $podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Name of the pods' ServiceAccount: serviceAccount.name, else the release's (created) or `default`. Args: root. */}}
{{- define "iot.serviceAccountName" -}}
{{- $sa := .Values.serviceAccount -}}
{{- if $sa.create -}}
{{- $sa.name | default (include "iot.fullname" .) -}}
{{- else -}}
{{- $sa.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/*
The ServiceAccount of every pod, when serviceAccount.create. Its token is never mounted (no
component talks to the API server); the annotations are for cloud workload identity. Args: root.
*/}}
{{- define "iot.serviceAccount" -}}
{{- if .root.Values.serviceAccount.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "iot.serviceAccountName" .root }}
  labels:
    {{- include "iot.labels" (dict "root" .root "component" "service-account" "version" .root.Chart.AppVersion) | nindent 4 }}
  {{- with .root.Values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
{{- end }}
{{- end -}}
