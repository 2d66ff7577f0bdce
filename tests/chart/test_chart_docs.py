"""Every value is documented: in values.yaml where it is declared, and in the values table."""

from __future__ import annotations

import importlib.util
import subprocess

import yaml

from devkit import helm as helms

from .conftest import REPO, SUBCHART, UMBRELLA

# Maps and lists users fill in are leaves too; descend only into our own blocks.
OPAQUE = {"Env", "Resources", "NodeSelector", "Tolerations", "Affinity", "PodAnnotations",
          "resources", "nodeSelector", "tolerations", "affinity", "imagePullSecrets", "commonLabels",
          "PodSecurityContext"}


def leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in OPAQUE:
            yield from leaves(value, path + ".")
        else:
            yield path


def subchart_values():
    values = yaml.safe_load((SUBCHART / "values.yaml").read_text())
    for path in leaves(values):
        yield path if path.startswith("global.") else f"enclaveos-chart.{path}"


def test_every_value_is_in_the_values_table():
    table = (REPO / "docs" / "values.md").read_text()
    missing = [p for p in subchart_values() if f"| `{p}` |" not in table]
    assert missing == []


def leaf_lines(node, prefix=""):
    """(path, line) of every leaf key, from the YAML node tree (keeps line numbers)."""
    for key_node, value_node in node.value:
        path = f"{prefix}{key_node.value}"
        if isinstance(value_node, yaml.MappingNode) and value_node.value and key_node.value not in OPAQUE:
            yield from leaf_lines(value_node, path + ".")
        else:
            yield path, key_node.start_mark.line


def test_every_value_has_a_comment_where_declared():
    for path in (UMBRELLA / "values.yaml", SUBCHART / "values.yaml"):
        text = path.read_text()
        lines = text.splitlines()
        undocumented = [
            f"{path.name}:{line + 1} {key}"
            for key, line in leaf_lines(yaml.compose(text))
            if not lines[line - 1].strip().startswith("#")
        ]
        assert undocumented == []


def test_helm_show_readme_is_the_generated_install_and_values_sections():
    spec = importlib.util.spec_from_file_location("gen_chart_readme", REPO / "scripts" / "gen-chart-readme.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (UMBRELLA / "README.md").read_text() == gen.chart_readme(), "run scripts/gen-chart-readme.py"
    shown = subprocess.run([str(helms.binary("helm4")), "show", "readme", str(UMBRELLA)], capture_output=True, text=True)
    assert "| `enclaveos-chart.Backup.CronSchedule` |" in shown.stdout and "## Install" in shown.stdout
