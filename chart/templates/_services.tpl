{{/*
The one workload helper of the five Python services (templates/services.yaml ranges over them).
*/}}

{{/*
The five services: values key, component label, Python module, and whether they use NATS.
*/}}
{{- define "iot.services.catalog" -}}
- {key: ingest, component: ingest, module: services.ingest_iot, nats: true}
- {key: evaluator, component: evaluator, module: services.evaluator_iot, nats: false}
- {key: uiIot, component: ui-iot, module: services.ui_iot, nats: false}
- {key: opsWorker, component: ops-worker, module: services.ops_worker, nats: false}
- {key: routeDelivery, component: route-delivery, module: services.route_delivery, nats: true}
{{- end -}}

{{/* The container port every service serves /health and /ready on. */}}
{{- define "iot.services.healthPort" -}}8080{{- end -}}

{{/* Environment of every service process and of its `migrate` init container. Args: root. */}}
{{- define "iot.services.baseEnv" -}}
{{ include "iot.database.env" . }}
- name: LOG_LEVEL
  value: {{ .root.Values.services.logLevel | quote }}
{{- end -}}

{{/* Environment of one service's main container. Args: root, entry (catalog entry), values. */}}
{{- define "iot.services.env" -}}
{{- $svc := .root.Values.services -}}
{{ include "iot.services.baseEnv" . }}
- name: HEALTH_PORT
  value: {{ include "iot.services.healthPort" . | quote }}
- name: DRAIN_DELAY_SECONDS
  value: {{ $svc.drainDelaySeconds | quote }}
- name: SHUTDOWN_TIMEOUT_SECONDS
  value: {{ $svc.shutdownTimeoutSeconds | quote }}
{{- if .entry.nats }}
- name: NATS_URL
  value: {{ printf "nats://%s:%d" (include "iot.componentName" (dict "root" .root "component" "nats")) (int .root.Values.nats.service.port) | quote }}
{{- end }}
{{- range $name, $value := .values.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with .values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
One object of one service: its Deployment, its PodDisruptionBudget (only with more than one
replica) or its Service (only uiIot has one: nothing outside the other pods talks to them).
Every object has a template file of its own (Helm 4 keeps a blank line inside multi-document
template files). Args: root, key (values key), object (kind).
*/}}
{{- define "iot.services.manifest" -}}
{{- $root := .root -}}
{{- $key := .key -}}
{{- $entry := dict -}}
{{- range include "iot.services.catalog" . | fromYamlArray -}}
{{- if eq .key $key }}{{ $entry = . }}{{ end -}}
{{- end -}}
{{- $values := index $root.Values $key -}}
{{- if $values.enabled -}}
{{- $svc := $root.Values.services -}}
{{- $image := include "iot.image" (dict "root" $root "image" $values.image "fallback" $svc.image) | fromJson -}}
{{- $ctx := dict "root" $root "component" $entry.component "version" $image.tag -}}
{{- $ports := list (dict "name" "health" "containerPort" (include "iot.services.healthPort" . | int) "protocol" "TCP") -}}
{{- $margin := include "iot.graceMargin" . | int -}}
{{- include "iot.guard.gracePeriod" (dict "where" "services.terminationGracePeriodSeconds" "grace" $svc.terminationGracePeriodSeconds "needed" (add $svc.drainDelaySeconds $svc.shutdownTimeoutSeconds $margin) "why" (printf "services.drainDelaySeconds + services.shutdownTimeoutSeconds + %d s margin" $margin)) -}}
{{- if eq .object "Deployment" }}
{{ include "iot.workload.header" (merge (dict "kind" "Deployment" "replicas" $values.replicas) $ctx) }}
    spec:
      {{- include "iot.pod.fields" (dict "grace" $svc.terminationGracePeriodSeconds "securityContext" $svc.securityContext) | nindent 6 }}
      initContainers:
        - name: migrate
          {{- include "iot.imageFields" $image | nindent 10 }}
          command: ["python", "-m", "services.migrate"]
          env:
            {{- include "iot.services.baseEnv" . | nindent 12 }}
            - name: MIGRATE_WAIT_SECONDS
              value: {{ $svc.migrate.waitSeconds | quote }}
          securityContext:
            {{- include "iot.containerSecurityContext" $svc.securityContext | nindent 12 }}
          resources:
            {{- toYaml $svc.migrate.resources | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      containers:
        - name: {{ $entry.component }}
          {{- include "iot.imageFields" $image | nindent 10 }}
          command: ["python", "-m", {{ $entry.module | quote }}]
          ports:
            {{- toYaml $ports | nindent 12 }}
          env:
            {{- include "iot.services.env" (dict "root" $root "entry" $entry "values" $values) | nindent 12 }}
          {{- include "iot.probes.render" (dict "root" $root "key" $key "probes" $values.probes "ports" $ports) | nindent 10 }}
          securityContext:
            {{- include "iot.containerSecurityContext" $svc.securityContext | nindent 12 }}
          resources:
            {{- toYaml $values.resources | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
{{- else if eq .object "PodDisruptionBudget" }}
{{- include "iot.pdb" (merge (dict "replicas" $values.replicas) $ctx) }}
{{- else if and (eq .object "Service") $values.service }}
{{- include "iot.service" (merge (dict "ports" (list (dict "name" "http" "port" $values.service.port "targetPort" "health"))) $ctx) }}
{{- end }}
{{- end -}}
{{- end -}}
