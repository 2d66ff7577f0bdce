{{/* Names and labels. Pods and their environment: _pod.tpl; checks of the values: _values.tpl. */}}

{{/*
Names are fixed to <release>-enclaveos-<component>: the manual restore procedure
and users' scripts address <release>-enclaveos-cockroachdb-0 by name. Only release names
too long for Kubernetes' limits get shortened names (componentName).
*/}}
{{- define "enclaveos-chart.fullname" -}}
{{- include "enclaveos-chart.fitName" (dict "ctx" . "name" (printf "%s-enclaveos" .Release.Name) "suffix" "" "max" 52) -}}
{{- end -}}

{{/*
<fullname>-<component>, at most `max` characters (Kubernetes: CronJob and StatefulSet names 52,
as their Jobs' and Pods' labels add a suffix; Services and Jobs 63).
*/}}
{{- define "enclaveos-chart.componentName" -}}
{{- include "enclaveos-chart.fitName" (dict "ctx" .ctx "name" (include "enclaveos-chart.fullname" .ctx) "suffix" (printf "-%s" .component) "max" .max) -}}
{{- end -}}

{{/*
name + suffix when it has at most `max` characters. Only a release name too long for that is
cut, and then followed by a hash of it, so two long release names that share a prefix still
get different names.
*/}}
{{- define "enclaveos-chart.fitName" -}}
{{- $name := printf "%s%s" .name .suffix -}}
{{- if gt (len $name) (int .max) -}}
{{- $keep := sub (sub (int .max) (len .suffix)) 6 | int -}}
{{- $name = printf "%s-%s%s" (.name | trunc $keep | trimSuffix "-") (sha256sum .ctx.Release.Name | trunc 5) .suffix -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{- define "enclaveos-chart.cockroachdbName" -}}
{{- include "enclaveos-chart.componentName" (dict "ctx" . "component" "cockroachdb" "max" 52) -}}
{{- end -}}

{{- define "enclaveos-chart.cockroachdbPublicName" -}}
{{- include "enclaveos-chart.componentName" (dict "ctx" . "component" "cockroachdb-public" "max" 63) -}}
{{- end -}}

{{- define "enclaveos-chart.backupName" -}}
{{- include "enclaveos-chart.componentName" (dict "ctx" . "component" "backup" "max" 52) -}}
{{- end -}}

{{- /* A Job started by hand from the backup CronJob (the NOTES' command) is this plus "-<epoch seconds>": 63 at most. */}}
{{- define "enclaveos-chart.manualBackupPrefix" -}}
{{- include "enclaveos-chart.componentName" (dict "ctx" . "component" "backup-manual" "max" 52) -}}
{{- end -}}

{{- define "enclaveos-chart.incrementalName" -}}
{{- include "enclaveos-chart.componentName" (dict "ctx" . "component" "backup-incremental" "max" 52) -}}
{{- end -}}

{{- define "enclaveos-chart.verifyName" -}}
{{- include "enclaveos-chart.componentName" (dict "ctx" . "component" "verify" "max" 52) -}}
{{- end -}}

{{- define "enclaveos-chart.restoreName" -}}
{{- include "enclaveos-chart.componentName" (dict "ctx" . "component" "restore" "max" 63) -}}
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

{{/*
Label of every pod that must reach CockroachDB's SQL port (Manager, backup and incremental
backup, restore, verify, verify test, and the storage check with Backup.Method=native); the
NetworkPolicy admits pods by it, so no other pod of the release gets in.
*/}}
{{- define "enclaveos-chart.sqlClientLabels" -}}
enclaveos-chart/sql-client: "true"
{{- end -}}
