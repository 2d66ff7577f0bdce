"""Every value is documented once, in the subchart's values.yaml; the schemas, the umbrella's values.yaml
and the values table are generated from it (scripts/gen-values.py) and must match."""

from __future__ import annotations

import functools
import importlib.util
import subprocess

import pytest
import yaml

from devkit import helm as helms
from devkit import valuesdoc

from .conftest import DOC_FLAGS, MANAGER_IMAGE, REPO, SUBCHART, UMBRELLA, render, render_error


@functools.cache
def generated() -> dict:
    return valuesdoc.generated()


@functools.cache
def subchart_leaves() -> list:
    return list(valuesdoc.leaves(valuesdoc.parse((SUBCHART / "values.yaml").read_text())))


def subchart_values():
    for value in subchart_leaves():
        yield value.path if value.path.startswith("global.") else f"enclaveos-chart.{value.path}"


def test_every_value_is_in_the_values_table():
    table = (REPO / "docs" / "values.md").read_text()
    missing = [p for p in subchart_values() if f"| `{p}` |" not in table]
    assert missing == []


def test_every_value_has_a_description_where_declared():
    undocumented = [v.path for v in subchart_leaves() if not v.description]
    assert undocumented == []


@pytest.mark.parametrize("path", list(generated()), ids=lambda p: str(p.relative_to(REPO)))
def test_generated_files_match_values_yaml(path):
    assert path.read_text() == generated()[path], "run scripts/gen-values.py"


def test_the_generated_schema_is_what_helm_checks(helm):
    """Helm checks the generated schema: an unknown key fails with its name, a good value passes."""
    error = render_error(helm, *DOC_FLAGS, *MANAGER_IMAGE, "enclaveos-chart.Backup.NoSuchKey=1")
    assert "NoSuchKey" in error, error
    assert render(helm, *DOC_FLAGS, *MANAGER_IMAGE, "enclaveos-chart.Verify.CronSchedule=@weekly")


def test_helm_show_values_on_the_umbrella_shows_every_setting():
    shown = subprocess.run([str(helms.binary("helm4")), "show", "values", str(UMBRELLA)],
                           capture_output=True, text=True, check=True).stdout
    values = yaml.safe_load(shown)
    sub = yaml.safe_load((SUBCHART / "values.yaml").read_text())
    assert values["global"] == sub["global"]
    assert values["enclaveos-chart"] == {k: v for k, v in sub.items() if k != "global"}
    assert "# -- Cron schedule of the backup CronJob" in shown


def test_helm_show_readme_is_the_generated_install_and_values_sections():
    spec = importlib.util.spec_from_file_location("gen_chart_readme", REPO / "scripts" / "gen-chart-readme.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (UMBRELLA / "README.md").read_text() == gen.chart_readme(), "run scripts/gen-chart-readme.py"
    shown = subprocess.run([str(helms.binary("helm4")), "show", "readme", str(UMBRELLA)], capture_output=True, text=True)
    assert "| `enclaveos-chart.Backup.CronSchedule` |" in shown.stdout and "## Install" in shown.stdout
