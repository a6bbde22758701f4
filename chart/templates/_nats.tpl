{{/*
NATS with JetStream: ConfigMap (nats.conf) + StatefulSet with a PVC + Service.
Renders the one object named by `object` (Helm 4 keeps a blank line inside multi-document
template files, so every object has a template file of its own). Args: root, object.
*/}}
{{- define "iot.nats.manifest" -}}
{{- $object := .object }}
{{- with .root.Values.nats }}
{{- if .enabled }}
{{- $root := $.root }}
{{- $ctx := dict "root" $root "component" "nats" "version" .image.tag }}
{{- $name := include "iot.componentName" $ctx }}
{{- $ports := list (dict "name" "client" "containerPort" 4222 "protocol" "TCP") (dict "name" "monitor" "containerPort" 8222 "protocol" "TCP") }}
{{- if .mqtt.enabled }}
{{- $ports = append $ports (dict "name" "mqtt" "containerPort" (int .mqtt.port) "protocol" "TCP") }}
{{- end }}
{{- if eq $object "ConfigMap" }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $name }}
  labels:
    {{- include "iot.labels" $ctx | nindent 4 }}
data:
  nats.conf: |
    # server_name must be stable for JetStream (and is required by MQTT): the StatefulSet pod name.
    server_name: $POD_NAME
    listen: 0.0.0.0:4222
    # Monitoring (health endpoints for the probes and `helm test`; read-only).
    http_port: 8222
    # Lame-duck mode (entered by the preStop hook): stop accepting, wait the grace period, then
    # close the clients spread over the rest of the duration, then exit (nats.lameDuck).
    lame_duck_duration: {{ .lameDuck.durationSeconds }}s
    lame_duck_grace_period: {{ .lameDuck.gracePeriodSeconds }}s
    pid_file: {{ include "iot.nats.pidFile" . }}
    jetstream {
      store_dir: /data
      max_file_store: {{ .jetstream.maxFileStore }}
    }
    {{- if .mqtt.enabled }}
    mqtt {
      listen: 0.0.0.0:{{ .mqtt.port }}
    }
    {{- end }}
{{- end }}
{{- if eq $object "StatefulSet" }}
{{- include "iot.nats.guard.lameDuck" . }}
{{- /* stream limits are not in nats.conf (the services apply them): no restart for them */}}
{{ include "iot.workload.header" (merge (dict "kind" "StatefulSet" "replicas" 1 "key" "nats" "values" . "annotations" (include "iot.checksums" (dict "root" $root "objects" (list (dict "name" "nats-config" "template" "iot.nats.manifest" "object" "ConfigMap"))) | fromJson)) $ctx) }}
    spec:
      {{- include "iot.thirdParty.podFields" (merge (dict "key" "nats" "values" .) $ctx) | nindent 6 }}
      containers:
        - name: nats
          {{- include "iot.thirdParty.containerFields" (dict "root" $root "key" "nats" "values" . "preStop" (include "iot.nats.preStop" . | fromJson)) | nindent 10 }}
          {{- include "iot.diagnostic.process" (dict "root" $root "args" (list "--config" "/etc/nats/nats.conf")) | nindent 10 }}
          ports:
            {{- toYaml $ports | nindent 12 }}
          env:
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
          {{- with include "iot.probes.render" (dict "root" $root "key" "nats" "probes" .probes "ports" $ports) }}
          {{- . | nindent 10 }}
          {{- end }}
          volumeMounts:
            - name: config
              mountPath: /etc/nats
              readOnly: true
            - name: jetstream
              mountPath: /data
            - name: pid
              mountPath: {{ include "iot.nats.pidFile" . | dir }}
      volumes:
        - name: config
          configMap:
            name: {{ $name }}
        - name: pid
          emptyDir:
            sizeLimit: 1Mi
  volumeClaimTemplates:
    - apiVersion: v1
      kind: PersistentVolumeClaim
      metadata:
        name: jetstream
        labels:
          {{- include "iot.selectorLabels" $ctx | nindent 10 }}
      spec:
        accessModes: ["ReadWriteOnce"]
        {{- with .jetstream.storageClassName }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ .jetstream.storageSize }}
{{- end }}
{{- if eq $object "Service" }}
{{- /* monitor: read-only health and statistics, for `helm test` (templates/tests/nats-healthz.yaml) */}}
{{- $servicePorts := list (dict "name" "client" "port" .service.port "targetPort" "client") (dict "name" "monitor" "port" 8222 "targetPort" "monitor") }}
{{- if .mqtt.enabled }}
{{- $servicePorts = append $servicePorts (dict "name" "mqtt" "port" .mqtt.port "targetPort" "mqtt") }}
{{- end }}
{{ include "iot.service" (merge (dict "ports" $servicePorts) $ctx) }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Where nats-server writes its pid (an emptyDir), for the lame-duck signal. Args: nats values. */}}
{{- define "iot.nats.pidFile" -}}/var/run/nats/nats.pid{{- end -}}

{{/*
The preStop hook of NATS (a LifecycleHandler, JSON): signal the server into lame-duck mode. The
hook returns at once; the server then ignores the kubelet's SIGTERM and exits by itself at the
end of nats.lameDuck.durationSeconds. Args: nats values.
*/}}
{{- define "iot.nats.preStop" -}}
{{- dict "exec" (dict "command" (list "nats-server" "--signal" (printf "ldm=%s" (include "iot.nats.pidFile" .)))) | toJson -}}
{{- end -}}

{{/*
Fails unless lame-duck mode fits: its grace period below its duration (nats-server refuses
otherwise), and the pod's grace period above the duration plus the margin, or the kubelet kills
NATS before it has closed its clients. Args: nats values.
*/}}
{{- define "iot.nats.guard.lameDuck" -}}
{{- $duration := int .lameDuck.durationSeconds -}}
{{- $grace := int .lameDuck.gracePeriodSeconds -}}
{{- if ge $grace $duration -}}
{{- fail (printf "nats.lameDuck.gracePeriodSeconds (%d) must be below nats.lameDuck.durationSeconds (%d): lower the grace period or raise the duration" $grace $duration) -}}
{{- end -}}
{{- $margin := include "iot.graceMargin" . | int -}}
{{- include "iot.guard.gracePeriod" (dict "where" "nats.terminationGracePeriodSeconds" "grace" .terminationGracePeriodSeconds "needed" (add $duration $margin) "why" (printf "nats.lameDuck.durationSeconds + %d s margin, or the kubelet kills NATS in lame-duck mode" $margin)) -}}
{{- end -}}
