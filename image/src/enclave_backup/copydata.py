"""Table data as `COPY ... FROM stdin` blocks, streamed from `COPY ... TO STDOUT`.

Text-format COPY output is written verbatim: the server's own escaping keeps NULL vs
empty vs the text \\N, backslashes, tabs, newlines and a lone `\\.` exact.
"""

from __future__ import annotations

from typing import Callable

import psycopg

from .stats import DumpStats

FLUSH_BYTES = 1 << 20


def stream_copy(conn: psycopg.Connection, copy_out_sql: str, copy_in_header: str,
                write: Callable[[bytes], None], stats: DumpStats | None = None) -> int:
    """Emit `copy_in_header`, every row of `copy_out_sql`, then the end marker; return the row count.

    `stats.current_rows` follows the count while the table streams, for progress lines.
    """
    rows = 0
    buffer = bytearray(copy_in_header.encode())
    with conn.cursor() as cur, cur.copy(copy_out_sql) as copy:
        # libpq hands out one row per read; batching keeps the writer's calls few.
        for row in copy:
            buffer += row
            rows += 1
            if len(buffer) >= FLUSH_BYTES:
                write(bytes(buffer))
                buffer.clear()
                if stats is not None:
                    stats.current_rows = rows
    if stats is not None:
        stats.current_rows = 0
    buffer += b"\\.\n\n"
    write(bytes(buffer))
    return rows
