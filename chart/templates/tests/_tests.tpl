{{/*
`helm test` pods: each runs one check with an image the chart already uses, hardened like the
workloads (non-root, read-only root filesystem, no capabilities, no service-account token), runs
once (restartPolicy Never) within tests.deadlineSeconds, and is deleted before the next run and
once it succeeded (a failed one stays for `kubectl logs`).
*/}}

{{/*
One test pod, named `<fullname>-test-<name>`. Args: root, name, image (from iot.image), values
(the values of the component whose image it runs), securityContext (that component's
securityContext values), command (list).
*/}}
{{- define "iot.tests.pod" -}}
{{- /* component `test`, not the checked one's: its Service must not select the test pod */}}
{{- $ctx := dict "root" .root "component" "test" "version" .image.version -}}
apiVersion: v1
kind: Pod
metadata:
  name: {{ include "iot.componentName" (dict "root" .root "component" (printf "test-%s" .name)) }}
  labels:
    {{- include "iot.labels" $ctx | nindent 4 }}
  annotations:
    helm.sh/hook: test
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  restartPolicy: Never
  activeDeadlineSeconds: {{ .root.Values.tests.deadlineSeconds }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- with include "iot.imagePullSecrets" . | trim }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- include "iot.securityContext.pod" (dict "root" .root "values" .values "base" .securityContext) | nindent 2 }}
  containers:
    - name: test
      {{- include "iot.imageFields" .image | nindent 6 }}
      command:
        {{- toYaml .command | nindent 8 }}
      {{- include "iot.securityContext.container" (dict "root" .root "values" .values "base" .securityContext) | nindent 6 }}
      resources:
        requests:
          cpu: 10m
          memory: 32Mi
        limits:
          cpu: 200m
          memory: 64Mi
{{- end -}}

{{/*
The command of a test that GETs one URL with the services image's Python: exit 0 on a 2xx,
otherwise exit 1 printing the status and the start of the body. Args: url.
*/}}
{{- define "iot.tests.httpGet" -}}
{{- $script := `import sys, urllib.error, urllib.request
url = sys.argv[1]
try:
    with urllib.request.urlopen(url, timeout=10) as response:
        print(url, response.status, response.read(2000).decode(errors="replace"))
except urllib.error.HTTPError as error:
    sys.exit(f"{url}: {error.code} {error.read(2000).decode(errors='replace')}")
except OSError as error:
    sys.exit(f"{url}: {error}")
` -}}
{{- list "python" "-c" $script .url | toJson -}}
{{- end -}}

{{/* The services image (the one with Python) as iot.image JSON. Args: root. */}}
{{- define "iot.tests.servicesImage" -}}
{{- include "iot.image" (dict "root" .root "image" .root.Values.services.image "where" "services.image" "fallback" .root.Values.services.image) -}}
{{- end -}}
