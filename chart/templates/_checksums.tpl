{{/*
Pod annotations that roll a workload's pods when a ConfigMap or Secret they use changes: a
Deployment or StatefulSet only replaces its pods when the pod template changes, and a new Secret
or ConfigMap alone does not change it.
*/}}

{{/*
The checksum of one rendered ConfigMap or Secret: sha256 of its data (and binaryData) as JSON
(sorted keys), or nothing when the object is not rendered (existingSecret, component disabled).
A generated password is the same in the Secret and in its checksum (iot.secret.value renders it
once per render), and it is the looked-up one on every upgrade, so only a real change rolls pods.
Args: root, template (a manifest template taking root and object), object (its kind).
*/}}
{{- define "iot.checksum" -}}
{{- /* + "\n": as in its template file, whose last newline ends a trailing block scalar */ -}}
{{- $rendered := printf "%s\n" (include .template (dict "root" .root "object" .object)) | fromYaml -}}
{{- if $rendered.data -}}
{{- dict "data" $rendered.data "binaryData" ($rendered.binaryData | default dict) | toJson | sha256sum -}}
{{- end -}}
{{- end -}}

{{/*
The chart's checksum annotations of one pod template as JSON, for iot.workload.header's
`annotations`: `checksum/<name>` for each object that renders. Args: root, objects (list of
{name, template, object}).
*/}}
{{- define "iot.checksums" -}}
{{- $annotations := dict -}}
{{- range .objects -}}
{{- $sum := include "iot.checksum" (dict "root" $.root "template" .template "object" .object) -}}
{{- if $sum -}}
{{- $_ := set $annotations (printf "checksum/%s" .name) $sum -}}
{{- end -}}
{{- end -}}
{{- toJson $annotations -}}
{{- end -}}
