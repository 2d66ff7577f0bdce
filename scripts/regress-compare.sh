#!/usr/bin/env bash
# Our backup + restore against pg_dump | psql on PostgreSQL's own regression database
# (a few minutes; not part of the test run). Arguments go to scripts/regress_compare.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh >&2
exec .venv/bin/python scripts/regress_compare.py "$@"
