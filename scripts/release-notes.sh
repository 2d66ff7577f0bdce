#!/usr/bin/env bash
# Print the CHANGELOG.md section of one version (the release notes of its GitHub release).
# Fails when there is none, so a release cannot go out undocumented. Usage: scripts/release-notes.sh 1.2.3
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
version="${1:?usage: scripts/release-notes.sh X.Y.Z}"
notes="$(awk -v v="${version}" '
  /^## \[/ { inside = index($0, "## [" v "]") == 1; next }
  inside { print }
' CHANGELOG.md | sed -e '/./,$!d')"
if [[ -z "${notes//[[:space:]]/}" ]]; then
  echo "CHANGELOG.md has no section '## [${version}]'" >&2
  exit 1
fi
printf '%s\n' "${notes}"
