{{/*
Where pods run, and with which security context: every workload's pod spec gets these fields
from one call, `iot.scheduling.fields`, which merges the global default (`global.<name>`) with
the component's override (`<key>.<name>`) the way the probe library does:
  nodeSelector, affinity           maps, merged key by key (a null removes an inherited key);
  tolerations,                     lists: the component's, if non-empty, replaces the global one;
  topologySpreadConstraints        ... and without either, a soft spread across nodes for a
                                   component that runs more than one replica;
  priorityClassName                the component's, else the global one.
Security contexts: the chart's hardened defaults (from `<key>.securityContext`, or
`services.securityContext`), then `global.podSecurityContext` / `global.containerSecurityContext`,
then the component's, merged key by key; a null removes a default (e.g. runAsUser: null lets
OpenShift's restricted SCC pick the user).
*/}}

{{/*
The default spread of a component with more than one replica: at most one pod more on any
node, as a preference (ScheduleAnyway), so a small cluster still schedules every replica.
Args: root, component.
*/}}
{{- define "iot.scheduling.defaultSpread" -}}
{{- $selector := include "iot.selectorLabels" . | fromYaml -}}
{{- list (dict "maxSkew" 1 "topologyKey" "kubernetes.io/hostname" "whenUnsatisfiable" "ScheduleAnyway" "labelSelector" (dict "matchLabels" $selector)) | toJson -}}
{{- end -}}

{{/*
The topology spread constraints of a component (JSON list): its own, else the global ones, else
the default spread when it can run more than one replica. A constraint without labelSelector
selects the component's own pods. Args: root, component, values, maxReplicas.
*/}}
{{- define "iot.scheduling.spread" -}}
{{- $global := (.root.Values.global | default dict).topologySpreadConstraints -}}
{{- $given := .values.topologySpreadConstraints | default $global -}}
{{- $selector := include "iot.selectorLabels" . | fromYaml -}}
{{- $out := list -}}
{{- if $given -}}
{{- range $given -}}
{{- $constraint := deepCopy . -}}
{{- if not .labelSelector -}}
{{- $_ := set $constraint "labelSelector" (dict "matchLabels" $selector) -}}
{{- end -}}
{{- $out = append $out $constraint -}}
{{- end -}}
{{- else if gt (int .maxReplicas) 1 -}}
{{- $out = include "iot.scheduling.defaultSpread" . | fromJsonArray -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
The scheduling fields of a pod spec (each only when set). Args: root, component, key, values
(the component's values), maxReplicas (the most replicas it can run).
*/}}
{{- define "iot.scheduling.fields" -}}
{{- $global := .root.Values.global | default dict -}}
{{- with include "iot.metadata.mergedMap" (dict "root" .root "values" .values "name" "nodeSelector") | fromJson }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with include "iot.metadata.mergedMap" (dict "root" .root "values" .values "name" "affinity") | fromJson }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations | default $global.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with include "iot.scheduling.spread" . | fromJsonArray }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName | default $global.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/*
A security context (JSON): the chart's hardened default, then global.<name>, then <key>.<name>,
merged key by key. Args: root, values (the component's), name (podSecurityContext or
containerSecurityContext), default (the hardened default as a map).
*/}}
{{- define "iot.securityContext.merged" -}}
{{- $global := get (.root.Values.global | default dict) .name | default dict -}}
{{- $withGlobal := include "iot.probes.deepMerge" (dict "base" .default "override" $global) | fromJson -}}
{{- include "iot.probes.deepMerge" (dict "base" $withGlobal "override" (get .values .name | default dict)) -}}
{{- end -}}

{{/*
A pod's `securityContext:` field. Args: root, values (the component's: podSecurityContext),
base (the values holding runAsUser, runAsGroup, fsGroup: `<key>.securityContext`).
*/}}
{{- define "iot.securityContext.pod" -}}
{{- $default := include "iot.podSecurityContext" .base | fromYaml -}}
securityContext:
  {{- toYaml (include "iot.securityContext.merged" (dict "root" .root "values" .values "name" "podSecurityContext" "default" $default) | fromJson) | nindent 2 }}
{{- end -}}

{{/*
A container's `securityContext:` field. Args: root, values (the component's:
containerSecurityContext), base (`<key>.securityContext`).
*/}}
{{- define "iot.securityContext.container" -}}
{{- $default := include "iot.containerSecurityContext" .base | fromYaml -}}
securityContext:
  {{- toYaml (include "iot.securityContext.merged" (dict "root" .root "values" .values "name" "containerSecurityContext" "default" $default) | fromJson) | nindent 2 }}
{{- end -}}
