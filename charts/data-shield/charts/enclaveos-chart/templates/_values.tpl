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
{{- include "enclaveos-chart.validateTrust" . -}}
{{- end -}}

{{/*
Rules between the values of server-side encryption and TLS that the schema cannot name
well: each failure names the value and how to fix it.
*/}}
{{- define "enclaveos-chart.validateTrust" -}}
{{- $s3 := .Values.global.S3 -}}
{{- $sse := default "" $s3.ServerSideEncryption -}}
{{- if and $s3.KmsKeyId (ne $sse "aws:kms") -}}
{{- fail (printf "global.S3.KmsKeyId is set but global.S3.ServerSideEncryption is %q: set global.S3.ServerSideEncryption=aws:kms, or unset global.S3.KmsKeyId" $sse) -}}
{{- end -}}
{{- if and (eq $sse "SSE-C") (not $s3.SseCustomerKeySecretName) -}}
{{- fail "global.S3.ServerSideEncryption=SSE-C needs global.S3.SseCustomerKeySecretName: the name of a Secret with the key SSE_CUSTOMER_KEY (the base64 of a 32-byte key: openssl rand -base64 32)" -}}
{{- end -}}
{{- if and $s3.SseCustomerKeySecretName (ne $sse "SSE-C") -}}
{{- fail (printf "global.S3.SseCustomerKeySecretName is set but global.S3.ServerSideEncryption is %q: set global.S3.ServerSideEncryption=SSE-C, or unset global.S3.SseCustomerKeySecretName" $sse) -}}
{{- end -}}
{{- $ca := default dict $s3.CaBundle -}}
{{- if and $ca.ConfigMapName $ca.SecretName -}}
{{- fail "global.S3.CaBundle.ConfigMapName and global.S3.CaBundle.SecretName are both set: name the CA bundle's ConfigMap or its Secret, not both" -}}
{{- end -}}
{{- if not .Values.cockroachdb.enabled -}}
{{- $db := .Values.externalDatabase -}}
{{- if and $db.caSecretName $db.caConfigMapName -}}
{{- fail "enclaveos-chart.externalDatabase.caSecretName and enclaveos-chart.externalDatabase.caConfigMapName are both set: name the CA certificate's Secret or its ConfigMap, not both" -}}
{{- end -}}
{{- if and (has $db.sslMode (list "verify-ca" "verify-full")) (not (or $db.caSecretName $db.caConfigMapName)) (include "enclaveos-chart.storageWanted" .) -}}
{{- fail (printf "enclaveos-chart.externalDatabase.sslMode=%s needs the database server's CA certificate: set enclaveos-chart.externalDatabase.caSecretName (or caConfigMapName) to a Secret (ConfigMap) holding it under the key enclaveos-chart.externalDatabase.caKey (now %s)" $db.sslMode (default "ca.crt" $db.caKey)) -}}
{{- end -}}
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
