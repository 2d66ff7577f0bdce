"""Table rows as one-line, multi-row INSERT statements of literals with explicit casts.

Engine-neutral: each value arrives as the server's own text form of it (`col::STRING`
on CockroachDB, `col::text` on PostgreSQL) and goes back as `'<text>'::<column type>`,
so the server parses it with the same code that printed it; bytes arrive as hex and
go back through decode(..., 'hex'). Nothing depends on COPY's text escaping.

Every statement sits on one physical line (newlines inside values are written as
escapes) and holds a bounded number of rows, so a SQL shell reading the script line by
line never sees a line that starts with a backslash, never re-joins a long block, and
commits each batch on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

BATCH_ROWS = 1000
BATCH_BYTES = 1 << 20

_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NEEDS_ESCAPE = re.compile(r"[\\\x00-\x1f\x7f]")
# str.translate does in C what a loop over the characters did in Python (a dump's main cost).
_ESCAPE_TABLE = {**{c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}, **{ord(k): v for k, v in _ESCAPES.items()}}


@dataclass(frozen=True)
class Target:
    """Where rows go: the qualified table, its quoted column list and one cast per column."""

    table: str
    columns: str
    casts: tuple[str | None, ...]  # type name to cast to, or None for a hex bytes column

    @property
    def prefix(self) -> str:
        return f"INSERT INTO {self.table} ({self.columns}) VALUES "


def string_literal(text: str) -> str:
    """A plain '...' literal, or e'...' when backslashes or control characters need escapes.

    Escaping newlines keeps every statement on one physical line.
    """
    if _NEEDS_ESCAPE.search(text) is None:
        return "'" + text.replace("'", "''") + "'"
    return "e'" + text.translate(_ESCAPE_TABLE) + "'"


def value_literal(value: str | None, cast: str | None) -> str:
    if value is None:
        return "NULL"
    if cast is None:  # bytes, read as hex digits: only [0-9a-f], no quoting needed
        if value.strip("0123456789abcdefABCDEF"):
            raise ValueError(f"expected hex digits for a bytes value, got {value[:40]!r}")
        return f"decode('{value}', 'hex')"
    return f"{string_literal(value)}::{cast}"


def row_literal(row: Sequence[str | None], casts: Sequence[str | None]) -> str:
    return "(" + ", ".join(value_literal(v, c) for v, c in zip(row, casts)) + ")"


def write_batches(rows: Iterable[Sequence[str | None]], target: Target, write: Callable[[bytes], None],
                  counted: Callable[[int], None] = lambda n: None, *, batch_rows: int | None = None,
                  batch_bytes: int | None = None) -> int:
    """Write INSERT statements of at most batch_rows rows / about batch_bytes each; return the row count.

    `counted(n)` is called after each statement with the rows it held, for progress.
    """
    max_rows = batch_rows or BATCH_ROWS
    max_bytes = batch_bytes or BATCH_BYTES
    batch: list[str] = []
    size = total = 0
    for row in rows:
        batch.append(row_literal(row, target.casts))
        size += len(batch[-1]) + 2
        if len(batch) >= max_rows or size >= max_bytes:
            _flush(write, target, batch)
            total += len(batch)
            counted(len(batch))
            batch, size = [], 0
    if batch:
        _flush(write, target, batch)
        total += len(batch)
        counted(len(batch))
    return total


def _flush(write: Callable[[bytes], None], target: Target, rows: list[str]) -> None:
    write((target.prefix + ", ".join(rows) + ";\n").encode())
