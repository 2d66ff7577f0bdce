{{/* What the values ask for: checks that fail rendering, and switches derived from them. */}}

{{/*
Fails rendering with a message naming the missing value. The schema reports the same
cases; this also covers charts rendered with schema validation skipped.
*/}}
{{- define "enclaveos-chart.validate" -}}
{{- $why := "" -}}
{{- if .Values.Backup.CronSchedule -}}
{{- $why = "enclaveos-chart.Backup.CronSchedule is set" -}}
{{- else if .Values.Backup.IncrementalSchedule -}}
{{- $why = "enclaveos-chart.Backup.IncrementalSchedule is set" -}}
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
{{- if not $s3.WorkloadIdentity -}}
{{- required (printf "global.S3.HmacSecretName is required because %s (or set global.S3.WorkloadIdentity=true to use the ServiceAccount's cloud identity, serviceAccount.annotations)" $why) $s3.HmacSecretName | trunc 0 -}}
{{- end -}}
{{- end -}}
{{- if not .Values.cockroachdb.enabled -}}
{{- required "enclaveos-chart.externalDatabase.host is required when enclaveos-chart.cockroachdb.enabled is false" .Values.externalDatabase.host | trunc 0 -}}
{{- end -}}
{{- include "enclaveos-chart.validateTrust" . -}}
{{- if and .Values.global.S3.WorkloadIdentity .Values.global.S3.HmacSecretName -}}
{{- fail "global.S3.WorkloadIdentity=true and global.S3.HmacSecretName are both set: the pods get either the ServiceAccount's cloud identity or the HMAC keys; unset one" -}}
{{- end -}}
{{- range $key, $_ := .Values.Backup.PodLabels -}}
{{- if or (hasPrefix "app.kubernetes.io/" $key) (hasPrefix "helm.sh/" $key) (hasPrefix "enclaveos-chart/" $key) -}}
{{- fail (printf "enclaveos-chart.Backup.PodLabels.%s: the chart sets this label itself (its selectors and the NetworkPolicy rely on it); use a key of your own" $key) -}}
{{- end -}}
{{- end -}}
{{- include "enclaveos-chart.checkCron" (list "enclaveos-chart.Backup.CronSchedule" .Values.Backup.CronSchedule) -}}
{{- include "enclaveos-chart.checkCron" (list "enclaveos-chart.Verify.CronSchedule" .Values.Verify.CronSchedule) -}}
{{- include "enclaveos-chart.checkCron" (list "enclaveos-chart.Backup.IncrementalSchedule" .Values.Backup.IncrementalSchedule) -}}
{{- include "enclaveos-chart.validateMethod" . -}}
{{- with .Values.restore.asOf -}}
{{- if not (regexMatch "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$" .) -}}
{{- fail (printf "enclaveos-chart.restore.asOf=%q is not an RFC 3339 time with a zone: write it as 2026-12-07T01:00:00Z (UTC) or 2026-12-07T02:00:00+01:00" .) -}}
{{- end -}}
{{- end -}}
{{- $tz := .Values.Backup.TimeZone -}}
{{- if not (has $tz (splitList "\n" (.Files.Get "files/timezones.txt"))) -}}
{{- fail (printf "enclaveos-chart.Backup.TimeZone=%q is not a time zone of the IANA database (tzdata): use a name such as Etc/UTC or Europe/Berlin (the list: timedatectl list-timezones)" $tz) -}}
{{- end -}}
{{- $e := .Values.global.S3.Endpoint -}}
{{- if and (regexMatch "^[A-Za-z][A-Za-z0-9+.-]*://" $e) (not (regexMatch "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\\s]+" $e)) -}}
{{- fail (printf "global.S3.Endpoint=%q: the S3 API is spoken over http:// or https:// only; give an https:// URL (or a bare host name, which gets https://)" $e) -}}
{{- else if and $e (not (regexMatch "^([Hh][Tt][Tt][Pp][Ss]?://)?([A-Za-z0-9.-]+|\\[[0-9A-Fa-f:.]+\\])(:[0-9]{1,5})?(/[^\\s]*)?$" $e)) -}}
{{- fail (printf "global.S3.Endpoint=%q is not a URL or host name: give https://host[:port] (or a bare host name)" $e) -}}
{{- end -}}
{{- end -}}

{{/*
A cron schedule as the CronJob controller reads it: five fields, each in its range, or a
macro. Fails naming the value. Argument: (list "<value's path>" <schedule>); empty passes.
*/}}
{{- define "enclaveos-chart.checkCron" -}}
{{- $path := index . 0 -}}
{{- $expr := index . 1 | trim -}}
{{- $how := "a schedule is five fields, minute hour day-of-month month day-of-week (e.g. \"30 2 * * *\"), or a macro such as @daily" -}}
{{- if and $expr (not (regexMatch "^@(yearly|annually|monthly|weekly|daily|midnight|hourly)$" $expr)) -}}
{{- $fields := regexSplit "[ \t]+" $expr -1 -}}
{{- if ne (len $fields) 5 -}}
{{- fail (printf "%s=%q has %d fields: %s" $path $expr (len $fields) $how) -}}
{{- end -}}
{{- $specs := list (list "minute" 0 59) (list "hour" 0 23) (list "day of month" 1 31) (list "month" 1 12) (list "day of week" 0 6) -}}
{{- $names := list (dict) (dict) (dict) (dict "jan" "1" "feb" "2" "mar" "3" "apr" "4" "may" "5" "jun" "6" "jul" "7" "aug" "8" "sep" "9" "oct" "10" "nov" "11" "dec" "12") (dict "sun" "0" "mon" "1" "tue" "2" "wed" "3" "thu" "4" "fri" "5" "sat" "6") -}}
{{- range $i, $field := $fields -}}
{{- $spec := index $specs $i -}}
{{- $what := index $spec 0 -}}
{{- $lo := index $spec 1 -}}
{{- $hi := index $spec 2 -}}
{{- range $part := splitList "," (lower $field) -}}
{{- $p := $part -}}
{{- range $name, $number := index $names $i -}}
{{- $p = replace $name $number $p -}}
{{- end -}}
{{- $wild := ternary "\\*|\\?" "\\*" (or (eq $i 2) (eq $i 4)) -}}
{{- if not (regexMatch (printf "^(%s|[0-9]{1,2}(-[0-9]{1,2})?)(/[0-9]{1,3})?$" $wild) $p) -}}
{{- fail (printf "%s=%q: %q is not a %s (a number, a range such as 1-5, a list such as 1,15, * or a step such as */15): %s" $path $expr $part $what $how) -}}
{{- end -}}
{{- $bounds := regexFindAll "[0-9]+" (regexReplaceAll "/.*$" $p "") -1 -}}
{{- range $n := $bounds -}}
{{- if or (lt (atoi $n) $lo) (gt (atoi $n) $hi) -}}
{{- fail (printf "%s=%q: %s %s is out of range %d-%d" $path $expr $what $n $lo $hi) -}}
{{- end -}}
{{- end -}}
{{- if and (eq (len $bounds) 2) (gt (atoi (index $bounds 0)) (atoi (index $bounds 1))) -}}
{{- fail (printf "%s=%q: the %s range %s ends before it starts" $path $expr $what $part) -}}
{{- end -}}
{{- if hasSuffix "/0" $p -}}
{{- fail (printf "%s=%q: a step of 0 in the %s field %q never advances" $path $expr $what $part) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
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

{{/*
Rules of Backup.Method: native is CockroachDB's own BACKUP, so it needs CockroachDB, and only
native backups have incrementals (a dump is always whole).
*/}}
{{- define "enclaveos-chart.validateMethod" -}}
{{- $b := .Values.Backup -}}
{{- if and (eq $b.Method "native") (not .Values.cockroachdb.enabled) (eq .Values.externalDatabase.engine "postgresql") -}}
{{- fail "enclaveos-chart.Backup.Method=native is CockroachDB's own BACKUP, but enclaveos-chart.externalDatabase.engine is postgresql: use enclaveos-chart.Backup.Method=dump for PostgreSQL" -}}
{{- end -}}
{{- if eq $b.Method "native" -}}
{{- if $b.Encryption.Recipients -}}
{{- fail "enclaveos-chart.Backup.Encryption.Recipients (age) encrypts dumps, but enclaveos-chart.Backup.Method=native backups are written by CockroachDB's nodes: unset the recipients and use global.S3.ServerSideEncryption (AES256 or aws:kms), or use Backup.Method=dump" -}}
{{- end -}}
{{- if eq .Values.global.S3.ServerSideEncryption "SSE-C" -}}
{{- fail "global.S3.ServerSideEncryption=SSE-C cannot be used with enclaveos-chart.Backup.Method=native: CockroachDB's nodes write with AES256 or aws:kms only" -}}
{{- end -}}
{{- end -}}
{{- if and $b.IncrementalSchedule (eq (trim $b.IncrementalSchedule) (trim $b.CronSchedule)) -}}
{{- fail (printf "enclaveos-chart.Backup.IncrementalSchedule is the same as enclaveos-chart.Backup.CronSchedule (%q): the full and the incremental backup would start together; give the incrementals other times, e.g. \"0 1-23 * * *\" beside \"0 0 * * *\"" $b.CronSchedule) -}}
{{- end -}}
{{- if $b.IncrementalSchedule -}}
{{- if ne $b.Method "native" -}}
{{- fail (printf "enclaveos-chart.Backup.IncrementalSchedule is set but enclaveos-chart.Backup.Method is %s: incremental backups are native backups only (a dump is always whole); set enclaveos-chart.Backup.Method=native, or unset enclaveos-chart.Backup.IncrementalSchedule" $b.Method) -}}
{{- end -}}
{{- if not $b.CronSchedule -}}
{{- fail "enclaveos-chart.Backup.IncrementalSchedule is set but enclaveos-chart.Backup.CronSchedule is empty: an incremental adds to the newest full backup's chain; set enclaveos-chart.Backup.CronSchedule for the full backups" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* True (non-empty) when the chart needs object storage settings. */}}
{{- define "enclaveos-chart.storageWanted" -}}
{{- if or .Values.Backup.CronSchedule .Values.Backup.IncrementalSchedule .Values.restore.fromObject .Values.Verify.CronSchedule .Values.Verify.HelmTest -}}true{{- end -}}
{{- end -}}

{{/* True (non-empty) when a retention rule is set. */}}
{{- define "enclaveos-chart.retentionOn" -}}
{{- range $name, $n := .Values.Backup.Retention }}{{ if gt (int (default 0 $n)) 0 }}true{{ end }}{{ end -}}
{{- end -}}
