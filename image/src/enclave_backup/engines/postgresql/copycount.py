"""Rows per table, counted from pg_dump's plain output as it streams past.

pg_dump announces each table's data with a `-- Data for Name: ...; Type: TABLE DATA; ...`
comment, then `COPY schema.table (cols) FROM stdin;`, one line per row, and `\\.`.
Requiring that comment keeps a `COPY ... FROM stdin;` line inside a function body from
being taken for data. Rows are counted with bytes.count, so counting costs next to nothing,
and a huge row is never held whole.
"""

from __future__ import annotations

from ...db import split_quoted
from ...stats import DumpStats, table_key

_DATA_HEADER = b"-- Data for Name: "
_TABLE_DATA = b"; Type: TABLE DATA;"
_END = b"\n\\.\n"
MAX_LINE = 1 << 20  # longer lines outside COPY data (function bodies, large objects) are skipped


class CopyCounter:
    def __init__(self, stats: DumpStats):
        self.stats = stats
        self._line = bytearray()  # the current line outside COPY data
        self._skip_line = False  # the current line is too long to matter
        self._expect_copy = False  # a TABLE DATA header was seen
        self._copy_head = b""  # a COPY line cut by a newline inside a quoted name, so far
        self._table = ""  # inside COPY data of this table
        self._tail = b""  # the last bytes seen inside COPY data, to find an end marker cut in two

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            pos = self._in_copy(data, pos) if self._table else self._outside(data, pos)

    def finish(self) -> None:
        if self._table:
            raise ValueError(f"pg_dump output ended inside the data of {self._table}")

    def _in_copy(self, data: bytes, pos: int) -> int:
        window = self._tail + data[pos:pos + len(_END)]
        hit = window.find(_END)
        if hit >= 0 and hit < len(self._tail):  # the marker began in bytes already counted
            end = pos + hit + len(_END) - len(self._tail)
            return self._close(end)
        hit = data.find(_END, pos)
        if hit < 0:
            self.stats.current_rows += data.count(b"\n", pos)
            # only the last bytes: slicing the rest of a MiB read would copy it twice
            self._tail = (self._tail + data[max(pos, len(data) - len(_END) + 1):])[-(len(_END) - 1):]
            return len(data)
        self.stats.current_rows += data.count(b"\n", pos, hit + 1)
        return self._close(hit + len(_END))

    def _close(self, end: int) -> int:
        self.stats.tables[self._table] = self.stats.current_rows
        self.stats.current_rows = 0
        self.stats.current_table = ""
        self._table, self._tail = "", b""
        return end

    def _outside(self, data: bytes, pos: int) -> int:
        newline = data.find(b"\n", pos)
        stop = len(data) if newline < 0 else newline
        if not self._skip_line:
            self._line += data[pos:stop]
            if len(self._line) > MAX_LINE:
                self._line.clear()
                self._skip_line = True
        if newline < 0:
            return len(data)
        self._end_line(bytes(self._line))
        self._line.clear()
        self._skip_line = False
        return newline + 1

    def _end_line(self, line: bytes) -> None:
        if line.startswith(_DATA_HEADER) and _TABLE_DATA in line:
            self._expect_copy = True
        elif self._expect_copy and (self._copy_head or line.startswith(b"COPY ")):
            line = self._copy_head + line
            if line.count(b'"') % 2 and len(line) < MAX_LINE:  # a quoted name goes on past a newline
                self._copy_head = line + b"\n"
                return
            self._copy_head = b""
            self._expect_copy = False
            if not line.endswith(b" FROM stdin;"):
                return
            self._table = table_name(line)
            self._tail = b"\n"  # the header's newline: an empty table's marker follows at once
            self.stats.current_table = self._table
            self.stats.current_rows = 0
        elif line and not line.startswith(b"--"):
            self._expect_copy = False


def table_name(copy_line: bytes) -> str:
    """The table's manifest key (stats.table_key), from `COPY "s"."t" (a, b) FROM stdin;`."""
    parts = split_quoted(copy_line[len(b"COPY "):].decode("utf-8", errors="replace"), ".", stop=" (")
    return table_key(*parts) if len(parts) == 2 else ".".join(parts)
