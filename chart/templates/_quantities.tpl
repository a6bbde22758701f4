{{/*
Byte sizes written as Kubernetes quantities, converted to whole bytes so that the chart can add
and compare them and hand the services plain integers.
*/}}

{{/* Bytes per quantity suffix (JSON): decimal k M G T P E, binary Ki Mi Gi Ti Pi Ei. */}}
{{- define "iot.quantity.units" -}}
{{- dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "P" 1000000000000000 "E" 1000000000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "Pi" 1125899906842624 "Ei" 1152921504606846976 | toJson -}}
{{- end -}}

{{/*
A byte quantity as a whole number of bytes: `4Gi` -> 4294967296, `512M` -> 512000000,
`1.5Gi` -> 1610612736, `1e9` -> 1000000000, `2147483648` -> 2147483648. A fraction is rounded up
to the next byte, as Kubernetes does. Anything else (a unit Kubernetes does not know such as
`GB`, a negative exponent, `m`, a sign) fails naming the field. Numbers from values files arrive as floats and are taken whole.
Args: quantity, where (values path, for messages).
*/}}
{{- define "iot.quantity.bytes" -}}
{{- $raw := .quantity -}}
{{- if kindIs "float64" $raw -}}
{{- $raw = int64 $raw -}}
{{- end -}}
{{- $text := toString $raw -}}
{{- $pattern := "^([0-9]+)(?:\\.([0-9]*))?(?:[eE]\\+?([0-9]+))?(k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$" -}}
{{- if or (kindIs "invalid" .quantity) (not (regexMatch $pattern $text)) -}}
{{- fail (printf "%s %q is not a byte quantity the chart understands: write a whole number of bytes or a Kubernetes quantity with one of the suffixes k, M, G, T, Ki, Mi, Gi, Ti (e.g. 4Gi, 512Mi, 1500M)" .where $text) -}}
{{- end -}}
{{- $unit := get (include "iot.quantity.units" . | fromJson) (regexReplaceAll $pattern $text "${4}") | int64 -}}
{{- range until (atoi (regexReplaceAll $pattern $text "${3}" | default "0")) -}}
{{- $unit = mul $unit 10 -}}
{{- end -}}
{{- $bytes := mul (atoi (regexReplaceAll $pattern $text "${1}")) $unit -}}
{{- $fraction := regexReplaceAll $pattern $text "${2}" -}}
{{- if $fraction -}}
{{- $scale := 1 -}}
{{- range until (len $fraction) -}}
{{- $scale = mul $scale 10 -}}
{{- end -}}
{{- /* ceil(fraction x unit / scale) in integers */ -}}
{{- $bytes = add $bytes (div (sub (add (mul (atoi $fraction) $unit) $scale) 1) $scale) -}}
{{- end -}}
{{- $bytes -}}
{{- end -}}

{{/*
A NATS configuration size (`8G`, `512M`, `100K`, or plain bytes) in bytes. NATS reads K, M, G, T
as powers of 1000 (checked with nats-server: max_file_store 8G gives max_storage 8000000000), so
they map onto Kubernetes' decimal k, M, G, T. Args: size, where.
*/}}
{{- define "iot.quantity.natsBytes" -}}
{{- include "iot.quantity.bytes" (dict "quantity" (regexReplaceAll "K$" (toString .size) "k") "where" .where) -}}
{{- end -}}
