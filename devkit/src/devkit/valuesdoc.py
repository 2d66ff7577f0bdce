"""The chart's values are documented once, in the subchart's values.yaml, and everything else is
generated from it: both charts' values.schema.json, the umbrella chart's values.yaml (what `helm
show values` prints) and the values table of docs/values.md.

Annotations, directly above a key:
  # -- text          the value's description (schema and table); continued by the following
                     plain comment lines
  # @schema {...}    JSON-schema keywords (a YAML flow mapping) merged over what the default
                     implies; "use: NAME" inside it inlines a fragment of FRAGMENTS.

What the default implies: its type; a non-empty mapping is an object of exactly the keys listed
(descended into, additionalProperties false) unless its annotation gives a type, which makes it
an opaque value the user fills in (Resources, PodSecurityContext).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field

import yaml

from devkit.paths import REPO
from devkit.release import SUBCHART, UMBRELLA

SUBCHART_NAME = SUBCHART.name
VALUES_MD = REPO / "docs" / "values.md"
TABLE_BEGIN = "<!-- values table: generated from values.yaml by scripts/gen-values.py -->"
TABLE_END = "<!-- end of values table -->"

K8S_NAME = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_LABEL_SELECTOR = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["key", "operator"],
            "properties": {"key": {"type": "string", "minLength": 1},
                           "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                           "values": {"type": "array", "items": {"type": "string"}}}}},
    },
}
# Shapes used by several values; named here so values.yaml names them instead of repeating them.
FRAGMENTS = {
    # An optional name of a Secret or ConfigMap (DNS-1123 subdomain).
    "k8s-name": {"type": "string", "pattern": K8S_NAME, "maxLength": 253},
    "image-digest": {"type": "string", "pattern": "^$|^sha256:[a-f0-9]{64}$"},
    "pull-policy": {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]},
    "cron": {"type": "string", "pattern": r"^[^\r\n]*$", "maxLength": 100},
    # A point in time: its RFC 3339 form is checked by the templates (enclaveos-chart.checkTime), whose
    # message says what to write; a schema pattern would print only the pattern.
    "rfc3339-time": {"type": "string", "pattern": r"^[^\r\n]*$", "maxLength": 64},
    "string-map": {"type": "object", "additionalProperties": {"type": "string"}},
    "objects": {"type": "array", "items": {"type": "object"}},
    "local-object-reference": {"type": "object", "additionalProperties": False,
                               "properties": {"name": {"type": "string", "minLength": 1}}, "required": ["name"]},
    # A private key pasted by mistake is refused by a rule whose error does not repeat the value.
    "age-recipient": {
        "type": "string",
        "description": "An age recipient or SSH public key.",
        "if": {"pattern": "^[Aa][Gg][Ee]-[Ss][Ee][Cc][Rr][Ee][Tt]-[Kk][Ee][Yy]-|PRIVATE KEY"},
        "then": False,
        "else": {"pattern": r"^age1[02-9ac-hj-np-z]{58}$|^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5[A-Za-z0-9+/]{48}( [^\r\n]*)?$"
                            r"|^ssh-rsa AAAAB3NzaC1yc2E[A-Za-z0-9+/]+={0,2}( [^\r\n]*)?$"},
    },
    "network-policy-peer": {
        "type": "object", "additionalProperties": False, "minProperties": 1,
        "description": "A NetworkPolicyPeer: podSelector and/or namespaceSelector, or ipBlock.",
        "properties": {
            "podSelector": _LABEL_SELECTOR, "namespaceSelector": _LABEL_SELECTOR,
            "ipBlock": {"type": "object", "additionalProperties": False, "required": ["cidr"],
                        "properties": {"cidr": {"type": "string", "minLength": 1},
                                       "except": {"type": "array", "items": {"type": "string"}}}},
        },
    },
}
_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
          (list, "array"), (dict, "object"))


@dataclass
class Value:
    """One key of values.yaml: its path, default, description and schema annotation."""
    path: str
    default: object
    description: str
    annotation: dict
    children: list["Value"] = field(default_factory=list)


def _comment_above(lines: list[str], line: int) -> tuple[str, dict]:
    """The description and @schema annotation in the comment block directly above a key."""
    block: list[str] = []
    i = line - 1
    while i >= 0 and lines[i].strip().startswith("#"):
        block.insert(0, lines[i].strip()[1:].strip())
        i -= 1
    text, annotation = [], {}
    for entry in block:
        if entry.startswith("@schema"):
            parsed = yaml.safe_load(entry[len("@schema"):])
            if not isinstance(parsed, dict):
                raise ValueError(f"values.yaml:{line}: @schema needs a mapping, got {entry!r}")
            annotation.update(parsed)
        elif entry.startswith("-- "):
            text = [entry[3:]]
        else:
            text.append(entry)
    return " ".join(t for t in text if t), annotation


def parse(text: str) -> list[Value]:
    """The tree of values.yaml, with each key's comment."""
    lines = text.splitlines()

    def walk(node: yaml.MappingNode, data: dict, prefix: str) -> list[Value]:
        out = []
        for key_node, value_node in node.value:
            key = key_node.value
            description, annotation = _comment_above(lines, key_node.start_mark.line)
            value = Value(f"{prefix}{key}", data[key], description, annotation)
            if (isinstance(value_node, yaml.MappingNode) and value_node.value
                    and "type" not in annotation and "use" not in annotation):
                value.children = walk(value_node, data[key], value.path + ".")
            out.append(value)
        return out

    return walk(yaml.compose(text), yaml.safe_load(text), "")


def _resolve(node):
    """Inline every "use: NAME" fragment (recursively)."""
    if isinstance(node, list):
        return [_resolve(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    if "use" in node:
        name = node["use"]
        if name not in FRAGMENTS:
            raise ValueError(f"@schema use: {name!r} is not one of {sorted(FRAGMENTS)}")
        out.update(copy.deepcopy(FRAGMENTS[name]))
    for key, item in node.items():
        if key != "use":
            out[key] = _resolve(item)
    return out


def value_schema(value: Value) -> dict:
    schema: dict = {}
    for python_type, name in _TYPES:
        if isinstance(value.default, python_type):
            schema["type"] = name
            break
    if value.children:
        schema["additionalProperties"] = False
        schema["properties"] = {child.path.rsplit(".", 1)[-1]: value_schema(child) for child in value.children}
    if value.description:
        schema["description"] = value.description
    # The annotation decides; its description (a fragment's) yields to the value's own.
    annotation = _resolve(value.annotation)
    if value.description:
        annotation.pop("description", None)
    schema.update(annotation)
    return schema


def chart_schema(values: list[Value], title: str) -> dict:
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": title,
        "type": "object",
        "additionalProperties": False,
        "properties": {v.path: value_schema(v) for v in values},
    }


def umbrella_schema(values: list[Value]) -> dict:
    """global as in the subchart; the subchart's block is checked by the subchart's own schema."""
    globals_ = [v for v in values if v.path == "global"]
    schema = chart_schema(globals_, "data-shield values")
    schema["properties"][SUBCHART_NAME] = {
        "type": "object",
        "description": f"Values of the {SUBCHART_NAME} subchart (checked by its own schema).",
    }
    return schema


UMBRELLA_HEAD = f"""\
# Values of the data-shield umbrella chart, generated from charts/{SUBCHART_NAME}/values.yaml
# by scripts/gen-values.py (edit that file, then rerun it). Settings of the application are
# set as {SUBCHART_NAME}.<key>, e.g. --set {SUBCHART_NAME}.Backup.CronSchedule="0 0 * * *".
"""


def umbrella_values(text: str) -> str:
    """The subchart's values.yaml, its global block at the top and the rest under the subchart's
    key, comments kept, so `helm show values data-shield` shows every setting."""
    lines = text.splitlines()
    starts = [(i, line.split(":", 1)[0]) for i, line in enumerate(lines) if re.match(r"^[A-Za-z]", line)]
    global_start = next(i for i, key in starts if key == "global")
    global_end = next(i for i, key in starts if i > global_start)
    while lines[global_end - 1].startswith("#") or not lines[global_end - 1].strip():
        global_end -= 1
    rest = lines[global_end:]
    while rest and not rest[0].strip():
        rest.pop(0)
    nested = [("  " + line) if line.strip() else "" for line in rest]
    return _without_annotations(UMBRELLA_HEAD + "\n" + "\n".join(lines[global_start:global_end]) + "\n\n"
            + f"{SUBCHART_NAME}:\n" + "\n".join(nested) + "\n")


def _without_annotations(text: str) -> str:
    """The copy users read with `helm show values` keeps the descriptions, not the schema notes."""
    return "".join(line for line in text.splitlines(keepends=True) if not line.lstrip().startswith("# @schema"))


def _default(value: Value) -> str:
    """As values.yaml writes it; an empty string as "" so the cell is not blank."""
    default = value.default
    if default == "":
        shown = '""'
    elif isinstance(default, (dict, list)):
        shown = yaml.safe_dump(default, default_flow_style=True, width=10_000, sort_keys=False).strip()
    else:
        shown = yaml.safe_dump(default).removesuffix("\n...\n").strip()
    return "`" + shown.replace("|", "\\|") + "`"


def leaves(values: list[Value]):
    for value in values:
        if value.children:
            yield from leaves(value.children)
        else:
            yield value


def values_table(values: list[Value]) -> str:
    rows = ["| Value | Default | What it does |", "| --- | --- | --- |"]
    for value in leaves(values):
        path = value.path if value.path.startswith("global.") else f"{SUBCHART_NAME}.{value.path}"
        description = value.description.replace("|", "\\|")
        rows.append(f"| `{path}` | {_default(value)} | {description} |")
    return "\n".join(rows) + "\n"


def values_md(current: str, values: list[Value]) -> str:
    """docs/values.md with its table replaced; the text around it is kept."""
    begin, end = current.index(TABLE_BEGIN), current.index(TABLE_END)
    return current[:begin + len(TABLE_BEGIN)] + "\n\n" + values_table(values) + "\n" + current[end:]


def generated() -> dict:
    """Every generated file: path -> its content."""
    text = (SUBCHART / "values.yaml").read_text()
    values = parse(text)
    return {
        SUBCHART / "values.schema.json": json.dumps(chart_schema(values, f"{SUBCHART_NAME} values"), indent=2) + "\n",
        UMBRELLA / "values.schema.json": json.dumps(umbrella_schema(values), indent=2) + "\n",
        UMBRELLA / "values.yaml": umbrella_values(text),
        VALUES_MD: values_md(VALUES_MD.read_text(), values),
    }
