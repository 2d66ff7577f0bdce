{{/*
Names are fixed to <release>-enclaveos-<component>: the manual restore procedure
and users' scripts address <release>-enclaveos-cockroachdb-0 by name.
*/}}
{{- define "enclaveos-chart.fullname" -}}
{{- printf "%s-enclaveos" .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "enclaveos-chart.cockroachdbName" -}}
{{- printf "%s-cockroachdb" (include "enclaveos-chart.fullname" .) -}}
{{- end -}}

{{- define "enclaveos-chart.cockroachdbPublicName" -}}
{{- printf "%s-cockroachdb-public" (include "enclaveos-chart.fullname" .) -}}
{{- end -}}

{{- define "enclaveos-chart.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "enclaveos-chart.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "enclaveos-chart.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: data-shield
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels; call with (dict "ctx" $ "component" "name"). */}}
{{- define "enclaveos-chart.selectorLabels" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Image reference; call with the Image block (Repository/Tag/Digest) and a default tag. */}}
{{- define "enclaveos-chart.image" -}}
{{- $img := index . 0 -}}
{{- $defaultTag := index . 1 -}}
{{- if $img.Digest -}}
{{- printf "%s@%s" $img.Repository $img.Digest -}}
{{- else -}}
{{- printf "%s:%s" $img.Repository (default $defaultTag $img.Tag) -}}
{{- end -}}
{{- end -}}

{{- define "enclaveos-chart.backupImage" -}}
{{- include "enclaveos-chart.image" (list .Values.Backup.Image .Chart.AppVersion) -}}
{{- end -}}

{{/* True (non-empty) when the chart needs object storage settings. */}}
{{- define "enclaveos-chart.storageWanted" -}}
{{- if or .Values.Backup.CronSchedule .Values.restore.fromObject .Values.Verify.CronSchedule .Values.Verify.HelmTest -}}true{{- end -}}
{{- end -}}

{{/*
S3 endpoint as a URL: a bare host (as IBM COS's endpoint table lists them) gets https://.
*/}}
{{- define "enclaveos-chart.s3Endpoint" -}}
{{- $e := .Values.global.S3.Endpoint -}}
{{- if regexMatch "^[A-Za-z][A-Za-z0-9+.-]*://" $e -}}
{{- $e -}}
{{- else -}}
{{- printf "https://%s" $e -}}
{{- end -}}
{{- end -}}

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

{{/* Database and object storage environment shared by the backup, restore and test pods. */}}
{{- define "enclaveos-chart.backupEnv" -}}
{{- if .Values.cockroachdb.enabled }}
- name: PGHOST
  value: {{ include "enclaveos-chart.cockroachdbPublicName" . | quote }}
- name: PGPORT
  value: "26257"
- name: PGUSER
  value: root
- name: PGDATABASE
  value: {{ .Values.cockroachdb.database | quote }}
- name: PGSSLMODE
  # The chart's CockroachDB runs in insecure mode, as the original product did.
  value: disable
- name: ENCLAVE_BACKUP_ENGINE
  value: cockroachdb
{{- else }}
{{- $db := .Values.externalDatabase }}
- name: PGHOST
  value: {{ $db.host | quote }}
- name: PGPORT
  value: {{ $db.port | toString | quote }}
- name: PGUSER
  value: {{ $db.user | quote }}
- name: PGDATABASE
  value: {{ $db.database | quote }}
- name: PGSSLMODE
  value: {{ $db.sslMode | quote }}
- name: ENCLAVE_BACKUP_ENGINE
  value: {{ $db.engine | quote }}
{{- if $db.existingSecret }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $db.existingSecret | quote }}
      key: {{ $db.existingSecretPasswordKey | quote }}
{{- end }}
{{- end }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.global.S3.HmacSecretName | quote }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.global.S3.HmacSecretName | quote }}
      key: AWS_SECRET_ACCESS_KEY
- name: AWS_ENDPOINT_URL
  value: {{ include "enclaveos-chart.s3Endpoint" . | quote }}
- name: AWS_DEFAULT_REGION
  value: {{ default "us-east-1" .Values.global.S3.Region | quote }}
- name: ENCLAVE_BACKUP_BUCKET
  value: {{ .Values.global.S3.Bucket | quote }}
- name: ENCLAVE_BACKUP_PREFIX
  value: {{ .Values.Backup.S3Prefix | quote }}
- name: ENCLAVE_BACKUP_COMPRESSION
  value: {{ .Values.Backup.Compression | quote }}
- name: ENCLAVE_BACKUP_LOCK_TIMEOUT_SECONDS
  value: {{ int .Values.Backup.LockTimeoutSeconds | toString | quote }}
- name: ENCLAVE_BACKUP_INSTALLATION
  # Recorded in every backup: list, latest and restore only see this installation's backups.
  value: {{ .Values.Backup.Installation | default (printf "%s/%s" .Release.Namespace .Release.Name) | quote }}
- name: ENCLAVE_BACKUP_STALE_UPLOAD_SECONDS
  # No backup Job outlives its deadline: an older pending upload is an orphan of a killed pod.
  value: {{ int .Values.Backup.ActiveDeadlineSeconds | toString | quote }}
{{- end -}}

{{/* Restore settings, added to the shared environment in the restore hook Job. */}}
{{- define "enclaveos-chart.restoreEnv" -}}
{{- $r := .Values.restore -}}
- name: ENCLAVE_BACKUP_RESTORE_FORCE
  value: {{ $r.force | toString | quote }}
- name: ENCLAVE_BACKUP_RESTORE_KEEP_PREVIOUS
  value: {{ int $r.keepPrevious | toString | quote }}
- name: ENCLAVE_BACKUP_RESTORE_WAIT_FOR_CLIENTS_SECONDS
  value: {{ int $r.waitForClientsSeconds | toString | quote }}
- name: ENCLAVE_BACKUP_RESTORE_TERMINATE_CLIENTS
  value: {{ $r.terminateClients | toString | quote }}
- name: ENCLAVE_BACKUP_RESTORE_SOURCE_INSTALLATION
  value: {{ $r.sourceInstallation | quote }}
- name: ENCLAVE_BACKUP_RETRY_SECONDS
  # On a fresh install the hook can start before the database accepts connections.
  value: "600"
{{- end }}

{{/* Pod-level security context of every pod running our image. */}}
{{- define "enclaveos-chart.podSecurityContext" -}}
runAsNonRoot: true
# Our image's numeric user; set here too so the kubelet can check it without the image.
runAsUser: 10001
runAsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container security context of every container (restricted Pod Security Standard). */}}
{{- define "enclaveos-chart.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
{{- end -}}

{{/* Pod spec of the backup, restore and test pods; call with (dict "ctx" $ "args" list "restartPolicy" string "extraEnv" string "resources" map); resources default to Backup.Resources. */}}
{{- define "enclaveos-chart.backupPodSpec" -}}
{{- $ := .ctx -}}
serviceAccountName: {{ include "enclaveos-chart.serviceAccountName" $ }}
# After SIGTERM the program stops, aborts its upload within 10 s (even with the store stalled)
# and exits; 30 s leaves room for pg_dump to end. Set, not inherited, because the program relies on it.
terminationGracePeriodSeconds: 30
automountServiceAccountToken: false
restartPolicy: {{ .restartPolicy }}
{{- with $.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- include "enclaveos-chart.podSecurityContext" $ | nindent 2 }}
{{- with $.Values.Backup.NodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.Backup.Tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.Backup.Affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  - name: enclave-backup
    image: {{ include "enclaveos-chart.backupImage" $ | quote }}
    imagePullPolicy: {{ $.Values.Backup.Image.PullPolicy }}
    command: ["enclave-backup"]
    args:
      {{- toYaml .args | nindent 6 }}
    env:
      {{- include "enclaveos-chart.backupEnv" $ | trim | nindent 6 }}
      {{- with .extraEnv }}
      {{- . | nindent 6 }}
      {{- end }}
    {{- with (.resources | default $.Values.Backup.Resources) }}
    resources:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    securityContext:
      {{- include "enclaveos-chart.containerSecurityContext" $ | nindent 6 }}
    volumeMounts:
      - name: tmp
        mountPath: /tmp
volumes:
  # The root filesystem is read-only; the program and its libraries may spill to /tmp.
  - name: tmp
    emptyDir:
      sizeLimit: 1Gi
{{- end -}}

{{/* Retention and metrics settings of the backup and verify runs. */}}
{{- define "enclaveos-chart.opsEnv" -}}
{{- $k := .Values.Backup.Retention -}}
{{- range $name, $env := dict "KeepLast" "KEEP_LAST" "KeepDays" "KEEP_DAYS" "KeepDaily" "KEEP_DAILY" "KeepWeekly" "KEEP_WEEKLY" "KeepMonthly" "KEEP_MONTHLY" }}
- name: ENCLAVE_BACKUP_{{ $env }}
  value: {{ int (default 0 (get $k $name)) | toString | quote }}
{{- end }}
- name: ENCLAVE_BACKUP_READER_MARKER_SECONDS
  # No restore or verify outlives its deadline: an older reader marker is an orphan of a killed pod.
  value: {{ max (int .Values.restore.activeDeadlineSeconds) (int .Values.Verify.ActiveDeadlineSeconds) | toString | quote }}
{{- with .Values.Backup.Metrics.PushgatewayUrl }}
- name: ENCLAVE_BACKUP_PUSHGATEWAY_URL
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* True (non-empty) when a retention rule is set. */}}
{{- define "enclaveos-chart.retentionOn" -}}
{{- range $name, $n := .Values.Backup.Retention }}{{ if gt (int (default 0 $n)) 0 }}true{{ end }}{{ end -}}
{{- end -}}

{{/*
Longest gap in seconds between two runs of a schedule, read from its fields: exact for
macros, hourly, daily, every-N-hours, weekly and monthly schedules; an upper bound otherwise.
*/}}
{{- define "enclaveos-chart.scheduleIntervalSeconds" -}}
{{- $macros := dict "@yearly" 31622400 "@annually" 31622400 "@monthly" 2678400 "@weekly" 604800 "@daily" 86400 "@midnight" 86400 "@hourly" 3600 -}}
{{- if hasKey $macros . -}}
{{- get $macros . -}}
{{- else -}}
{{- $f := regexSplit " +" (trim .) -1 -}}
{{- $hour := index $f 1 -}}
{{- if ne (index $f 3) "*" -}}31622400
{{- else if ne (index $f 2) "*" -}}2678400
{{- else if ne (index $f 4) "*" -}}604800
{{- else if regexMatch "^[*]/[0-9]+$" $hour -}}{{ mul 3600 (int (trimPrefix "*/" $hour)) }}
{{- else if ne $hour "*" -}}86400
{{- else -}}3600
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Failed Jobs of a CronJob that started after its last successful Job (any failed one if it
never succeeded), from kube-state-metrics; call with (dict "ns" namespace "cronjob" name).
*/}}
{{- define "enclaveos-chart.failedJobsExpr" -}}
{{- $ns := printf "namespace=%q" .ns -}}
{{- $cj := printf "namespace=%q, cronjob=%q" .ns .cronjob -}}
(
  max by (namespace, job_name) (kube_job_status_start_time{ {{- $ns -}} })
  and on (namespace, job_name) (kube_job_status_failed{ {{- $ns -}} } > 0)
  and on (namespace, job_name) kube_job_owner{ {{- $ns }}, owner_kind="CronJob", owner_name={{ .cronjob | quote -}} }
)
> on (namespace) group_left ()
(
  max by (namespace) (kube_cronjob_status_last_successful_time{ {{- $cj -}} })
  or
  max by (namespace) (kube_cronjob_created{ {{- $cj -}} }) * 0
)
{{- end -}}
