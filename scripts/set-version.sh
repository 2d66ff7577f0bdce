#!/usr/bin/env bash
# Set the release version everywhere it is written: the Python package (the image reads it
# from there), both charts' version and appVersion, and the umbrella's dependency on the
# subchart. The release workflow tags the image with appVersion and publishes on tag v<version>;
# tests/release checks that all of them agree. Usage: scripts/set-version.sh 1.2.3
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
version="${1:?usage: scripts/set-version.sh X.Y.Z}"
if [[ ! "${version}" =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]]; then
  echo "not a semantic version: ${version}" >&2
  exit 2
fi
sed -i "s/^__version__ = \".*\"/__version__ = \"${version}\"/" image/src/enclave_backup/__init__.py
for chart in charts/data-shield/Chart.yaml charts/data-shield/charts/enclaveos-chart/Chart.yaml; do
  sed -i -e "s/^version: .*/version: ${version}/" -e "s/^appVersion: .*/appVersion: \"${version}\"/" "${chart}"
done
# The umbrella's one dependency, enclaveos-chart, moves with it.
sed -i "/- name: enclaveos-chart/{n;s/^\(    version: \).*/\1${version}/}" charts/data-shield/Chart.yaml
if ! grep -q "^## \[${version}\]" CHANGELOG.md; then
  echo "version set to ${version}; now add a '## [${version}] - <date>' section to CHANGELOG.md" >&2
fi
