{{/* Names and labels. Pods and their environment: _pod.tpl; checks of the values: _values.tpl. */}}

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

{{/*
Label of every pod that must reach CockroachDB's SQL port (Manager, backup and incremental
backup, restore, verify, verify test, and the storage check with Backup.Method=native); the
NetworkPolicy admits pods by it, so no other pod of the release gets in.
*/}}
{{- define "enclaveos-chart.sqlClientLabels" -}}
enclaveos-chart/sql-client: "true"
{{- end -}}
