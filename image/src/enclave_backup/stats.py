"""What a dump has done so far: read by progress logs, the summary and the manifest."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# A name part that reads the same bare as quoted, in PostgreSQL and CockroachDB alike.
_BARE = re.compile(r"[a-z_][a-z0-9_]*\Z")


def _part(name: str) -> str:
    return name if _BARE.match(name) else '"' + name.replace('"', '""') + '"'


def table_key(schema: str, name: str) -> str:
    """The manifest's key of a table: `schema.table`, each part double-quoted unless plainly lower case,
    so `a."b.c"` and `"a.b".c` stay apart and any character (a newline too) keeps its place."""
    return f"{_part(schema)}.{_part(name)}"


def legacy_table_key(schema: str, name: str) -> str:
    """The key manifests used before table_key: the bare names joined by a dot (ambiguous)."""
    return f"{schema}.{name}"


@dataclass
class DumpStats:
    tables: dict[str, int] = field(default_factory=dict)  # table_key(schema, table) -> rows
    snapshot: str = ""  # PostgreSQL exported snapshot id, or CockroachDB AS OF SYSTEM TIME timestamp
    current_table: str = ""
    current_rows: int = 0  # rows of current_table streamed so far

    @property
    def rows(self) -> int:
        return sum(self.tables.values()) + self.current_rows
