#!/usr/bin/env bash
# One-time (idempotent) set-up of everything the tests, the demo and the benchmark need:
# Debian packages (PostgreSQL, Ceph RGW, podman), a virtualenv with pinned packages, and the
# pinned Helm binaries.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

missing=()
[[ -x /usr/lib/postgresql/15/bin/initdb ]] || missing+=(postgresql-15)
command -v pg_dump >/dev/null || missing+=(postgresql-client-15)
# PostGIS: its configuration table (spatial_ref_sys) is what verify's extension-table counting is tested on.
[[ -f /usr/share/postgresql/15/extension/postgis.control ]] || missing+=(postgresql-15-postgis-3)
command -v unzip >/dev/null || missing+=(unzip)
command -v runuser >/dev/null || missing+=(util-linux)
# Ceph RGW, the real S3 implementation the end-to-end tests run against (scripts/rgw.sh).
command -v radosgw >/dev/null || missing+=(radosgw)
command -v ceph-mon >/dev/null || missing+=(ceph-mon)
command -v ceph-osd >/dev/null || missing+=(ceph-osd)
command -v radosgw-admin >/dev/null && command -v ceph >/dev/null || missing+=(ceph-common)
command -v curl >/dev/null || missing+=(curl)
# The reference age CLI: the manual decryption path the README shows is tested with it.
command -v age >/dev/null || missing+=(age)
# The real Pushgateway the metrics tests push to.
command -v prometheus-pushgateway >/dev/null || missing+=(prometheus-pushgateway)
# The container tier (tests/container): build the image with podman, run the pods from it.
for cmd in podman buildah runc debootstrap openssl; do
  command -v "${cmd}" >/dev/null || missing+=("${cmd}")
done
command -v newuidmap >/dev/null || missing+=(uidmap)
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing Debian packages: ${missing[*]}; install them (as root: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  say "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
  say "creating the virtualenv in .venv"
  python3 -m venv .venv
fi
# Reinstall only when the pins changed. The program and the development kit (devkit/: the
# servers, pod runners and corpus the tests, the demo and the benchmarks import) install
# editable, in the same run as the pins they use.
stamp=.venv/.pins.sha256
want=$(cat requirements-dev.txt image/pyproject.toml devkit/pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  say "installing pinned Python packages"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt -e image -e devkit
  echo "$want" > "$stamp"
fi

say "installing PostgreSQL 14, 16, 17 and 18 binaries (tests against every supported server)"
scripts/install-postgres.sh

say "installing pinned Helm binaries"
scripts/install-helm.sh
