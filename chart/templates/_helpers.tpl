{{/*
Names, labels, images and security contexts shared by every workload. One concern per template.
*/}}

{{/* Prefix of every resource name: fullnameOverride, else the release name. */}}
{{- define "iot.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of one component's resources. Args: root, component (the label value, e.g. ui-iot). */}}
{{- define "iot.componentName" -}}
{{- printf "%s-%s" (include "iot.fullname" .root) .component -}}
{{- end -}}

{{/* Labels that select one component's pods. Args: root, component. */}}
{{- define "iot.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
The standard labels of every object, then global.commonLabels. Args: root, component, version
(the image tag).
*/}}
{{- define "iot.labels" -}}
{{ include "iot.selectorLabels" . }}
app.kubernetes.io/version: {{ .version | quote }}
app.kubernetes.io/part-of: {{ .root.Chart.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- include "iot.metadata.commonLabels" .root }}
{{- end -}}

{{/* Pod-level security context from a component's securityContext values. */}}
{{- define "iot.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .runAsUser }}
runAsGroup: {{ .runAsGroup }}
fsGroup: {{ .fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security context from a component's securityContext values. */}}
{{- define "iot.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .runAsUser }}
runAsGroup: {{ .runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ .readOnlyRootFilesystem }}
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Fails unless a pod's grace period covers what must happen inside it after SIGTERM.
Args: where (values path of the grace period), grace, needed (seconds), why (what `needed` is).
*/}}
{{- define "iot.guard.gracePeriod" -}}
{{- if lt (int .grace) (int .needed) -}}
{{- fail (printf "%s (%d) is too short: it must be at least %d (%s); raise %s or shorten the drain" .where (int .grace) (int .needed) .why .where) -}}
{{- end -}}
{{- end -}}

{{/* Seconds the chart adds to every drain budget for the process to exit after its last step. */}}
{{- define "iot.graceMargin" -}}5{{- end -}}

{{/*
Fields shared by the pod spec of every third-party workload: no service-account token, the pod
security context, and a grace period checked against the preStop delay (one replica: no default
spread). Args: root, component, key, values.
*/}}
{{- define "iot.thirdParty.podFields" -}}
{{- /* a component whose preStop is not a sleep (NATS: lame-duck mode) checks its own grace period */}}
{{- if hasKey .values "preStopSleepSeconds" -}}
{{- include "iot.guard.gracePeriod" (dict "where" (printf "%s.terminationGracePeriodSeconds" .key) "grace" .values.terminationGracePeriodSeconds "needed" (add .values.preStopSleepSeconds (include "iot.graceMargin" .)) "why" (printf "%s.preStopSleepSeconds + %s s margin" .key (include "iot.graceMargin" .))) -}}
{{- end -}}
{{ include "iot.pod.fields" (dict "root" .root "component" .component "key" .key "values" .values "maxReplicas" 1 "grace" .values.terminationGracePeriodSeconds "securityContext" .values.securityContext) }}
{{- end -}}

{{/*
Pod spec fields of every workload: no service-account token (nothing here talks to the API
server), no service links, the ServiceAccount, the image pull secrets, the grace period, the
scheduling fields (_scheduling.tpl) and the pod security context (the hardened default from
`securityContext`, merged with the podSecurityContext values). Args: root, component, key,
values (the component's values), maxReplicas, grace, securityContext.
*/}}
{{- define "iot.pod.fields" -}}
serviceAccountName: {{ include "iot.serviceAccountName" .root }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- include "iot.imagePullSecrets" . }}
terminationGracePeriodSeconds: {{ .grace }}
{{- include "iot.scheduling.fields" . }}
{{ include "iot.securityContext.pod" (dict "root" .root "values" .values "base" .securityContext) }}
{{- end -}}

{{/*
Container fields shared by every third-party container: image, security context, resources, and
a preStop sleep that lets endpoints drop the pod first, unless `preStop` (a LifecycleHandler) replaces
it. Args: root, key, values; optional preStop.
*/}}
{{- define "iot.thirdParty.containerFields" -}}
{{ include "iot.imageFields" (include "iot.image" (dict "root" .root "image" .values.image "where" (printf "%s.image" .key)) | fromJson) }}
{{ include "iot.securityContext.container" (dict "root" .root "values" .values "base" .values.securityContext) }}
resources:
  {{- toYaml .values.resources | nindent 2 }}
lifecycle:
  preStop:
    {{- with .preStop }}
    {{- toYaml . | nindent 4 }}
    {{- else }}
    sleep:
      seconds: {{ .values.preStopSleepSeconds }}
    {{- end }}
{{- end -}}

{{/*
A Service: ClusterIP, unless `service` (a component's service values: type, annotations,
nodePorts by port name, ...; see iot.exposure.serviceSpec) exposes it. Args: root, component,
version, ports (list of {name, port, targetPort}); optional service and key (its values path).
*/}}
{{- define "iot.service" -}}
{{- $service := .service | default dict -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "iot.componentName" . }}
  labels:
    {{- include "iot.labels" . | nindent 4 }}
  {{- with $service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- include "iot.exposure.serviceSpec" . | nindent 2 }}
  selector:
    {{- include "iot.selectorLabels" . | nindent 4 }}
  ports:
    {{- range .ports }}
    - name: {{ .name }}
      port: {{ .port }}
      targetPort: {{ .targetPort }}
      protocol: TCP
      {{- with get ($service.nodePorts | default dict) .name }}
      nodePort: {{ . }}
      {{- end }}
    {{- end }}
{{- end -}}

{{/*
The head of a Deployment or StatefulSet, down to its pod template's metadata: names, labels,
replicas (none when an autoscaler sets them), the rollout from the component's `strategy` /
`updateStrategy` values (_autoscaling.tpl), selector, pod labels and annotations
(iot.pod.metadata). The caller goes on with `    spec:`.
Args: root, component, version, kind, replicas, key, values (the component's values),
annotations (optional: the chart's own pod annotations, e.g. checksums).
*/}}
{{- define "iot.workload.header" -}}
apiVersion: apps/v1
kind: {{ .kind }}
metadata:
  name: {{ include "iot.componentName" . }}
  labels:
    {{- include "iot.labels" . | nindent 4 }}
spec:
  {{- if not (include "iot.autoscaling.enabled" .) }}
  replicas: {{ .replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  {{- if eq .kind "StatefulSet" }}
  serviceName: {{ include "iot.componentName" . }}
  {{- end }}
  {{- include "iot.rollout.strategy" . | nindent 2 }}
  selector:
    matchLabels:
      {{- include "iot.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      {{- include "iot.pod.metadata" . | nindent 6 }}
{{- end -}}
