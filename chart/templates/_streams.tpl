{{/*
Limits of the JetStream streams the services create (nats.jetstream.streams). The chart checks
them and hands them to the services as environment variables; the services apply them with
ensure_stream on start.
*/}}

{{/* The streams: values key -> prefix of their environment variables (<PREFIX>_MAX_BYTES ...). */}}
{{- define "iot.streams.catalog" -}}
{{- dict "telemetry" "TELEMETRY" "routes" "ROUTES" | toJson -}}
{{- end -}}

{{/* Percent of the JetStream file store the streams' maxBytes may take together. */}}
{{- define "iot.streams.budgetPercent" -}}90{{- end -}}

{{/* The shortest maxAgeSeconds the chart accepts (a shorter one drops data before a restarted consumer is back). */}}
{{- define "iot.streams.minAgeSeconds" -}}60{{- end -}}

{{/*
One stream's limits, checked, as JSON {maxBytes, maxAgeSeconds} in bytes and seconds.
Args: root, stream (values key under nats.jetstream.streams).
*/}}
{{- define "iot.streams.limits" -}}
{{- $where := printf "nats.jetstream.streams.%s" .stream -}}
{{- $values := get .root.Values.nats.jetstream.streams .stream | default dict -}}
{{- $negative := regexMatch "^-" (toString $values.maxBytes) -}}
{{- $bytes := 0 -}}
{{- if not $negative -}}
{{- $bytes = include "iot.quantity.bytes" (dict "quantity" $values.maxBytes "where" (printf "%s.maxBytes" $where)) | int64 -}}
{{- end -}}
{{- if or $negative (le $bytes 0) -}}
{{- fail (printf "%s.maxBytes is %v: a stream needs room, set it above 0 (e.g. 1Gi)" $where $values.maxBytes) -}}
{{- end -}}
{{- $age := $values.maxAgeSeconds -}}
{{- if not (or (kindIs "int" $age) (kindIs "int64" $age) (kindIs "float64" $age) (and (kindIs "string" $age) (regexMatch "^[0-9]+$" $age))) -}}
{{- fail (printf "%s.maxAgeSeconds %q is not a whole number of seconds: write e.g. 604800 for 7 days" $where (toString $age)) -}}
{{- end -}}
{{- $minAge := include "iot.streams.minAgeSeconds" . | int64 -}}
{{- if lt (int64 $age) $minAge -}}
{{- fail (printf "%s.maxAgeSeconds is %d but must be at least %d: messages would expire before a restarted consumer could read them; raise %s.maxAgeSeconds" $where (int64 $age) $minAge $where) -}}
{{- end -}}
{{- dict "maxBytes" $bytes "maxAgeSeconds" (int64 $age) | toJson -}}
{{- end -}}

{{/*
Fails unless the streams' maxBytes together fit the JetStream file store with headroom: at most
budgetPercent of the smaller of the volume (nats.jetstream.storageSize) and NATS's own cap
(nats.jetstream.maxFileStore). The rest is left for what JetStream stores besides the streams'
messages: block and index overhead, consumer state, the MQTT listener's session streams. NATS
itself reserves each stream's max_bytes against max_file_store and refuses a stream that does not
fit ("insufficient storage resources available", checked with nats-server): this guard reports
that at install, with the values to change, instead of as a service failing at start. Args: root.
*/}}
{{- define "iot.guard.streamCapacity" -}}
{{- $js := .root.Values.nats.jetstream -}}
{{- $volume := include "iot.quantity.bytes" (dict "quantity" $js.storageSize "where" "nats.jetstream.storageSize") | int64 -}}
{{- $cap := include "iot.quantity.natsBytes" (dict "size" $js.maxFileStore "where" "nats.jetstream.maxFileStore") | int64 -}}
{{- $store := min $volume $cap -}}
{{- $percent := include "iot.streams.budgetPercent" . | int64 -}}
{{- $budget := div (mul $store $percent) 100 -}}
{{- $sum := 0 -}}
{{- $terms := list -}}
{{- $names := list -}}
{{- range $stream, $prefix := include "iot.streams.catalog" . | fromJson -}}
{{- $limits := include "iot.streams.limits" (dict "root" $.root "stream" $stream) | fromJson -}}
{{- $sum = add $sum (int64 $limits.maxBytes) -}}
{{- $terms = append $terms (printf "nats.jetstream.streams.%s.maxBytes %v = %d" $stream (get $js.streams $stream).maxBytes (int64 $limits.maxBytes)) -}}
{{- $names = append $names (printf "nats.jetstream.streams.%s.maxBytes" $stream) -}}
{{- end -}}
{{- if gt $sum $budget -}}
{{- fail (printf "the JetStream streams do not fit their file store: %s; together %d bytes, but at most %d bytes (%d %% of the file store, %d bytes = the smaller of nats.jetstream.storageSize %s = %d and nats.jetstream.maxFileStore %s = %d) may go to streams; lower %s, or raise both nats.jetstream.storageSize and nats.jetstream.maxFileStore" (join ", " $terms) $sum $budget $percent $store $js.storageSize $volume (toString $js.maxFileStore) $cap (join " or " $names)) -}}
{{- end -}}
{{- end -}}

{{/*
The environment variables of the streams a service creates: <PREFIX>_MAX_BYTES (bytes) and
<PREFIX>_MAX_AGE_SECONDS (seconds), after the capacity guard. Args: root, streams (values keys).
*/}}
{{- define "iot.streams.env" -}}
{{- include "iot.guard.streamCapacity" . -}}
{{- $catalog := include "iot.streams.catalog" . | fromJson -}}
{{- range $stream := .streams }}
{{- $limits := include "iot.streams.limits" (dict "root" $.root "stream" $stream) | fromJson }}
- name: {{ printf "%s_MAX_BYTES" (get $catalog $stream) }}
  value: {{ int64 $limits.maxBytes | toString | quote }}
- name: {{ printf "%s_MAX_AGE_SECONDS" (get $catalog $stream) }}
  value: {{ int64 $limits.maxAgeSeconds | toString | quote }}
{{- end -}}
{{- end -}}
