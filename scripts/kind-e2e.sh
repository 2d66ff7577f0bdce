#!/usr/bin/env bash
# The chart on a real cluster (CI: kind): MinIO in the cluster, the chart with its own
# CockroachDB and the README's flags, one backup Job from the CronJob, the restore hook that
# brings the data back, and `helm test`; then `ct install` of the chart with ci/kind/ct-values.yaml.
# Uses the current kubectl context.
#
#   IMAGE=enclave-backup:e2e scripts/kind-e2e.sh      # the image must be on the nodes (kind load)
#   DRY_RUN=1 scripts/kind-e2e.sh                     # no cluster: print the kubectl commands and
#                                                     # render each helm step (the chart tests run this)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ns="${NAMESPACE:-enclave-e2e}"
release="${RELEASE:-enclave}"
image="${IMAGE:-enclave-backup:e2e}"
helm="${HELM:-helm}"
dry="${DRY_RUN:-}"

kube() {
  if [[ -n "${dry}" ]]; then echo "kubectl -n ${ns} $*"; else kubectl -n "${ns}" "$@"; fi
}

# helm install/upgrade, or with DRY_RUN their render (fails on bad values as install would).
chart() {
  local verb="$1"; shift
  if [[ -n "${dry}" ]]; then
    local args=() arg
    # An upgrade renders as an install with the first install's flags, as --reuse-values keeps them.
    if [[ "${verb}" == upgrade ]]; then args=("${flags[@]}"); fi
    for arg in "$@"; do [[ "${arg}" == --reuse-values ]] || args+=("${arg}"); done
    set -- "${args[@]}"
    "${helm}" template "${release}" charts/data-shield -n "${ns}" "$@" >/dev/null
    echo "helm ${verb} ${release}: rendered"
  else
    "${helm}" "${verb}" "${release}" charts/data-shield -n "${ns}" --wait --wait-for-jobs --timeout 15m "$@"
  fi
}

sql() {
  kube exec "statefulset/${release}-enclaveos-cockroachdb" -c cockroachdb -- \
    ./cockroach sql --insecure --format=csv -e "$1"
}

# The image under test, for the main install and for ct install (one word each, as ct passes them on).
image_sets=(
  "--set=enclaveos-chart.Backup.Image.Repository=${image%:*}"
  "--set=enclaveos-chart.Backup.Image.Tag=${image##*:}"
  --set=enclaveos-chart.Backup.Image.PullPolicy=Never
)
flags=(
  --set "enclaveos-chart.Backup.CronSchedule=0 0 * * *"
  --set global.S3.Endpoint=http://minio:9000
  --set global.S3.Bucket=acme-enclave-manager-backups
  --set global.S3.HmacSecretName=enclave-manager-backup-credentials
  --set enclaveos-chart.Backup.S3Prefix=e2e
  --set enclaveos-chart.Backup.Signing.SecretName=enclave-backup-signing
  --set enclaveos-chart.Verify.HelmTest=true
  # No Manager image here: the Manager is held at 0 replicas.
  --set enclaveos-chart.Manager.Image.Repository=registry.example.com/enclave-manager
  --set enclaveos-chart.Manager.Image.Tag=1.0.0
  --set enclaveos-chart.Manager.ReplicaCount=0
  "${image_sets[@]}"
)

if [[ -z "${dry}" ]]; then
  kubectl create namespace "${ns}" --dry-run=client -o yaml | kubectl apply -f -
fi
kube apply -f ci/kind/minio.yaml
kube rollout status deployment/minio --timeout=300s
kube wait --for=condition=complete job/minio-bucket --timeout=300s
kube create secret generic enclave-manager-backup-credentials \
  --from-literal=AWS_ACCESS_KEY_ID=e2e-access-key --from-literal=AWS_SECRET_ACCESS_KEY=e2e-secret-key-0123456789
keys="$(mktemp -d)"
trap 'rm -rf "${keys}"' EXIT
openssl genpkey -algorithm ed25519 -out "${keys}/private.pem"
openssl pkey -in "${keys}/private.pem" -pubout -out "${keys}/public.pem"
kube create secret generic enclave-backup-signing --from-file="${keys}/private.pem" --from-file="${keys}/public.pem"

chart install "${flags[@]}"
sql "CREATE DATABASE IF NOT EXISTS malbork; CREATE TABLE IF NOT EXISTS malbork.orders (id INT PRIMARY KEY, note STRING);
     UPSERT INTO malbork.orders SELECT g, 'order ' || g::STRING FROM generate_series(1, 1000) g"

kube create job --from="cronjob/${release}-enclaveos-backup" e2e-backup
kube wait --for=condition=complete job/e2e-backup --timeout=600s
kube logs job/e2e-backup | grep -q '"event": "backup complete"' || [[ -n "${dry}" ]]

sql "DELETE FROM malbork.orders WHERE id > 10"
chart upgrade --reuse-values --set enclaveos-chart.restore.fromObject=latest
if [[ -z "${dry}" ]]; then
  count="$(sql "SELECT count(*) FROM malbork.orders" | tail -1)"
  [[ "${count}" == 1000 ]] || { echo "after the restore malbork.orders holds ${count} rows, not 1000" >&2; exit 1; }
fi
chart upgrade --reuse-values --set enclaveos-chart.restore.fromObject=

if [[ -z "${dry}" ]]; then
  "${helm}" test "${release}" -n "${ns}" --logs --timeout 15m
  "${helm}" uninstall "${release}" -n "${ns}" --wait
fi

# ct install: install, helm test and uninstall of a copy of the chart whose only ci/ values file
# is ci/kind/ct-values.yaml (the others need what this cluster lacks: an external database, a proxy).
stage="$(mktemp -d)"
trap 'rm -rf "${keys}" "${stage}"' EXIT
cp -r charts/data-shield "${stage}/"
rm -f "${stage}"/data-shield/ci/*-values.yaml
cp ci/kind/ct-values.yaml "${stage}/data-shield/ci/kind-values.yaml"
if [[ -n "${dry}" ]]; then
  "${helm}" template ct "${stage}/data-shield" -n "${ns}" -f "${stage}/data-shield/ci/kind-values.yaml" "${image_sets[@]}" >/dev/null
  echo "ct install ${stage}/data-shield: rendered"
else
  ct install --config ct.yaml --charts "${stage}/data-shield" --namespace "${ns}" \
    --release-label app.kubernetes.io/instance --helm-extra-set-args "${image_sets[*]}" \
    --helm-extra-args "--timeout 900s"
fi
if [[ -n "${dry}" ]]; then
  echo "kind e2e (dry run): every helm step rendered"
else
  echo "kind e2e: backup, restore, helm test and ct install passed"
fi
