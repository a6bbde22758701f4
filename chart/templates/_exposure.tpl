{{/*
Exposure: Service types, Ingress and Gateway API HTTPRoute, shared by every component that can be
reached from outside the cluster (EMQX's MQTT, ui-iot, Keycloak). One concern per template.
*/}}

{{/*
The `spec` fields of a Service that set how it is exposed: `type`, and (only where Kubernetes
uses them) `externalTrafficPolicy` and `loadBalancerSourceRanges`. Fails on a combination that
Kubernetes would silently ignore or reject. Args: key (values path of `service`), service
(a component's service values; empty: ClusterIP), ports (the Service's ports, by name).
*/}}
{{- define "iot.exposure.serviceSpec" -}}
{{- $service := .service | default dict -}}
{{- $type := $service.type | default "ClusterIP" -}}
{{- $external := has $type (list "NodePort" "LoadBalancer") -}}
{{- if and $service.externalTrafficPolicy (not $external) -}}
{{- fail (printf "%s.externalTrafficPolicy (%s) applies only to NodePort and LoadBalancer Services, but %s.type is %s: remove %s.externalTrafficPolicy or set %s.type to NodePort or LoadBalancer" .key $service.externalTrafficPolicy .key $type .key .key) -}}
{{- end -}}
{{- if and $service.loadBalancerSourceRanges (ne $type "LoadBalancer") -}}
{{- fail (printf "%s.loadBalancerSourceRanges is set, but %s.type is %s: only a LoadBalancer Service uses it; remove it or set %s.type=LoadBalancer" .key .key $type .key) -}}
{{- end -}}
{{- $names := list -}}
{{- range .ports }}{{ $names = append $names .name }}{{ end -}}
{{- range $name, $nodePort := $service.nodePorts -}}
{{- if and $nodePort (not $external) -}}
{{- fail (printf "%s.nodePorts.%s (%v) is set, but %s.type is %s: node ports exist only on NodePort and LoadBalancer Services; set it to 0 or set %s.type to NodePort or LoadBalancer" $.key $name $nodePort $.key $type $.key) -}}
{{- end -}}
{{- if and $nodePort (not (has $name $names)) -}}
{{- fail (printf "%s.nodePorts.%s (%v) names no port of the Service (it has: %s): set it to 0" $.key $name $nodePort (join ", " $names)) -}}
{{- end -}}
{{- end -}}
type: {{ $type }}
{{- with $service.externalTrafficPolicy }}
externalTrafficPolicy: {{ . }}
{{- end }}
{{- with $service.loadBalancerSourceRanges }}
loadBalancerSourceRanges:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Fails unless `path` lies at or below `base` (the only prefix a component serves, e.g. Keycloak's
httpRelativePath). Args: where (values path of the path), path, base, baseKey (values path of base).
*/}}
{{- define "iot.exposure.guard.path" -}}
{{- if and (ne .base "/") (ne .path .base) (not (hasPrefix (printf "%s/" .base) .path)) -}}
{{- fail (printf "%s (%s) is outside %s (%s), the only path it serves: set it to %s or a path below it, or change %s" .where .path .baseKey .base .base .baseKey) -}}
{{- end -}}
{{- end -}}

{{/*
The Ingress (networking.k8s.io/v1) of one component's Service, or nothing unless
`ingress.enabled`. A host without `paths` gets the component's root path (Prefix); no hosts at
all: one rule for every host. Args: root, component, version, key (values path of the
component), ingress (its ingress values), port (the Service port), path (the root path the
component serves), pathKey (the values path that sets `path`, for messages).
*/}}
{{- define "iot.exposure.ingress" -}}
{{- $ingress := .ingress -}}
{{- if $ingress.enabled -}}
{{- $name := include "iot.componentName" . -}}
{{- $backend := dict "service" (dict "name" $name "port" (dict "number" (int .port))) -}}
{{- $rules := list -}}
{{- range $h, $host := $ingress.hosts | default (list dict) -}}
{{- $paths := list -}}
{{- range $p, $entry := $host.paths | default (list (dict "path" $.path)) -}}
{{- include "iot.exposure.guard.path" (dict "where" (printf "%s.ingress.hosts[%d].paths[%d].path" $.key $h $p) "path" $entry.path "base" $.path "baseKey" $.pathKey) -}}
{{- $paths = append $paths (dict "path" $entry.path "pathType" ($entry.pathType | default "Prefix") "backend" $backend) -}}
{{- end -}}
{{- $rule := dict "http" (dict "paths" $paths) -}}
{{- with $host.host }}{{ $_ := set $rule "host" . }}{{ end -}}
{{- $rules = append $rules $rule -}}
{{- end }}
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ $name }}
  labels:
    {{- include "iot.labels" . | nindent 4 }}
  {{- with $ingress.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- with $ingress.className }}
  ingressClassName: {{ . }}
  {{- end }}
  {{- with $ingress.tls }}
  tls:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  rules:
    {{- toYaml $rules | nindent 4 }}
{{- end -}}
{{- end -}}

{{/*
The Gateway API HTTPRoute (gateway.networking.k8s.io/v1) of one component's Service, or nothing
unless `httpRoute.enabled`: every request below the component's root path on `hostnames`, from
the Gateways of `parentRefs`. Args: root, component, version, key, httpRoute (its values), port,
path, pathKey (as for iot.exposure.ingress).
*/}}
{{- define "iot.exposure.httpRoute" -}}
{{- $route := .httpRoute -}}
{{- if $route.enabled -}}
{{- if not $route.parentRefs -}}
{{- fail (printf "%s.httpRoute.parentRefs is empty: name the Gateway the route attaches to (%s.httpRoute.parentRefs[0].name), or set %s.httpRoute.enabled=false" .key .key .key) -}}
{{- end -}}
{{- $name := include "iot.componentName" . }}
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {{ $name }}
  labels:
    {{- include "iot.labels" . | nindent 4 }}
  {{- with $route.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  parentRefs:
    {{- toYaml $route.parentRefs | nindent 4 }}
  {{- with $route.hostnames }}
  hostnames:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  rules:
    - matches:
        - path:
            type: PathPrefix
            value: {{ .path }}
      backendRefs:
        - name: {{ $name }}
          port: {{ .port }}
{{- end -}}
{{- end -}}
