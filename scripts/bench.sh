#!/usr/bin/env bash
# Backup/restore benchmark against the pipelines users run (Zalando's pg_dump | pigz | aws s3 cp,
# postgres-backup-s3's pg_dump -Fc + aws s3 cp) and the pg_dump floor, against moto and Ceph RGW.
# Arguments go to scripts/bench.py (--size-gib, --runs, --scale, --s3, --no-restore).
# Results: bench-results/<timestamp>.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh >&2
if ! command -v pigz >/dev/null; then
  echo "installing pigz from Debian" >&2
  apt-get install -y -qq --no-install-recommends pigz >/dev/null
fi
# The official AWS CLI pins its own botocore: a virtualenv of its own.
AWSCLI_VERSION=1.46.3
if [[ "$(.tools/awscli/bin/aws --version 2>&1)" != aws-cli/${AWSCLI_VERSION}* ]]; then
  echo "installing awscli ${AWSCLI_VERSION} into .tools/awscli" >&2
  python3 -m venv .tools/awscli
  .tools/awscli/bin/pip install -q --disable-pip-version-check "awscli==${AWSCLI_VERSION}"
fi
# The image runs bytecode compiled when it is built (image/Dockerfile); so do the measured runs,
# not sources compiled again by every command (PYTHONDONTWRITEBYTECODE keeps them from being cached).
.venv/bin/python -m compileall -q image/src >/dev/null
exec .venv/bin/python scripts/bench.py "$@"
