{{/*
Prometheus Operator scraping (values `metrics`): a PodMonitor, or a ServiceMonitor over one
headless Service. Each is rendered only when enabled and the cluster serves its CRD
(.Capabilities; `helm template` needs `--api-versions monitoring.coreos.com/v1/PodMonitor` or
`.../ServiceMonitor` to render it).
*/}}

{{/* "true" when either monitor is enabled: Keycloak's metrics are switched on with them. */}}
{{- define "iot.metrics.enabled" -}}
{{- if or .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled }}true{{ end -}}
{{- end -}}

{{/*
What is scraped, as JSON {components, endpoints}: the enabled Python services (port `health`,
/metrics), Keycloak (port `management`, /metrics) and EMQX (port `dashboard`,
/api/v5/prometheus/stats). Port names are unique to those containers, so an endpoint only ever
matches its own component's pods. Args: root.
*/}}
{{- define "iot.metrics.targets" -}}
{{- $root := . -}}
{{- $components := list -}}
{{- range include "iot.services.catalog" . | fromYamlArray -}}
{{- if (index $root.Values .key).enabled }}{{ $components = append $components .component }}{{ end -}}
{{- end -}}
{{- $endpoints := list -}}
{{- if $components -}}
{{- $endpoints = append $endpoints (dict "port" "health" "servicePort" (include "iot.services.healthPort" . | int) "path" "/metrics") -}}
{{- end -}}
{{- if .Values.keycloak.enabled -}}
{{- $components = append $components "keycloak" -}}
{{- $endpoints = append $endpoints (dict "port" "management" "servicePort" 9000 "path" "/metrics") -}}
{{- end -}}
{{- if .Values.emqx.enabled -}}
{{- $components = append $components "emqx" -}}
{{- $endpoints = append $endpoints (dict "port" "dashboard" "servicePort" 18083 "path" "/api/v5/prometheus/stats") -}}
{{- end -}}
{{- dict "components" $components "endpoints" $endpoints | toJson -}}
{{- end -}}

{{/* A Prometheus duration (schema: digits then ms, s, m or h) in milliseconds. Args: string. */}}
{{- define "iot.metrics.millis" -}}
{{- $number := regexFind "^[0-9]+" . | int -}}
{{- $unit := trimPrefix (regexFind "^[0-9]+" .) . -}}
{{- mul $number (get (dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000) $unit) -}}
{{- end -}}

{{/* Fails on settings Prometheus or the cluster would refuse. Args: root. */}}
{{- define "iot.metrics.guard" -}}
{{- $metrics := .Values.metrics -}}
{{- if and $metrics.serviceMonitor.enabled $metrics.podMonitor.enabled -}}
{{- fail "metrics.serviceMonitor.enabled and metrics.podMonitor.enabled are both true: each scrapes every pod, so every series would be collected twice; set one of them to false" -}}
{{- end -}}
{{- range $kind := list "serviceMonitor" "podMonitor" -}}
{{- $monitor := index $metrics $kind -}}
{{- if gt (include "iot.metrics.millis" $monitor.scrapeTimeout | int) (include "iot.metrics.millis" $monitor.interval | int) -}}
{{- fail (printf "metrics.%s.scrapeTimeout (%s) exceeds metrics.%s.interval (%s): Prometheus refuses it; lower the timeout or raise the interval" $kind $monitor.scrapeTimeout $kind $monitor.interval) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The scrape settings every endpoint shares. Args: monitor (its values), endpoint. */}}
{{- define "iot.metrics.endpoint" -}}
path: {{ .endpoint.path }}
scheme: http
interval: {{ .monitor.interval }}
scrapeTimeout: {{ .monitor.scrapeTimeout }}
{{- with .monitor.relabelings }}
relabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .monitor.metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Labels of a monitor object: the chart's, then the monitor's own. Args: root, monitor. */}}
{{- define "iot.metrics.labels" -}}
{{ include "iot.labels" (dict "root" .root "component" "metrics" "version" .root.Chart.AppVersion) }}
{{- with .monitor.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector of every pod of the release (components are told apart by port name). Args: root. */}}
{{- define "iot.metrics.releaseSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
The PodMonitor: every scraped pod, straight from its pod port (no Service needed). Args: root.
*/}}
{{- define "iot.metrics.podMonitor" -}}
{{- $root := . -}}
{{- $monitor := .Values.metrics.podMonitor -}}
{{- include "iot.metrics.guard" . -}}
{{- $targets := include "iot.metrics.targets" . | fromJson -}}
{{- if and $monitor.enabled (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PodMonitor") $targets.endpoints }}
apiVersion: monitoring.coreos.com/v1
kind: PodMonitor
metadata:
  name: {{ include "iot.componentName" (dict "root" . "component" "metrics") }}
  labels:
    {{- include "iot.metrics.labels" (dict "root" . "monitor" $monitor) | nindent 4 }}
spec:
  selector:
    matchLabels:
      {{- include "iot.metrics.releaseSelector" . | nindent 6 }}
    matchExpressions:
      - key: app.kubernetes.io/component
        operator: In
        values:
          {{- toYaml $targets.components | nindent 10 }}
  podTargetLabels:
    - app.kubernetes.io/component
  podMetricsEndpoints:
    {{- range $targets.endpoints }}
    - port: {{ .port }}
      {{- include "iot.metrics.endpoint" (dict "monitor" $monitor "endpoint" .) | nindent 6 }}
    {{- end }}
{{- end }}
{{- end -}}

{{/*
The ServiceMonitor and the headless Service it reads endpoints from: one Service selecting every
pod of the release, one named port per scraped container port (a pod without that port name
gets no endpoint on it), with not-ready pods published: a pod failing readiness is exactly
the one whose metrics are wanted. Args: root, object (Service or ServiceMonitor).
*/}}
{{- define "iot.metrics.serviceMonitor" -}}
{{- $root := .root -}}
{{- $monitor := $root.Values.metrics.serviceMonitor -}}
{{- include "iot.metrics.guard" $root -}}
{{- $targets := include "iot.metrics.targets" $root | fromJson -}}
{{- $ctx := dict "root" $root "component" "metrics" "version" $root.Chart.AppVersion -}}
{{- if and $monitor.enabled ($root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor") $targets.endpoints }}
{{- if eq .object "Service" }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "iot.componentName" $ctx }}
  labels:
    {{- include "iot.labels" $ctx | nindent 4 }}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector:
    {{- include "iot.metrics.releaseSelector" $root | nindent 4 }}
  ports:
    {{- range $targets.endpoints }}
    - name: {{ .port }}
      port: {{ .servicePort }}
      targetPort: {{ .port }}
      protocol: TCP
    {{- end }}
{{- else }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "iot.componentName" $ctx }}
  labels:
    {{- include "iot.metrics.labels" (dict "root" $root "monitor" $monitor) | nindent 4 }}
spec:
  selector:
    matchLabels:
      {{- include "iot.selectorLabels" $ctx | nindent 6 }}
  podTargetLabels:
    - app.kubernetes.io/component
  endpoints:
    {{- range $targets.endpoints }}
    - port: {{ .port }}
      {{- include "iot.metrics.endpoint" (dict "monitor" $monitor "endpoint" .) | nindent 6 }}
    {{- end }}
{{- end }}
{{- end }}
{{- end -}}
