"""The generator of the values schema and table (devkit/valuesdoc.py), on small values files."""

from __future__ import annotations

import pytest

from devkit import valuesdoc

VALUES = """\
# header, not a description

Backup:
  # -- Cron schedule,
  # continued here.
  # @schema {use: cron}
  CronSchedule: ""
  # -- Resources of the container.
  # @schema {type: object}
  Resources:
    requests:
      cpu: 100m
  # -- Retries.
  # @schema {minimum: 0}
  BackoffLimit: 2
  # -- Extra volumes.
  # @schema {items: {use: local-object-reference}}
  ExtraVolumes: []
  # Proxy settings.
  Proxy:
    # -- Proxy URL.
    HttpsProxy: ""
"""


def test_schema_from_defaults_and_annotations():
    schema = valuesdoc.chart_schema(valuesdoc.parse(VALUES), "t")
    backup = schema["properties"]["Backup"]
    assert backup["additionalProperties"] is False and backup["type"] == "object"
    assert backup["properties"]["CronSchedule"] == {
        "type": "string", "description": "Cron schedule, continued here.",
        "pattern": r"^[^\r\n]*$", "maxLength": 100}
    # A typed annotation makes a mapping opaque: its default keys are not the only ones allowed.
    assert backup["properties"]["Resources"] == {"type": "object", "description": "Resources of the container."}
    assert backup["properties"]["BackoffLimit"] == {"type": "integer", "description": "Retries.", "minimum": 0}
    assert backup["properties"]["ExtraVolumes"]["items"]["required"] == ["name"]
    proxy = backup["properties"]["Proxy"]
    assert proxy["description"] == "Proxy settings." and proxy["properties"]["HttpsProxy"]["type"] == "string"


def test_table_lists_leaves_with_defaults():
    table = valuesdoc.values_table(valuesdoc.parse(VALUES))
    assert "| `enclaveos-chart.Backup.CronSchedule` | `\"\"` | Cron schedule, continued here. |" in table
    assert "| `enclaveos-chart.Backup.Resources` | `{requests: {cpu: 100m}}` |" in table
    assert "Proxy.HttpsProxy" in table and "| `enclaveos-chart.Backup.Proxy` |" not in table


def test_unknown_fragment_and_bad_annotation_are_refused():
    with pytest.raises(ValueError, match="'nope' is not one of"):
        valuesdoc.chart_schema(valuesdoc.parse("# -- x\n# @schema {use: nope}\nA: 1\n"), "t")
    with pytest.raises(ValueError, match="@schema needs a mapping"):
        valuesdoc.parse("# -- x\n# @schema minimum\nA: 1\n")


def test_umbrella_values_nest_the_subchart_keys():
    text = "# -- g\nglobal:\n  # -- e\n  E: \"\"\n\n# -- m\nManager:\n  # -- r\n  # @schema {minimum: 0}\n  R: 1\n"
    out = valuesdoc.umbrella_values(text)
    assert "global:\n  # -- e\n  E: \"\"\n\nenclaveos-chart:\n  # -- m\n  Manager:\n    # -- r\n    R: 1\n" in out
    assert "@schema" not in out
