#!/usr/bin/env python3
"""Writes the time zones the chart accepts for Backup.TimeZone: the IANA database's names, as the
pinned PyPI `tzdata` package (requirements-dev.txt) ships them. Rerun after raising that pin;
tests/chart/test_chart_values_errors.py fails while the file and the package disagree."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

TARGET = Path(__file__).resolve().parent.parent / "charts/data-shield/charts/enclaveos-chart/files/timezones.txt"


def zones() -> str:
    names = resources.files("tzdata").joinpath("zones").read_text().split()
    return "\n".join(sorted(set(names))) + "\n"


if __name__ == "__main__":
    TARGET.write_text(zones())
    print(f"wrote {TARGET}")
