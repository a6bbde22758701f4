{{/*
Images: the one place that turns image values into a reference, and the pods' pull secrets.
*/}}

{{/*
The effective image of a component as JSON {reference, pullPolicy, version}.
- registry: global.imageRegistry when set (a mirror of every image), else the component's own
  registry, else the fallback's (services.image for the Python services); empty: none.
- repository, tag, pullPolicy: the component's non-empty fields over the fallback's; the tag of
  an image with a fallback defaults to the chart's appVersion.
- digest: the component's, else the fallback's only while the repository is the fallback's
  (a digest names one image); with a digest the reference is `repository@digest`, tag dropped.
- version: the tag (the `app.kubernetes.io/version` label), empty for a digest-only image.
Args: root, image, where (values path of `image`, for messages), fallback (optional).
*/}}
{{- define "iot.image" -}}
{{- $fallback := .fallback | default dict -}}
{{- $global := .root.Values.global | default dict -}}
{{- $registry := $global.imageRegistry | default .image.registry | default $fallback.registry | default "" -}}
{{- $repository := .image.repository | default $fallback.repository | default "" -}}
{{- $tag := toString (.image.tag | default $fallback.tag | default "") -}}
{{- if and .fallback (not $tag) -}}
{{- $tag = toString .root.Chart.AppVersion -}}
{{- end -}}
{{- $digest := .image.digest | default "" -}}
{{- if and (not $digest) (not .image.repository) -}}
{{- $digest = $fallback.digest | default "" -}}
{{- end -}}
{{- if not $repository -}}
{{- fail (printf "%s.repository is empty: set it" .where) -}}
{{- end -}}
{{- if not (or $tag $digest) -}}
{{- fail (printf "%s.tag and %s.digest are both empty: set one (a digest wins over a tag)" .where .where) -}}
{{- end -}}
{{- $name := ternary (printf "%s/%s" (trimSuffix "/" $registry) $repository) $repository (ne $registry "") -}}
{{- $reference := ternary (printf "%s@%s" $name $digest) (printf "%s:%s" $name $tag) (ne $digest "") -}}
{{- $pullPolicy := .image.pullPolicy | default $fallback.pullPolicy | default "IfNotPresent" -}}
{{- dict "reference" $reference "pullPolicy" $pullPolicy "version" $tag | toJson -}}
{{- end -}}

{{/* Container fields `image` and `imagePullPolicy` of an image from iot.image. */}}
{{- define "iot.imageFields" -}}
image: {{ .reference | quote }}
imagePullPolicy: {{ .pullPolicy }}
{{- end -}}

{{/* Pod field `imagePullSecrets` from global.imagePullSecrets (names); nothing when empty. Args: root. */}}
{{- define "iot.imagePullSecrets" -}}
{{- $global := .root.Values.global | default dict -}}
{{- with $global.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . | quote }}
  {{- end }}
{{- end }}
{{- end -}}
