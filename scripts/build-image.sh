#!/usr/bin/env bash
# Build image/Dockerfile with podman, as enclave-backup:<version>.
#
# Where no container registry is reachable, the Debian bookworm base image is made
# locally with debootstrap and tagged as the name the Dockerfile uses. podman needs
# runc and raised ulimits on our build machines; both go into a project-local
# containers.conf. The container test tier (tests/container) runs this first; podman's
# layer cache keeps a rebuild with unchanged inputs to seconds.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${repo_root}/.tools"
base_image="docker.io/library/debian:bookworm-slim"
version="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "${repo_root}/image/src/enclave_backup/__init__.py")"
tag="${1:-enclave-backup:${version}}"

missing=()
for cmd in podman buildah runc debootstrap; do
  command -v "${cmd}" >/dev/null || missing+=("${cmd}")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]} from Debian" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman buildah runc debootstrap uidmap >/dev/null
fi

mkdir -p "${tools}"
export CONTAINERS_CONF="${tools}/containers.conf"
cat >"${CONTAINERS_CONF}" <<'CONF'
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"
CONF

if ! podman image exists "${base_image}"; then
  rootfs="$(mktemp -d)"
  trap 'rm -rf "${rootfs}"' EXIT
  echo "building the base image ${base_image} with debootstrap" >&2
  debootstrap --variant=minbase bookworm "${rootfs}" http://deb.debian.org/debian >/dev/null
  # The slim image has no apt lists, package archives, docs or translations; nor has ours.
  rm -rf "${rootfs}"/var/lib/apt/lists/* "${rootfs}"/var/cache/apt/*.bin "${rootfs}"/var/cache/apt/archives/*.deb \
    "${rootfs}"/usr/share/doc/* "${rootfs}"/usr/share/man/* "${rootfs}"/usr/share/locale/*
  tar -C "${rootfs}" -c . | podman import --change 'CMD ["bash"]' - "${base_image}" >/dev/null
fi

# Build machines that reach PyPI through a TLS-intercepting proxy name its CA bundle
# in PIP_CERT; hand it to pip inside the build without baking it into the image.
ca_args=()
if [[ -n "${PIP_CERT:-}" && -f "${PIP_CERT}" ]]; then
  ca_args=(--volume "${PIP_CERT}:/etc/pip-ca.crt:ro" --build-arg PIP_CERT=/etc/pip-ca.crt)
fi

# Cached layers are reused, except the security-update layer on the first build of each day.
podman build --pull=never --network host --layers "${ca_args[@]}" --build-arg "UPDATES_DAY=$(date -u +%F)" \
  -t "${tag}" -f "${repo_root}/image/Dockerfile" "${repo_root}/image"

# Smoke test: runs as the numeric user with a read-only root filesystem.
podman run --rm --network none --read-only --tmpfs /tmp "${tag}" --help >/dev/null
echo "built ${tag}"
