#!/usr/bin/env python3
"""Writes charts/data-shield/README.md, what `helm show readme` prints: the install steps and the
values table, taken from README.md and docs/values.md so they are written once. Rerun after editing
those sections; tests/chart/test_chart_docs.py fails while the two disagree."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = REPO / "charts" / "data-shield" / "README.md"
def install_section(readme: str) -> str:
    m = re.search(r"^### Install\n(.*?)(?=^##)", readme, re.S | re.M)
    if not m:
        raise SystemExit("README.md has no section '### Install'")
    return f"## Install\n{m.group(1).rstrip()}\n"


def chart_readme() -> str:
    readme = (REPO / "README.md").read_text()
    values = (REPO / "docs" / "values.md").read_text().replace("# Helm values\n", "## Values\n", 1)
    head = ("# data-shield\n\nScheduled backups of the Enclave Manager's database to S3-compatible object "
            "storage, and restore. Generated from the project's README.md and docs/values.md "
            "(`scripts/gen-chart-readme.py`); the project's README says more: restore, verification, "
            "retention, alerting, security.\n\n")
    body = install_section(readme) + "\n" + values
    return head + re.sub(r"\[([^\]]+)\]\(((?:docs/|CHANGELOG|[a-z]+\.md)[^)#]*)[^)]*\)", _unlinked, body)


def _unlinked(m: re.Match) -> str:
    """Links into the repository do not resolve from the chart: name the file instead."""
    text, path = m.group(1), m.group(2)
    return f"{path} in the project's repository" if text.strip("`") == path else f"{text} ({path} in the project's repository)"


if __name__ == "__main__":
    TARGET.write_text(chart_readme())
    print(f"wrote {TARGET}")
