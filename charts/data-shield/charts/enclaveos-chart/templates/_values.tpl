{{/* What the values ask for: checks that fail rendering, and switches derived from them. */}}

{{/*
Fails rendering with a message naming the missing value. The schema reports the same
cases; this also covers charts rendered with schema validation skipped.
*/}}
{{- define "enclaveos-chart.validate" -}}
{{- $why := "" -}}
{{- if .Values.Backup.CronSchedule -}}
{{- $why = "enclaveos-chart.Backup.CronSchedule is set" -}}
{{- else if .Values.restore.fromObject -}}
{{- $why = "enclaveos-chart.restore.fromObject is set" -}}
{{- else if .Values.Verify.CronSchedule -}}
{{- $why = "enclaveos-chart.Verify.CronSchedule is set" -}}
{{- else if .Values.Verify.HelmTest -}}
{{- $why = "enclaveos-chart.Verify.HelmTest is set" -}}
{{- end -}}
{{- if $why -}}
{{- $s3 := .Values.global.S3 -}}
{{- required (printf "global.S3.Endpoint is required because %s" $why) $s3.Endpoint | trunc 0 -}}
{{- required (printf "global.S3.Bucket is required because %s" $why) $s3.Bucket | trunc 0 -}}
{{- required (printf "global.S3.HmacSecretName is required because %s" $why) $s3.HmacSecretName | trunc 0 -}}
{{- end -}}
{{- if not .Values.cockroachdb.enabled -}}
{{- required "enclaveos-chart.externalDatabase.host is required when enclaveos-chart.cockroachdb.enabled is false" .Values.externalDatabase.host | trunc 0 -}}
{{- end -}}
{{- end -}}

{{/* True (non-empty) when the chart needs object storage settings. */}}
{{- define "enclaveos-chart.storageWanted" -}}
{{- if or .Values.Backup.CronSchedule .Values.restore.fromObject .Values.Verify.CronSchedule .Values.Verify.HelmTest -}}true{{- end -}}
{{- end -}}

{{/* True (non-empty) when a retention rule is set. */}}
{{- define "enclaveos-chart.retentionOn" -}}
{{- range $name, $n := .Values.Backup.Retention }}{{ if gt (int (default 0 $n)) 0 }}true{{ end }}{{ end -}}
{{- end -}}
