#!/usr/bin/env bash
# The whole flow locally: PostgreSQL + S3 server, the chart rendered with the documented
# flags, its backup CronJob pod, a listing, damage, the restore hook Job. Installs what is
# missing first (scripts/setup.sh); leaves nothing running. Options: --helm helm3|helm4.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
