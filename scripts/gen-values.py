#!/usr/bin/env python3
"""Writes what is generated from charts/data-shield/charts/enclaveos-chart/values.yaml: both
charts' values.schema.json, the umbrella chart's values.yaml, the values table of docs/values.md,
and then the chart README (scripts/gen-chart-readme.py). Rerun after editing that values.yaml;
tests/chart/test_chart_docs.py fails while any of them differs. The annotations it reads are
described in devkit/src/devkit/valuesdoc.py."""

from __future__ import annotations

import runpy
from pathlib import Path

from devkit import valuesdoc

if __name__ == "__main__":
    for path, content in valuesdoc.generated().items():
        path.write_text(content)
        print(f"wrote {path}")
    runpy.run_path(str(Path(__file__).with_name("gen-chart-readme.py")), run_name="__main__")
