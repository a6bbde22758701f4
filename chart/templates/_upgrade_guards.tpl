{{/*
Upgrade guards: values that an existing install cannot take in place. Each guard looks up the
live object and fails the render, so Helm stops before it applies anything (the release stays
as it was, never half-applied and `failed`), with the steps that make the change instead.
`lookup` finds nothing on a first install, under `helm template` and under --dry-run=client: the
guards act only against a cluster that already runs the release.
*/}}

{{/* Every guard of the release (templates/upgrade-guards.yaml). Args: the root context. */}}
{{- define "iot.guard.upgrades" -}}
{{- $pg := .Values.postgresql -}}
{{- if $pg.enabled -}}
{{- include "iot.guard.databaseIdentity" . -}}
{{- include "iot.guard.databasePassword" . -}}
{{- include "iot.guard.statefulSetVolume" (dict "root" . "component" "postgresql" "claim" "data" "sizeKey" "postgresql.persistence.size" "size" $pg.persistence.size "classKey" "postgresql.persistence.storageClassName" "storageClassName" $pg.persistence.storageClassName) -}}
{{- end -}}
{{- $nats := .Values.nats -}}
{{- if $nats.enabled -}}
{{- include "iot.guard.statefulSetVolume" (dict "root" . "component" "nats" "claim" "jetstream" "sizeKey" "nats.jetstream.storageSize" "size" $nats.jetstream.storageSize "classKey" "nats.jetstream.storageClassName" "storageClassName" $nats.jetstream.storageClassName) -}}
{{- end -}}
{{- end -}}

{{/*
The database user and name: PostgreSQL creates them once, when its data volume is initialised
(POSTGRES_USER / POSTGRES_DB of the live StatefulSet record what it was initialised with), so a
new value would point every service at a user or database that does not exist.
Args: the root context.
*/}}
{{- define "iot.guard.databaseIdentity" -}}
{{- $name := include "iot.componentName" (dict "root" . "component" "postgresql") -}}
{{- $live := lookup "apps/v1" "StatefulSet" .Release.Namespace $name -}}
{{- if $live -}}
{{- $env := dict -}}
{{- range $live.spec.template.spec.containers -}}
{{- if eq .name "postgresql" -}}
{{- range .env | default list -}}
{{- $_ := set $env .name (.value | default "") -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $auth := .Values.postgresql.auth -}}
{{- $pod := printf "%s-0" $name -}}
{{- $ns := .Release.Namespace -}}
{{- $was := get $env "POSTGRES_USER" -}}
{{- if and $was (ne $was $auth.username) -}}
{{- fail (printf "postgresql.auth.username cannot change from %q to %q on an existing install: PostgreSQL created its user once, when its volume was initialised, and the services would log in as a user that does not exist. Keep postgresql.auth.username=%s, or rename the user first: (1) with the services scaled to 0, kubectl -n %s exec %s -- psql -U %s -d postgres -c 'ALTER ROLE %s RENAME TO %s' and set its password again (a rename clears an MD5 password): ALTER ROLE %s PASSWORD '<the password in Secret %s>'; (2) kubectl -n %s delete statefulset %s --cascade=orphan (its pod and volume stay); (3) run this upgrade again." $was $auth.username $was $ns $pod $was $was $auth.username $auth.username $name $ns $name) -}}
{{- end -}}
{{- $was = get $env "POSTGRES_DB" -}}
{{- if and $was (ne $was $auth.database) -}}
{{- fail (printf "postgresql.auth.database cannot change from %q to %q on an existing install: PostgreSQL created the database once, when its volume was initialised, and the services would connect to a database that does not exist. Keep postgresql.auth.database=%s, or rename it first: (1) with the services scaled to 0 (open connections block a rename), kubectl -n %s exec %s -- psql -U %s -d postgres -c 'ALTER DATABASE %s RENAME TO %s'; (2) kubectl -n %s delete statefulset %s --cascade=orphan (its pod and volume stay); (3) run this upgrade again." $was $auth.database $was $ns $pod (get $env "POSTGRES_USER") $was $auth.database $ns $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The database password: PostgreSQL set it once, when its volume was initialised; the chart's
Secret (kept across upgrades) holds it. A different postgresql.auth.password would give the
services a password the database refuses. Rotation changes the database first, then the Secret.
Args: the root context.
*/}}
{{- define "iot.guard.databasePassword" -}}
{{- $auth := .Values.postgresql.auth -}}
{{- if and $auth.password (not $auth.existingSecret) -}}
{{- $name := include "iot.componentName" (dict "root" . "component" "postgresql") -}}
{{- $live := lookup "v1" "Secret" .Release.Namespace $name -}}
{{- $was := get ($live.data | default dict) "password" -}}
{{- if and $was (ne $was ($auth.password | toString | b64enc)) -}}
{{- fail (printf "postgresql.auth.password differs from the password in Secret %s, which the database was initialised with: changing the value would give the services a password the database refuses. To rotate it: (1) kubectl -n %s exec %s-0 -- psql -U %s -d postgres -c \"ALTER ROLE %s PASSWORD '<new>'\"; (2) kubectl -n %s create secret generic %s --from-literal=password='<new>' --dry-run=client -o yaml | kubectl -n %s apply -f - ; (3) run this upgrade again with postgresql.auth.password=<new> (or leave it empty: the chart keeps the Secret's value); the pods roll to the new password. Or unset postgresql.auth.password to keep the current one." $name .Release.Namespace $name $auth.username $auth.username .Release.Namespace $name .Release.Namespace) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
A StatefulSet's volumeClaimTemplates and selector are immutable: a new size, StorageClass or
selector would be refused by the API server halfway through the upgrade (release `failed`).
Compares them with the live StatefulSet. Args: root, component, claim (the template's name),
size, sizeKey, storageClassName, classKey (values paths, for messages).
*/}}
{{- define "iot.guard.statefulSetVolume" -}}
{{- $root := .root -}}
{{- $ns := $root.Release.Namespace -}}
{{- $ctx := dict "root" $root "component" .component -}}
{{- $name := include "iot.componentName" $ctx -}}
{{- $live := lookup "apps/v1" "StatefulSet" $ns $name -}}
{{- if $live -}}
{{- $selector := include "iot.selectorLabels" $ctx | fromYaml -}}
{{- if ne (toJson $live.spec.selector.matchLabels) (toJson $selector) -}}
{{- fail (printf "the pod selector of StatefulSet %s changes (%s to %s), and a StatefulSet's selector is immutable: (1) kubectl -n %s delete statefulset %s --cascade=orphan (its pods and volumes stay); (2) run this upgrade again; (3) delete each old pod (kubectl -n %s delete pod %s-0): the new StatefulSet recreates it with the same volume." $name (toJson $live.spec.selector.matchLabels) (toJson $selector) $ns $name $ns $name) -}}
{{- end -}}
{{- range $live.spec.volumeClaimTemplates -}}
{{- if eq .metadata.name $.claim -}}
{{- $pvc := printf "%s-%s-0" $.claim $name -}}
{{- $wasClass := .spec.storageClassName | default "" -}}
{{- if ne $wasClass ($.storageClassName | default "") -}}
{{- fail (printf "%s cannot change from %q to %q on an existing install: a volume cannot move to another StorageClass, and a StatefulSet's volumeClaimTemplates are immutable. Keep %s=%s, or move the data: back it up, uninstall, delete PersistentVolumeClaim %s, install with the new StorageClass and restore." $.classKey $wasClass ($.storageClassName | default "") $.classKey $wasClass $pvc) -}}
{{- end -}}
{{- $wasSize := .spec.resources.requests.storage -}}
{{- $was := include "iot.quantity.bytes" (dict "quantity" $wasSize "where" (printf "the live %s" $pvc)) | int64 -}}
{{- $want := include "iot.quantity.bytes" (dict "quantity" $.size "where" $.sizeKey) | int64 -}}
{{- if lt $want $was -}}
{{- fail (printf "%s cannot shrink from %s to %s: a PersistentVolumeClaim never shrinks. Keep %s=%s." $.sizeKey $wasSize (toString $.size) $.sizeKey $wasSize) -}}
{{- else if gt $want $was -}}
{{- $claim := lookup "v1" "PersistentVolumeClaim" $ns $pvc -}}
{{- /* the claim's own class: the cluster default when the template names none (no claim yet: the template's) */ -}}
{{- $class := dig "spec" "storageClassName" $wasClass $claim -}}
{{- $expansion := "the volume's StorageClass (the cluster default) must allow volume expansion (allowVolumeExpansion: true)" -}}
{{- if $class -}}
{{- $expansion = printf "StorageClass %q must allow volume expansion (allowVolumeExpansion: true)" $class -}}
{{- $storageClass := lookup "storage.k8s.io/v1" "StorageClass" "" $class -}}
{{- if and $storageClass (not $storageClass.allowVolumeExpansion) -}}
{{- $expansion = printf "StorageClass %q does not allow volume expansion (allowVolumeExpansion is not true): enable it there if its provisioner can expand volumes, else move the data to a new volume instead" $class -}}
{{- end -}}
{{- end -}}
{{- fail (printf "%s cannot change from %s to %s by an upgrade: a StatefulSet's volumeClaimTemplates are immutable (the API server would refuse it halfway through). Expand the volume instead: %s; (1) kubectl -n %s patch pvc %s -p '{\"spec\":{\"resources\":{\"requests\":{\"storage\":\"%s\"}}}}' and wait until its status shows the new size; (2) kubectl -n %s delete statefulset %s --cascade=orphan (its pod and volume stay); (3) run this upgrade again: the StatefulSet is recreated with the new size." $.sizeKey $wasSize (toString $.size) $expansion $ns $pvc (toString $.size) $ns $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
