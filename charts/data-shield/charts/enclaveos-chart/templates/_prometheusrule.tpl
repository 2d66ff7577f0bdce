{{/* Pieces of the PrometheusRule's expressions. */}}

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
