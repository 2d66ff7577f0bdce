#!/usr/bin/env bash
# CockroachDB-format load benchmark: INSERT batches over 1, 2, 4 connections, through a proxy that
# delays every answer (a distributed commit's round trip). Arguments go to scripts/bench_inserts.py.
# Results: bench-results/inserts-<timestamp>.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh >&2
.venv/bin/python -m compileall -q image/src >/dev/null
exec .venv/bin/python scripts/bench_inserts.py "$@"
