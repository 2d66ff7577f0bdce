{{/* Pod pieces: images, security contexts, and the pods that run the program with its environment. */}}

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

{{/* CockroachDB's image: repository:tag, or repository:tag@digest (the digest decides; the tag stays for readers). */}}
{{- define "enclaveos-chart.cockroachdbImage" -}}
{{- $img := .Values.cockroachdb.image -}}
{{- printf "%s:%s" $img.repository $img.tag -}}
{{- with $img.digest }}@{{ . }}{{ end -}}
{{- end -}}

{{/* The program's image (Backup.Image), in every pod that runs it. */}}
{{- define "enclaveos-chart.programImage" -}}
{{- include "enclaveos-chart.image" (list .Values.Backup.Image .Chart.AppVersion) -}}
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

{{/*
Pod spec of every pod that runs the program (backup, restore, verify, test), with the
Backup.* pod settings they share: Image, security contexts, NodeSelector, Tolerations, Affinity,
PriorityClassName, TopologySpreadConstraints, Proxy, ExtraEnv, EnvFrom, ExtraVolumes and
ExtraVolumeMounts, and Resources unless the caller passes its own. "role" (backup, restore, verify or check) decides which
keys the pod gets (enclaveos-chart.trustFiles). Call with
(dict "ctx" $ "role" string "args" list "restartPolicy" string "extraEnv" string "resources" map).
*/}}
{{- define "enclaveos-chart.programPodSpec" -}}
{{- $ := .ctx -}}
{{- $files := (include "enclaveos-chart.trustFiles" . | fromJson).files -}}
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
{{- with $.Values.Backup.PodSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.Backup.PriorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- with $.Values.Backup.TopologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
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
    image: {{ include "enclaveos-chart.programImage" $ | quote }}
    imagePullPolicy: {{ $.Values.Backup.Image.PullPolicy }}
    command: ["enclave-backup"]
    args:
      {{- toYaml .args | nindent 6 }}
    env:
      {{- include "enclaveos-chart.programEnv" $ | trim | nindent 6 }}
      {{- with .extraEnv }}
      {{- . | trim | nindent 6 }}
      {{- end }}
      {{- with include "enclaveos-chart.trustEnv" . | trim }}
      {{- . | nindent 6 }}
      {{- end }}
      {{- range $files }}
      {{- $dir := .dir }}
      {{- range (.items | default (list .)) }}
      - name: {{ .env }}
        value: {{ printf "%s/%s" $dir .path | quote }}
      {{- end }}
      {{- end }}
      {{- with $.Values.Backup.Proxy }}
      {{- range $name, $value := dict "HTTPS_PROXY" .HttpsProxy "HTTP_PROXY" .HttpProxy "NO_PROXY" .NoProxy }}
      {{- if $value }}
      - name: {{ $name }}
        value: {{ $value | quote }}
      - name: {{ lower $name }}
        value: {{ $value | quote }}
      {{- end }}
      {{- end }}
      {{- end }}
      {{- with $.Values.Backup.ExtraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- with $.Values.Backup.EnvFrom }}
    envFrom:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with (.resources | default $.Values.Backup.Resources) }}
    resources:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    securityContext:
      {{- mergeOverwrite (include "enclaveos-chart.containerSecurityContext" $ | fromYaml) (deepCopy $.Values.Backup.ContainerSecurityContext) | toYaml | nindent 6 }}
    volumeMounts:
      - name: tmp
        mountPath: /tmp
      {{- range $files }}
      - name: {{ .volume }}
        mountPath: {{ .dir }}
        readOnly: true
      {{- end }}
      {{- with $.Values.Backup.ExtraVolumeMounts }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
volumes:
  # The root filesystem is read-only; the program and its libraries may spill to /tmp.
  - name: tmp
    emptyDir:
      sizeLimit: 1Gi
  {{- range $files }}
  - name: {{ .volume }}
    {{- if .secret }}
    secret:
      secretName: {{ .secret | quote }}
      # Only the keys this pod may have; a missing key keeps the pod from starting.
      items:
        {{- range (.items | default (list .)) }}
        - key: {{ .key | quote }}
          path: {{ .path | quote }}
        {{- end }}
      # 0440: owner root, group fsGroup 10001 (the program's group); no one else reads it.
      # (The kubelet writes Secret files as root; 0400 would lock the program out.)
      defaultMode: 288
    {{- else }}
    configMap:
      name: {{ .configMap | quote }}
      items:
        - key: {{ .key | quote }}
          path: {{ .path | quote }}
      # 0444: a CA certificate is public.
      defaultMode: 292
    {{- end }}
  {{- end }}
  {{- with $.Values.Backup.ExtraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/*
The files a program pod mounts from Secrets and ConfigMaps, by its role: keys only where
they are used (the backup signs and encrypts, restore and verify check and decrypt; the
private signing key and the age identity never share a pod), CA certificates and the SSE-C
key in every pod. Call with the programPodSpec dict; returns JSON {"files": [...]}, each
{volume, secret|configMap, key, dir, path, env}: mounted at dir/path, named by env; or, for
several files of one Secret, {volume, secret, dir, items: [{key, path, env}, ...]}. The
database client certificate of secure mode goes only to the pods that connect.
*/}}
{{- define "enclaveos-chart.trustFiles" -}}
{{- $ := .ctx -}}
{{- $role := .role -}}
{{- $reader := has $role (list "restore" "verify") -}}
{{- $files := list -}}
{{- with $.Values.Backup.Signing.SecretName -}}
{{- if eq $role "backup" -}}
{{- $files = append $files (dict "volume" "signing-key" "secret" . "key" "private.pem" "path" "private.pem" "dir" "/etc/enclave-backup/signing" "env" "ENCLAVE_BACKUP_SIGNING_KEY_FILE") -}}
{{- else if $reader -}}
{{- $files = append $files (dict "volume" "signing-public-key" "secret" . "key" "public.pem" "path" "public.pem" "dir" "/etc/enclave-backup/signing" "env" "ENCLAVE_BACKUP_SIGNING_PUBLIC_KEY_FILE") -}}
{{- end -}}
{{- end -}}
{{- $identity := "" -}}
{{- if eq $role "restore" }}{{ $identity = $.Values.restore.identitySecretName }}{{ end -}}
{{- if eq $role "verify" }}{{ $identity = $.Values.Verify.IdentitySecretName }}{{ end -}}
{{- with $identity -}}
{{- $files = append $files (dict "volume" "age-identity" "secret" . "key" "identity.txt" "path" "identity.txt" "dir" "/etc/enclave-backup/age" "env" "ENCLAVE_BACKUP_ENCRYPTION_IDENTITY_FILE") -}}
{{- end -}}
{{- $s3 := $.Values.global.S3 -}}
{{- if eq (default "" $s3.ServerSideEncryption) "SSE-C" -}}
{{- with $s3.SseCustomerKeySecretName -}}
{{- $files = append $files (dict "volume" "sse-customer-key" "secret" . "key" "SSE_CUSTOMER_KEY" "path" "SSE_CUSTOMER_KEY" "dir" "/etc/enclave-backup/sse-c" "env" "ENCLAVE_BACKUP_SSE_CUSTOMER_KEY_FILE") -}}
{{- end -}}
{{- end -}}
{{- $ca := default dict $s3.CaBundle -}}
{{- $caFile := dict "volume" "s3-ca" "key" (default "ca.crt" $ca.Key) "path" "ca.crt" "dir" "/etc/enclave-backup/s3-ca" "env" "AWS_CA_BUNDLE" -}}
{{- if $ca.SecretName -}}
{{- $files = append $files (set $caFile "secret" $ca.SecretName) -}}
{{- else if $ca.ConfigMapName -}}
{{- $files = append $files (set $caFile "configMap" $ca.ConfigMapName) -}}
{{- end -}}
{{- if and (include "enclaveos-chart.tlsOn" $) (include "enclaveos-chart.connects" (dict "ctx" $ "role" $role)) -}}
{{- /* The chart's CockroachDB in secure mode: its CA and root's client pair, for the pods that connect. */ -}}
{{- $client := (include "enclaveos-chart.tlsSources" $ | fromJson).client -}}
{{- $envs := dict "ca.crt" "PGSSLROOTCERT" "client.root.crt" "PGSSLCERT" "client.root.key" "PGSSLKEY" -}}
{{- $items := list -}}
{{- range $client.items }}{{ $items = append $items (set (deepCopy .) "env" (get $envs .path)) }}{{ end -}}
{{- $files = append $files (dict "volume" "db-tls" "secret" $client.secret "dir" "/etc/enclave-backup/db-tls" "items" $items) -}}
{{- end -}}
{{- if not $.Values.cockroachdb.enabled -}}
{{- $db := $.Values.externalDatabase -}}
{{- $dbFile := dict "volume" "db-ca" "key" (default "ca.crt" $db.caKey) "path" "ca.crt" "dir" "/etc/enclave-backup/db-ca" "env" "PGSSLROOTCERT" -}}
{{- if $db.caSecretName -}}
{{- $files = append $files (set $dbFile "secret" $db.caSecretName) -}}
{{- else if $db.caConfigMapName -}}
{{- $files = append $files (set $dbFile "configMap" $db.caConfigMapName) -}}
{{- end -}}
{{- end -}}
{{- toJson (dict "files" $files) -}}
{{- end -}}

{{/*
True (non-empty) when a program pod of this role connects to the database: backup, restore
and verify always; the storage check only with Backup.Method=native, where it has the
CockroachDB nodes reach the store. Call with (dict "ctx" $ "role" string).
*/}}
{{- define "enclaveos-chart.connects" -}}
{{- if or (has .role (list "backup" "restore" "verify")) (and (eq .role "check") (eq .ctx.Values.Backup.Method "native")) -}}true{{- end -}}
{{- end -}}

{{/*
Settings of signing, encryption and server-side encryption that are plain values, by role
(see enclaveos-chart.trustFiles for the files). Recipients are public: the backup gets them
one per line.
*/}}
{{- define "enclaveos-chart.trustEnv" -}}
{{- $ := .ctx -}}
{{- $s3 := $.Values.global.S3 -}}
{{- with $s3.ServerSideEncryption }}
- name: ENCLAVE_BACKUP_SSE
  value: {{ . | quote }}
{{- end }}
{{- with $s3.KmsKeyId }}
- name: ENCLAVE_BACKUP_SSE_KMS_KEY_ID
  value: {{ . | quote }}
{{- end }}
{{- if eq .role "backup" }}
{{- with $.Values.Backup.Encryption.Recipients }}
- name: ENCLAVE_BACKUP_ENCRYPTION_RECIPIENTS
  value: {{ join "\n" . | toJson }}
{{- end }}
{{- end }}
{{- if has .role (list "restore" "verify") }}
- name: ENCLAVE_BACKUP_ALLOW_UNVERIFIED
  value: {{ $.Values.Backup.Signing.AllowUnverified | toString | quote }}
{{- end }}
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
The program's environment in every pod that runs it (backup, restore, verify, test):
the database, the object storage, and the Backup.* settings all its runs share
(S3Prefix, Compression, Method, Native, LockTimeoutSeconds, Installation, ActiveDeadlineSeconds).
*/}}
{{- define "enclaveos-chart.programEnv" -}}
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
  {{- if include "enclaveos-chart.tlsOn" . }}
  # Secure mode: the server's certificate must chain to the CA and name the public Service.
  value: verify-full
  {{- else }}
  # The chart's CockroachDB runs in insecure mode, as the original product did.
  value: disable
  {{- end }}
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
{{- if not .Values.global.S3.WorkloadIdentity }}
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
{{- end }}
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
- name: ENCLAVE_BACKUP_METHOD
  value: {{ .Values.Backup.Method | quote }}
{{- /* Every pod, whatever the Method: a restore or verify of a native backup taken before a
switch back to dump needs them too. toString: --set PathStyle=true arrives as a boolean. */}}
{{- $native := .Values.Backup.Native }}
- name: ENCLAVE_BACKUP_NATIVE_REVISION_HISTORY
  value: {{ $native.RevisionHistory | toString | quote }}
- name: ENCLAVE_BACKUP_NATIVE_PATH_STYLE
  value: {{ $native.PathStyle | toString | quote }}
- name: ENCLAVE_BACKUP_LOCK_TIMEOUT_SECONDS
  value: {{ int .Values.Backup.LockTimeoutSeconds | toString | quote }}
- name: ENCLAVE_BACKUP_INSTALLATION
  # Recorded in every backup: list, latest and restore only see this installation's backups.
  value: {{ .Values.Backup.Installation | default (printf "%s/%s" .Release.Namespace .Release.Name) | quote }}
- name: ENCLAVE_BACKUP_RESTORE_JOBS
  # Read by the restore and the verify, which load a backup the same way.
  value: {{ int .Values.restore.jobs | toString | quote }}
- name: ENCLAVE_BACKUP_STALE_UPLOAD_SECONDS
  # No backup Job outlives its deadline: an older pending upload is an orphan of a killed pod.
  value: {{ int .Values.Backup.ActiveDeadlineSeconds | toString | quote }}
{{- end -}}

{{/* Restore settings, added to the program's environment in the restore hook Job. */}}
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
- name: ENCLAVE_BACKUP_RESTORE_AS_OF
  # Part of what the restore applies: the same object at another time is another restore.
  value: {{ $r.asOf | quote }}
- name: ENCLAVE_BACKUP_RETRY_SECONDS
  # On a fresh install the hook can start before the database accepts connections.
  value: "600"
{{- end }}

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
