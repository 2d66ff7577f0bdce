#!/usr/bin/env bash
# Before a release publishes anything: the tag is v<version>, every place that carries the
# version agrees, the chart's default Backup.Image is where this release pushes the image,
# and CHANGELOG.md has the version's notes. Writes version, image and chart-repository to
# $GITHUB_OUTPUT. Reads GITHUB_REF_NAME, GITHUB_REPOSITORY_OWNER, REGISTRY and IMAGE_NAME.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail() { echo "::error::$*" >&2; exit 1; }

version="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' image/src/enclave_backup/__init__.py)"
[[ -n "${version}" ]] || fail "no __version__ in image/src/enclave_backup/__init__.py"
for chart in charts/data-shield/Chart.yaml charts/data-shield/charts/enclaveos-chart/Chart.yaml; do
  [[ "$(sed -n 's/^version: //p' "${chart}")" == "${version}" ]] || fail "${chart}: version is not ${version}"
  [[ "$(sed -n 's/^appVersion: "\(.*\)"$/\1/p' "${chart}")" == "${version}" ]] || fail "${chart}: appVersion is not ${version}"
done
dependency="$(sed -n '/- name: enclaveos-chart/{n;s/^ *version: //p}' charts/data-shield/Chart.yaml)"
[[ "${dependency}" == "${version}" ]] || fail "charts/data-shield/Chart.yaml: dependency enclaveos-chart is ${dependency}, not ${version}"
[[ "${GITHUB_REF_NAME}" == "v${version}" ]] || fail "tag ${GITHUB_REF_NAME} is not v${version}; run scripts/set-version.sh first"

# Registry paths are lower case; GitHub owners need not be.
owner="${GITHUB_REPOSITORY_OWNER,,}"
image="${REGISTRY}/${owner}/${IMAGE_NAME}"
default="$(awk '/^[^ #]/ { backup = ($1 == "Backup:") } backup && /^  Image:/ { img = 1; next }
  backup && img && /^    Repository:/ { print $2; exit } /^  [^ ]/ { img = 0 }' \
  charts/data-shield/charts/enclaveos-chart/values.yaml)"
[[ "${default}" == "${image}" ]] || fail "the chart's default Backup.Image.Repository is ${default}, but this release pushes ${image}"

scripts/release-notes.sh "${version}" >/dev/null || fail "CHANGELOG.md has no section for ${version}"

{
  echo "version=${version}"
  echo "image=${image}"
  echo "chart-repository=${REGISTRY}/${owner}/charts"
} >>"${GITHUB_OUTPUT:-/dev/stdout}"
