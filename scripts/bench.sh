#!/usr/bin/env bash
# Backup/restore benchmark against the plain pipeline; arguments go to scripts/bench.py
# (--size-gib, --runs, --scale, --no-restore). Results: bench-results/<timestamp>.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh >&2
exec .venv/bin/python scripts/bench.py "$@"
