{{/*
EMQX: ConfigMap (emqx.conf with the NATS bridge) + Secret + Deployment + Service.
Renders the one object named by `object` (Helm 4 keeps a blank line inside multi-document
template files, so every object has a template file of its own). Args: root, object.
*/}}
{{- define "iot.emqx.manifest" -}}
{{- $object := .object }}
{{- with .root.Values.emqx }}
{{- if .enabled }}
{{- $root := $.root }}
{{- $ctx := dict "root" $root "component" "emqx" "version" .image.tag }}
{{- $name := include "iot.componentName" $ctx }}
{{- $ports := list (dict "name" "mqtt" "containerPort" 1883 "protocol" "TCP") (dict "name" "dashboard" "containerPort" 18083 "protocol" "TCP") }}
{{- $tls := .tls.existingSecret }}
{{- if $tls }}
{{- $ports = append $ports (dict "name" "mqtts" "containerPort" 8883 "protocol" "TCP") }}
{{- else if .tls.verifyClients }}
{{- fail "emqx.tls.verifyClients is true, but MQTT over TLS is off: set emqx.tls.existingSecret to a Secret with tls.crt, tls.key and ca.crt, or set emqx.tls.verifyClients=false" }}
{{- else if .service.nodePorts.mqtts }}
{{- fail (printf "emqx.service.nodePorts.mqtts (%v) is set, but MQTT over TLS is off: set emqx.tls.existingSecret to a Secret with tls.crt and tls.key, or set emqx.service.nodePorts.mqtts=0" .service.nodePorts.mqtts) }}
{{- end }}
{{- $nats := dict "caSecret" "" "userSecret" "" }}
{{- $bridge := dict "user" "" "userSecret" "" "secret" "" }}
{{- if .bridgeToNats.enabled }}
{{- $nats = include "iot.nats" $root | fromJson }}
{{- $bridge = include "iot.nats.login" (dict "root" $root "role" "emqxBridge") | fromJson }}
{{- if and (not $nats.mqttPort) $root.Values.nats.enabled }}
{{- fail "emqx.bridgeToNats.enabled needs NATS's MQTT listener: set nats.enabled=true and nats.mqtt.enabled=true, or emqx.bridgeToNats.enabled=false" }}
{{- else if not $nats.mqttPort }}
{{- fail "emqx.bridgeToNats.enabled needs the MQTT listener of the external NATS, but externalNats.mqtt.port is 0: set externalNats.mqtt.port (and externalNats.mqtt.host when it is not the host of externalNats.url), or emqx.bridgeToNats.enabled=false" }}
{{- end }}
{{- end }}
{{- $secret := .auth.existingSecret | default $name }}
{{- if and (eq $object "Secret") (not .auth.existingSecret) }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ $name }}
  labels:
    {{- include "iot.labels" $ctx | nindent 4 }}
  {{- include "iot.secret.annotations" . | nindent 2 }}
type: Opaque
data:
  node-cookie: {{ include "iot.secret.value" (dict "root" $root "name" $name "key" "node-cookie" "given" .auth.nodeCookie) }}
  dashboard-password: {{ include "iot.secret.value" (dict "root" $root "name" $name "key" "dashboard-password" "given" .auth.dashboardPassword) }}
{{- end }}
{{- if eq $object "ConfigMap" }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $name }}
  labels:
    {{- include "iot.labels" $ctx | nindent 4 }}
data:
  emqx.conf: |
    node {
      data_dir = "data"
    }
    cluster {
      name = emqxcl
      discovery_strategy = manual
    }
    listeners.tcp.default {
      bind = "0.0.0.0:1883"
    }
    {{- include "iot.emqx.deviceAuth" . | nindent 4 }}
    {{- if $tls }}
    # MQTT over TLS with the certificate of the Secret {{ $tls }} (emqx.tls.existingSecret).
    listeners.ssl.default {
      enabled = true
      bind = "0.0.0.0:8883"
      ssl_options {
        certfile = "/opt/emqx/etc/tls/tls.crt"
        keyfile = "/opt/emqx/etc/tls/tls.key"
        {{- if .tls.verifyClients }}
        cacertfile = "/opt/emqx/etc/tls/ca.crt"
        verify = verify_peer
        fail_if_no_peer_cert = true
        {{- end }}
      }
    }
    {{- else }}
    # No TLS certificate given: no listener on 8883 (EMQX would otherwise serve its demo certificate).
    listeners.ssl.default {
      enabled = false
    }
    {{- end }}
    dashboard {
      listeners.http {
        bind = 18083
      }
    }
    {{- if include "iot.metrics.enabled" $root }}
    # /api/v5/prometheus/stats on the dashboard port, scraped without credentials (values
    # `metrics`): counters and gauges only, no configuration and no credentials.
    prometheus {
      enable_basic_auth = false
    }
    {{- end }}
    {{- if .bridgeToNats.enabled }}
    # Forward {{ .bridgeToNats.topic }} to NATS's MQTT listener (MQTT 3.1.1 = proto_ver v4).
    connectors.mqtt.nats {
      server = "{{ $nats.mqttHost }}:{{ $nats.mqttPort }}"
      proto_ver = "v4"
      pool_size = 4
      {{- if $bridge.secret }}
      # username and password: EMQX_CONNECTORS__MQTT__NATS__USERNAME/PASSWORD (the password from
      # the Secret {{ $bridge.secret }}).
      {{- end }}
      {{- if $nats.mqttTls }}
      ssl {
        enable = true
        verify = verify_peer
        cacertfile = "/opt/emqx/etc/nats-ca/ca.crt"
        server_name_indication = "{{ $nats.mqttHost }}"
      }
      {{- end }}
    }
    actions.mqtt.telemetry_to_nats {
      connector = nats
      parameters {
        topic = "${topic}"
        payload = "${payload}"
        qos = {{ .bridgeToNats.qos }}
        retain = false
      }
    }
    rule_engine.rules.telemetry_to_nats {
      sql = {{ printf "SELECT * FROM \"%s\"" .bridgeToNats.topic | quote }}
      actions = ["mqtt:telemetry_to_nats"]
    }
    {{- end }}
  {{- if .deviceAuth.enabled }}
  # Erlang terms, first match wins: a device publishes to telemetry/<its client id>, nothing else.
  acl.conf: |
    {allow, all, publish, ["telemetry/${clientid}"]}.
    {deny, all}.
  {{- end }}
{{- end }}
{{- if eq $object "Deployment" }}
{{ include "iot.workload.header" (merge (dict "kind" "Deployment" "replicas" 1 "key" "emqx" "values" . "annotations" (include "iot.checksums" (dict "root" $root "objects" (list (dict "name" "emqx-config" "template" "iot.emqx.manifest" "object" "ConfigMap") (dict "name" "emqx-secret" "template" "iot.emqx.manifest" "object" "Secret") (dict "name" "nats-secret" "template" "iot.nats.manifest" "object" "Secret"))) | fromJson)) $ctx) }}
    spec:
      {{- include "iot.thirdParty.podFields" (merge (dict "key" "emqx" "values" .) $ctx) | nindent 6 }}
      containers:
        - name: emqx
          {{- include "iot.thirdParty.containerFields" (dict "root" $root "key" "emqx" "values" .) | nindent 10 }}
          {{- with include "iot.diagnostic.process" (dict "root" $root) }}
          {{- . | nindent 10 }}
          {{- end }}
          ports:
            {{- toYaml $ports | nindent 12 }}
          env:
            # A node name per pod: the bridge's MQTT client ids derive from it, so a surge pod
            # does not take over the old pod's connections to NATS.
            - name: POD_IP
              valueFrom:
                fieldRef:
                  fieldPath: status.podIP
            - name: EMQX_NODE__NAME
              value: emqx@$(POD_IP)
            - name: EMQX_NODE__COOKIE
              valueFrom:
                secretKeyRef:
                  name: {{ $secret }}
                  key: node-cookie
            - name: EMQX_DASHBOARD__DEFAULT_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {{ $secret }}
                  key: dashboard-password
            {{- if $bridge.secret }}
            # The bridge's login to NATS's MQTT listener: the NATS user emqx-bridge (publish
            # telemetry.> only, MQTT connections only), or externalNats.auth.
            - name: EMQX_CONNECTORS__MQTT__NATS__USERNAME
              {{- if $bridge.user }}
              value: {{ $bridge.user | quote }}
              {{- else }}
              valueFrom:
                secretKeyRef:
                  name: {{ $bridge.userSecret }}
                  key: {{ $bridge.userKey }}
              {{- end }}
            - name: EMQX_CONNECTORS__MQTT__NATS__PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {{ $bridge.secret }}
                  key: {{ $bridge.passwordKey }}
            {{- end }}
          {{- with include "iot.probes.render" (dict "root" $root "key" "emqx" "probes" .probes "ports" $ports) }}
          {{- . | nindent 10 }}
          {{- end }}
          volumeMounts:
            - name: config
              mountPath: /opt/emqx/etc/emqx.conf
              subPath: emqx.conf
              readOnly: true
            {{- if .deviceAuth.enabled }}
            # Replaces the image's acl.conf (which ends in {allow, all}).
            - name: config
              mountPath: /opt/emqx/etc/acl.conf
              subPath: acl.conf
              readOnly: true
            {{- end }}
            - name: data
              mountPath: /opt/emqx/data
            - name: log
              mountPath: /opt/emqx/log
            - name: tmp
              mountPath: /tmp
            {{- if $nats.mqttTls }}
            - name: nats-ca
              mountPath: /opt/emqx/etc/nats-ca
              readOnly: true
            {{- end }}
            {{- if $tls }}
            - name: tls
              mountPath: /opt/emqx/etc/tls
              readOnly: true
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ $name }}
        - name: data
          emptyDir: {}
        - name: log
          emptyDir:
            sizeLimit: 256Mi
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- if $nats.mqttTls }}
        - name: nats-ca
          secret:
            secretName: {{ $nats.caSecret }}
            items:
              - key: {{ $nats.caKey }}
                path: ca.crt
        {{- end }}
        {{- if $tls }}
        - name: tls
          secret:
            secretName: {{ $tls }}
            # 0440: readable by the fsGroup EMQX runs in, by nobody else.
            defaultMode: 288
        {{- end }}
{{- end }}
{{- if eq $object "Service" }}
{{- $servicePorts := list (dict "name" "mqtt" "port" .service.port "targetPort" "mqtt") }}
{{- if $tls }}
{{- $servicePorts = append $servicePorts (dict "name" "mqtts" "port" .service.tlsPort "targetPort" "mqtts") }}
{{- end }}
{{ include "iot.service" (merge (dict "ports" $servicePorts "service" .service "key" "emqx.service") $ctx) }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Device authentication and authorization of EMQX's MQTT listeners (emqx.deviceAuth), HOCON: a
device logs in with its client id and password, checked against EMQX's built-in database
(user_id_type clientid: the client id is the identity, so no device can take another's; pbkdf2
sha256 hashes), and the file ACL (acl.conf, first match wins) lets it publish to
telemetry/<client id> and nothing else; no_match = deny covers anything the rules miss, and a
denied publish or subscribe disconnects the client. The rule engine's bridge to NATS runs inside
EMQX and is not subject to either. Args: emqx values.
*/}}
{{- define "iot.emqx.deviceAuth" -}}
{{- if .deviceAuth.enabled -}}
# Devices: provisioned through the REST API (README: NATS and MQTT credentials).
authentication = [
  {
    mechanism = password_based
    backend = built_in_database
    user_id_type = clientid
    password_hash_algorithm {
      name = pbkdf2
      mac_fun = sha256
      iterations = {{ .deviceAuth.pbkdf2Iterations }}
      dk_length = 32
    }
  }
]
authorization {
  no_match = deny
  deny_action = disconnect
  sources = [
    {
      type = file
      enable = true
      path = "/opt/emqx/etc/acl.conf"
    }
  ]
}
{{- else -}}
# emqx.deviceAuth.enabled=false: any client connects and publishes anywhere (development only).
authorization {
  no_match = allow
  sources = []
}
{{- end -}}
{{- end -}}
