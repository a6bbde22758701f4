{{/*
route_delivery's destination guard from routeDelivery.webhooks (WEBHOOK_ALLOW_CIDRS,
WEBHOOK_DENY_CIDRS, WEBHOOK_ALLOW_HOSTS; comma-separated, only when set). The same deny list
shapes route-delivery's NetworkPolicy egress (iot.networkPolicy.deniedCidrs). Args: root.
*/}}
{{- define "iot.webhooks.env" -}}
{{- $webhooks := .root.Values.routeDelivery.webhooks -}}
{{- range $name, $values := dict "WEBHOOK_ALLOW_CIDRS" $webhooks.allowCidrs "WEBHOOK_DENY_CIDRS" $webhooks.denyCidrs "WEBHOOK_ALLOW_HOSTS" $webhooks.allowHosts }}
{{- with $values }}
- name: {{ $name }}
  value: {{ join "," . | quote }}
{{- end }}
{{- end }}
{{- end -}}
