#!/usr/bin/env bash
# Set up (idempotent) and run every test tier: unit, integration (real PostgreSQL and S3
# servers on loopback, started by the tests), chart, end to end, and the container tier (builds
# the image with podman, cached between runs). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
