"""What a dump has done so far: read by progress logs, the summary and the manifest."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DumpStats:
    tables: dict[str, int] = field(default_factory=dict)  # "schema.table" -> rows
    snapshot: str = ""  # PostgreSQL exported snapshot id, or CockroachDB AS OF SYSTEM TIME timestamp
    current_table: str = ""
    current_rows: int = 0  # rows of current_table streamed so far

    @property
    def rows(self) -> int:
        return sum(self.tables.values()) + self.current_rows
