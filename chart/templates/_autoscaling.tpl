{{/*
How many pods a component runs and how they may be taken down: the HorizontalPodAutoscaler
(ingest, uiIot, routeDelivery; off by default), the PodDisruptionBudget and the rollout strategy.
One concern per template.
*/}}

{{/* "true" when a component's values switch its HorizontalPodAutoscaler on, "" if not. Args: values. */}}
{{- define "iot.autoscaling.enabled" -}}
{{- if and .values.autoscaling .values.autoscaling.enabled -}}true{{- end -}}
{{- end -}}

{{/* The fewest replicas a component runs: autoscaling.minReplicas when autoscaled, else replicas. Args: values. */}}
{{- define "iot.autoscaling.minReplicas" -}}
{{- if include "iot.autoscaling.enabled" . -}}{{ .values.autoscaling.minReplicas }}{{- else -}}{{ .values.replicas }}{{- end -}}
{{- end -}}

{{/* The most replicas a component runs: autoscaling.maxReplicas when autoscaled, else replicas. Args: values. */}}
{{- define "iot.autoscaling.maxReplicas" -}}
{{- if include "iot.autoscaling.enabled" . -}}{{ .values.autoscaling.maxReplicas }}{{- else -}}{{ .values.replicas }}{{- end -}}
{{- end -}}

{{/*
Fails on an autoscaler Kubernetes would reject or that could never act: minReplicas above
maxReplicas, or no utilization target at all. Args: key, autoscaling.
*/}}
{{- define "iot.guard.autoscaling" -}}
{{- $a := .autoscaling -}}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) -}}
{{- fail (printf "%s.autoscaling.minReplicas (%d) is above maxReplicas (%d): lower %s.autoscaling.minReplicas or raise %s.autoscaling.maxReplicas" .key (int $a.minReplicas) (int $a.maxReplicas) .key .key) -}}
{{- end -}}
{{- if and (not (int $a.targetCPUUtilizationPercentage)) (not (int $a.targetMemoryUtilizationPercentage)) -}}
{{- fail (printf "%s.autoscaling has no target: set %s.autoscaling.targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage above 0" .key .key) -}}
{{- end -}}
{{- end -}}

{{/*
The HorizontalPodAutoscaler (autoscaling/v2) of a Deployment, when its autoscaling is on:
utilization of the pods' requests, CPU and/or memory (a target of 0 leaves that resource out).
Args: root, component, version, key, values.
*/}}
{{- define "iot.autoscaling.hpa" -}}
{{- if include "iot.autoscaling.enabled" . }}
{{- $a := .values.autoscaling }}
{{- include "iot.guard.autoscaling" (dict "key" .key "autoscaling" $a) }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "iot.componentName" . }}
  labels:
    {{- include "iot.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "iot.componentName" . }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    {{- range $resource := list "cpu" "memory" }}
    {{- $target := int (get $a (printf "target%sUtilizationPercentage" (ternary "CPU" "Memory" (eq $resource "cpu")))) }}
    {{- if $target }}
    - type: Resource
      resource:
        name: {{ $resource }}
        target:
          type: Utilization
          averageUtilization: {{ $target }}
    {{- end }}
    {{- end }}
  {{- with $a.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* "true" when a PDB bound is given (0 counts; "" or a missing key does not). Args: value. */}}
{{- define "iot.pdb.isSet" -}}
{{- if not (or (kindIs "invalid" .value) (eq (toString .value) "")) -}}true{{- end -}}
{{- end -}}

{{/*
A PodDisruptionBudget for a component that runs more than one replica (replicas, or
autoscaling.minReplicas when autoscaled) and whose pdb.enabled is true: exactly one of
pdb.minAvailable / pdb.maxUnavailable. Nothing otherwise (one replica: a budget would either
protect nothing or block every node drain). Args: root, component, version, key, values.
*/}}
{{- define "iot.pdb" -}}
{{- $pdb := .values.pdb -}}
{{- if and $pdb.enabled (gt (int (include "iot.autoscaling.minReplicas" .)) 1) }}
{{- $min := include "iot.pdb.isSet" (dict "value" $pdb.minAvailable) }}
{{- $max := include "iot.pdb.isSet" (dict "value" $pdb.maxUnavailable) }}
{{- if eq $min $max }}
{{- fail (printf "%s.pdb needs exactly one of minAvailable and maxUnavailable (given: %s): set one and set the other to \"\" or null (e.g. --set %s.pdb.maxUnavailable=null)" .key (ternary "both" "neither" (eq $min "true")) .key) }}
{{- end }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "iot.componentName" . }}
  labels:
    {{- include "iot.labels" . | nindent 4 }}
spec:
  {{- if $min }}
  minAvailable: {{ $pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $pdb.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "iot.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/* "true" when a rollout bound is zero (0 or "0%"; a missing one is Kubernetes' 25 %). Args: value. */}}
{{- define "iot.rollout.isZero" -}}
{{- if and (not (kindIs "invalid" .value)) (has (toString .value) (list "0" "0%")) -}}true{{- end -}}
{{- end -}}

{{/*
The rollout field of a workload from its values: a Deployment's `strategy` (RollingUpdate with
rollingUpdate.maxSurge/maxUnavailable, or Recreate) or a StatefulSet's `updateStrategy`
(RollingUpdate with rollingUpdate.partition/maxUnavailable, or OnDelete). rollingUpdate is
dropped for the other types, which take none. Args: kind, key, values.
*/}}
{{- define "iot.rollout.strategy" -}}
{{- $field := ternary "strategy" "updateStrategy" (eq .kind "Deployment") -}}
{{- $strategy := deepCopy (get .values $field) -}}
{{- if ne $strategy.type "RollingUpdate" -}}
{{- $_ := unset $strategy "rollingUpdate" -}}
{{- else if eq .kind "Deployment" -}}
{{- $rolling := $strategy.rollingUpdate | default dict -}}
{{- if and (include "iot.rollout.isZero" (dict "value" $rolling.maxSurge)) (include "iot.rollout.isZero" (dict "value" $rolling.maxUnavailable)) -}}
{{- fail (printf "%s.strategy.rollingUpdate has maxSurge and maxUnavailable both 0, so a rollout could never progress: raise one of them" .key) -}}
{{- end -}}
{{- end -}}
{{ $field }}:
  {{- toYaml $strategy | nindent 2 }}
{{- end -}}
