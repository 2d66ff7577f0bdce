{{/* CockroachDB's secure mode (cockroachdb.tls): where the certificates come from, and who gets which. */}}

{{/* True (non-empty) when the chart's own CockroachDB runs with certificates. */}}
{{- define "enclaveos-chart.tlsOn" -}}
{{- if and .Values.cockroachdb.enabled .Values.cockroachdb.tls.enabled -}}true{{- end -}}
{{- end -}}

{{- define "enclaveos-chart.validateTls" -}}
{{- $tls := .Values.cockroachdb.tls -}}
{{- if $tls.enabled -}}
{{- if not .Values.cockroachdb.enabled -}}
{{- fail "enclaveos-chart.cockroachdb.tls.enabled=true applies to the chart's own CockroachDB, but enclaveos-chart.cockroachdb.enabled is false: for an external database set enclaveos-chart.externalDatabase.sslMode and caSecretName instead" -}}
{{- end -}}
{{- if and $tls.certManager.enabled $tls.secretName -}}
{{- fail "enclaveos-chart.cockroachdb.tls.secretName and enclaveos-chart.cockroachdb.tls.certManager.enabled are both set: name the Secret with the certificates, or let cert-manager issue them, not both" -}}
{{- end -}}
{{- if not (or $tls.certManager.enabled $tls.secretName) -}}
{{- fail "enclaveos-chart.cockroachdb.tls.enabled=true needs certificates: set enclaveos-chart.cockroachdb.tls.secretName to a Secret with ca.crt, node.crt, node.key, client.root.crt and client.root.key, or set enclaveos-chart.cockroachdb.tls.certManager.enabled=true" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Names of the Secrets cert-manager writes. */}}
{{- define "enclaveos-chart.tlsNodeSecret" -}}
{{- printf "%s-node-tls" (include "enclaveos-chart.cockroachdbName" .) -}}
{{- end -}}
{{- define "enclaveos-chart.tlsClientSecret" -}}
{{- printf "%s-client-root-tls" (include "enclaveos-chart.cockroachdbName" .) -}}
{{- end -}}

{{/*
The certificate files, as projected-volume sources, JSON {"node": [...], "client": {...}}:
"node" is what the CockroachDB pods get (CA, node pair, root client pair for `cockroach sql`
in the pod), "client" what the program pods get (CA and the root client pair). Each source is
{secret, items: [{key, path}]}; paths are CockroachDB's file names in both modes, the keys
differ (cert-manager writes tls.crt/tls.key).
*/}}
{{- define "enclaveos-chart.tlsSources" -}}
{{- $tls := .Values.cockroachdb.tls -}}
{{- $ca := dict "key" "ca.crt" "path" "ca.crt" -}}
{{- if $tls.certManager.enabled -}}
{{- $node := dict "secret" (include "enclaveos-chart.tlsNodeSecret" .) "items" (list $ca (dict "key" "tls.crt" "path" "node.crt") (dict "key" "tls.key" "path" "node.key")) -}}
{{- $pair := list (dict "key" "tls.crt" "path" "client.root.crt") (dict "key" "tls.key" "path" "client.root.key") -}}
{{- $client := include "enclaveos-chart.tlsClientSecret" . -}}
{{- toJson (dict "node" (list $node (dict "secret" $client "items" $pair)) "client" (dict "secret" $client "items" (prepend $pair $ca))) -}}
{{- else -}}
{{- $pair := list (dict "key" "client.root.crt" "path" "client.root.crt") (dict "key" "client.root.key" "path" "client.root.key") -}}
{{- $node := concat (list $ca (dict "key" "node.crt" "path" "node.crt") (dict "key" "node.key" "path" "node.key")) $pair -}}
{{- toJson (dict "node" (list (dict "secret" $tls.secretName "items" $node)) "client" (dict "secret" $tls.secretName "items" (prepend $pair $ca))) -}}
{{- end -}}
{{- end -}}

{{/* Host names the node certificate must carry: clients use the public Service, nodes advertise <pod>.<headless Service>. */}}
{{- define "enclaveos-chart.tlsNodeNames" -}}
{{- $name := include "enclaveos-chart.cockroachdbName" . -}}
{{- $public := include "enclaveos-chart.cockroachdbPublicName" . -}}
{{- $ns := .Release.Namespace -}}
{{- $domain := .Values.cockroachdb.tls.certManager.clusterDomain -}}
{{- $names := list "localhost" $public (printf "%s.%s" $public $ns) (printf "%s.%s.svc" $public $ns) (printf "%s.%s.svc.%s" $public $ns $domain) -}}
{{- $names = concat $names (list $name (printf "*.%s" $name) (printf "*.%s.%s" $name $ns) (printf "*.%s.%s.svc" $name $ns) (printf "*.%s.%s.svc.%s" $name $ns $domain)) -}}
{{- toJson $names -}}
{{- end -}}
