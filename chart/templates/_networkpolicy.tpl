{{/*
NetworkPolicies (values `networkPolicy`): one default deny (ingress and egress) over every pod of
the release, then one policy per component that allows exactly its edges of the graph below,
DNS, and the component's `networkPolicy.extraIngress` / `extraEgress` rules. The graph is data
(iot.networkPolicy.edges); each policy is rendered from it, so a peer's ingress and the other
side's egress always agree. Kubernetes lets traffic from a pod's own node in regardless of
policy (the kubelet's probes), so no rule is needed for probes.
*/}}

{{/* "true" when the chart renders NetworkPolicies. Args: root. */}}
{{- define "iot.networkPolicy.enabled" -}}
{{- if .Values.networkPolicy.enabled }}true{{ end -}}
{{- end -}}

{{/*
The components of the release that run pods, as JSON {component label: values key}. `test` is
the `helm test` pods (values `tests`).
*/}}
{{- define "iot.networkPolicy.components" -}}
{{- $root := . -}}
{{- $components := dict -}}
{{- range include "iot.services.catalog" . | fromYamlArray -}}
{{- if (index $root.Values .key).enabled }}{{ $_ := set $components .component .key }}{{ end -}}
{{- end -}}
{{- range $key := list "keycloak" "emqx" "nats" "postgresql" -}}
{{- if (index $root.Values $key).enabled }}{{ $_ := set $components $key $key }}{{ end -}}
{{- end -}}
{{- if .Values.tests.enabled }}{{ $_ := set $components "test" "tests" }}{{ end -}}
{{- toJson $components -}}
{{- end -}}

{{/*
The denied webhook destinations, as route_delivery's DEFAULT_DENY
(services/route_delivery/destinations.py; chart-tests compare the two) plus
routeDelivery.webhooks.denyCidrs, as JSON {v4: [...], v6: [...]}. Args: root.
*/}}
{{- define "iot.networkPolicy.deniedCidrs" -}}
{{- $all := concat (list "0.0.0.0/8" "10.0.0.0/8" "100.64.0.0/10" "127.0.0.0/8" "169.254.0.0/16" "172.16.0.0/12" "192.168.0.0/16" "224.0.0.0/4" "240.0.0.0/4" "::/96" "fc00::/7" "fe80::/10" "fec0::/10" "ff00::/8") .Values.routeDelivery.webhooks.denyCidrs -}}
{{- $v4 := list -}}
{{- $v6 := list -}}
{{- range $all -}}
{{- if contains ":" . }}{{ $v6 = append $v6 . }}{{ else }}{{ $v4 = append $v4 . }}{{ end -}}
{{- end -}}
{{- dict "v4" $v4 "v6" $v6 | toJson -}}
{{- end -}}

{{/*
The allowed connections as a JSON list of {from, to, ports}. from/to are component labels or
peers outside the release: `@sources:<key>` (networkPolicy.ingressFrom.<key>; empty: anywhere),
`@monitoring` (networkPolicy.metrics), `@external` (any address: an external database or NATS),
`@webhooks` (any address but the denied ranges). ports: [{port, protocol}]; empty: every port.
Args: root.
*/}}
{{- define "iot.networkPolicy.edges" -}}
{{- $v := .Values -}}
{{- $present := include "iot.networkPolicy.components" . | fromJson -}}
{{- $edges := list -}}
{{- $services := list -}}
{{- range include "iot.services.catalog" . | fromYamlArray -}}
{{- if hasKey $present .component }}{{ $services = append $services . }}{{ end -}}
{{- end -}}
{{- /* PostgreSQL: every service (and its migrate init container) and Keycloak */ -}}
{{- $dbUsers := list -}}
{{- range $services }}{{ $dbUsers = append $dbUsers .component }}{{ end -}}
{{- if $v.keycloak.enabled }}{{ $dbUsers = append $dbUsers "keycloak" }}{{ end -}}
{{- range $dbUsers -}}
{{- if $v.postgresql.enabled -}}
{{- $edges = append $edges (dict "from" . "to" "postgresql" "ports" (list (dict "port" 5432 "protocol" "TCP"))) -}}
{{- else -}}
{{- $edges = append $edges (dict "from" . "to" "@external" "ports" (list (dict "port" (int $v.externalDatabase.port) "protocol" "TCP"))) -}}
{{- end -}}
{{- end -}}
{{- /* NATS client port: the services that use NATS */ -}}
{{- $natsPort := 4222 -}}
{{- if not $v.nats.enabled -}}
{{- $natsPort = regexFind ":[0-9]+$" (regexReplaceAll "^([a-z]+://[^/]+).*$" $v.externalNats.url "${1}") | trimPrefix ":" | default "4222" | int -}}
{{- end -}}
{{- range $services -}}
{{- if .nats -}}
{{- $edges = append $edges (dict "from" .component "to" (ternary "nats" "@external" $v.nats.enabled) "ports" (list (dict "port" $natsPort "protocol" "TCP"))) -}}
{{- end -}}
{{- end -}}
{{- /* devices -> EMQX; EMQX's bridge -> NATS's MQTT listener */ -}}
{{- if $v.emqx.enabled -}}
{{- $mqtt := list (dict "port" 1883 "protocol" "TCP") -}}
{{- if $v.emqx.tls.existingSecret }}{{ $mqtt = append $mqtt (dict "port" 8883 "protocol" "TCP") }}{{ end -}}
{{- $edges = append $edges (dict "from" "@sources:emqx" "to" "emqx" "ports" $mqtt) -}}
{{- if $v.emqx.bridgeToNats.enabled -}}
{{- $nats := include "iot.nats" . | fromJson -}}
{{- $edges = append $edges (dict "from" "emqx" "to" (ternary "nats" "@external" $v.nats.enabled) "ports" (list (dict "port" (int $nats.mqttPort) "protocol" "TCP"))) -}}
{{- end -}}
{{- end -}}
{{- /* people -> ui-iot and Keycloak; ui-iot -> Keycloak (JWKS) */ -}}
{{- $http := list (dict "port" (include "iot.services.healthPort" . | int) "protocol" "TCP") -}}
{{- if hasKey $present "ui-iot" -}}
{{- $edges = append $edges (dict "from" "@sources:uiIot" "to" "ui-iot" "ports" $http) -}}
{{- end -}}
{{- if $v.keycloak.enabled -}}
{{- $edges = append $edges (dict "from" "@sources:keycloak" "to" "keycloak" "ports" (list (dict "port" 8080 "protocol" "TCP"))) -}}
{{- if hasKey $present "ui-iot" -}}
{{- $edges = append $edges (dict "from" "ui-iot" "to" "keycloak" "ports" (list (dict "port" 8080 "protocol" "TCP"))) -}}
{{- end -}}
{{- end -}}
{{- /* route_delivery -> webhooks (its destination guard decides within this) */ -}}
{{- if hasKey $present "route-delivery" -}}
{{- $edges = append $edges (dict "from" "route-delivery" "to" "@webhooks" "ports" list) -}}
{{- end -}}
{{- /* helm test pods -> what they check (templates/tests) */ -}}
{{- if $v.tests.enabled -}}
{{- if hasKey $present "ui-iot" -}}
{{- $edges = append $edges (dict "from" "test" "to" "ui-iot" "ports" $http) -}}
{{- end -}}
{{- if $v.nats.enabled -}}
{{- $edges = append $edges (dict "from" "test" "to" "nats" "ports" (list (dict "port" 8222 "protocol" "TCP"))) -}}
{{- end -}}
{{- $edges = append $edges (dict "from" "test" "to" (ternary "postgresql" "@external" $v.postgresql.enabled) "ports" (list (dict "port" (ternary 5432 (int $v.externalDatabase.port) $v.postgresql.enabled) "protocol" "TCP"))) -}}
{{- end -}}
{{- /* Prometheus -> what the PodMonitor/ServiceMonitor scrapes (iot.metrics.targets) */ -}}
{{- if include "iot.metrics.enabled" . -}}
{{- range $services -}}
{{- $edges = append $edges (dict "from" "@monitoring" "to" .component "ports" $http) -}}
{{- end -}}
{{- if $v.keycloak.enabled -}}
{{- $edges = append $edges (dict "from" "@monitoring" "to" "keycloak" "ports" (list (dict "port" 9000 "protocol" "TCP"))) -}}
{{- end -}}
{{- if $v.emqx.enabled -}}
{{- $edges = append $edges (dict "from" "@monitoring" "to" "emqx" "ports" (list (dict "port" 18083 "protocol" "TCP"))) -}}
{{- end -}}
{{- end -}}
{{- toJson $edges -}}
{{- end -}}

{{/*
The peers of one end of an edge, as a JSON list of NetworkPolicyPeer; `null` for "anywhere"
(the rule then has no from/to). Args: root, end (component label or @ peer).
*/}}
{{- define "iot.networkPolicy.peers" -}}
{{- $np := .root.Values.networkPolicy -}}
{{- if hasPrefix "@sources:" .end -}}
{{- $sources := index $np.ingressFrom (trimPrefix "@sources:" .end) -}}
{{- if $sources }}{{ toJson $sources }}{{ else }}null{{ end -}}
{{- else if eq .end "@monitoring" -}}
{{- toJson (list (dict "namespaceSelector" $np.metrics.namespaceSelector "podSelector" $np.metrics.podSelector)) -}}
{{- else if eq .end "@external" -}}
{{- toJson (list (dict "ipBlock" (dict "cidr" "0.0.0.0/0")) (dict "ipBlock" (dict "cidr" "::/0"))) -}}
{{- else if eq .end "@webhooks" -}}
{{- $denied := include "iot.networkPolicy.deniedCidrs" .root | fromJson -}}
{{- $peers := list (dict "ipBlock" (dict "cidr" "0.0.0.0/0" "except" $denied.v4)) (dict "ipBlock" (dict "cidr" "::/0" "except" $denied.v6)) -}}
{{- range .root.Values.routeDelivery.webhooks.allowCidrs -}}
{{- $peers = append $peers (dict "ipBlock" (dict "cidr" .)) -}}
{{- end -}}
{{- toJson $peers -}}
{{- else -}}
{{- toJson (list (dict "podSelector" (dict "matchLabels" (include "iot.selectorLabels" (dict "root" .root "component" .end) | fromYaml)))) -}}
{{- end -}}
{{- end -}}

{{/* One ingress or egress rule of an edge. Args: root, end (the other side), ports, field (from or to). */}}
{{- define "iot.networkPolicy.rule" -}}
{{- $rule := dict -}}
{{- $peers := include "iot.networkPolicy.peers" . | fromJsonArray -}}
{{- if $peers }}{{ $_ := set $rule .field $peers }}{{ end -}}
{{- if .ports }}{{ $_ := set $rule "ports" .ports }}{{ end -}}
{{- toJson $rule -}}
{{- end -}}

{{/* The DNS egress rule every pod of the release gets (networkPolicy.dns). Args: root. */}}
{{- define "iot.networkPolicy.dnsRule" -}}
{{- $dns := .Values.networkPolicy.dns -}}
{{- $ports := list -}}
{{- range $dns.ports }}{{ $ports = concat $ports (list (dict "port" (int .) "protocol" "UDP") (dict "port" (int .) "protocol" "TCP")) }}{{ end -}}
{{- toJson (dict "to" (list (dict "namespaceSelector" $dns.namespaceSelector "podSelector" $dns.podSelector)) "ports" $ports) -}}
{{- end -}}

{{/* Common metadata of the chart's NetworkPolicies. Args: root, name (component label or `default-deny`). */}}
{{- define "iot.networkPolicy.header" -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "iot.componentName" (dict "root" .root "component" (printf "%s-netpol" .name)) }}
  labels:
    {{- include "iot.labels" (dict "root" .root "component" .name "version" (.root.Chart.AppVersion | default .root.Chart.Version)) | nindent 4 }}
{{- end -}}

{{/*
One NetworkPolicy: `default-deny` (every pod of the release, nothing allowed) or a component's
allow list. Rendered only when networkPolicy.enabled and the component runs. Args: root,
component (label, or default-deny).
*/}}
{{- define "iot.networkPolicy.manifest" -}}
{{- $root := .root -}}
{{- if include "iot.networkPolicy.enabled" $root -}}
{{- if eq .component "default-deny" }}
{{ include "iot.networkPolicy.header" (dict "root" $root "name" "default-deny") }}
spec:
  podSelector:
    matchLabels:
      app.kubernetes.io/name: {{ $root.Chart.Name }}
      app.kubernetes.io/instance: {{ $root.Release.Name }}
  policyTypes: [Ingress, Egress]
{{- else -}}
{{- $present := include "iot.networkPolicy.components" $root | fromJson -}}
{{- if hasKey $present .component -}}
{{- $key := get $present .component -}}
{{- $component := .component -}}
{{- $ingress := list -}}
{{- $egress := list (include "iot.networkPolicy.dnsRule" $root | fromJson) -}}
{{- range include "iot.networkPolicy.edges" $root | fromJsonArray -}}
{{- if eq .to $component -}}
{{- $ingress = append $ingress (include "iot.networkPolicy.rule" (dict "root" $root "end" .from "ports" .ports "field" "from") | fromJson) -}}
{{- end -}}
{{- if eq .from $component -}}
{{- $egress = append $egress (include "iot.networkPolicy.rule" (dict "root" $root "end" .to "ports" .ports "field" "to") | fromJson) -}}
{{- end -}}
{{- end -}}
{{- $ingress = concat $ingress (index $root.Values.networkPolicy.extraIngress $key | default list) -}}
{{- $egress = concat $egress (index $root.Values.networkPolicy.extraEgress $key | default list) }}
{{ include "iot.networkPolicy.header" (dict "root" $root "name" $component) }}
spec:
  podSelector:
    matchLabels:
      {{- include "iot.selectorLabels" (dict "root" $root "component" $component) | nindent 6 }}
  policyTypes: [Ingress, Egress]
  ingress:
    {{- if $ingress }}
    {{- toYaml $ingress | nindent 4 }}
    {{- else }} []
    {{- end }}
  egress:
    {{- toYaml $egress | nindent 4 }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
