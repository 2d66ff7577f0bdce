"""Table data as `COPY ... FROM stdin` blocks, streamed from `COPY ... TO STDOUT`.

Text-format COPY output is written verbatim: the server's own escaping keeps NULL vs
empty vs the text \\N, backslashes, tabs, newlines and a lone `\\.` exact.
"""

from __future__ import annotations

import select
from typing import Callable, Iterable, Iterator

import psycopg
from psycopg import errors, pq

from .stats import DumpStats

FLUSH_BYTES = 1 << 20

Batches = Iterator[tuple[bytearray, int]]


def stream_copy(conn: psycopg.Connection, copy_out_sql: str, copy_in_header: str,
                write: Callable[[bytes], None], stats: DumpStats | None = None) -> int:
    """Emit `copy_in_header`, every row of `copy_out_sql`, then the end marker; return the row count.

    `stats.current_rows` follows the count while the table streams, for progress lines.
    """
    rows = 0
    with conn.cursor() as cur, cur.copy(copy_out_sql) as copy:
        first = bytearray(copy_in_header.encode())
        batches = _libpq_batches(conn, first) if isinstance(conn, psycopg.Connection) else _batches(copy, first)
        for buffer, count in batches:
            rows += count
            tail = buffer  # the last, shorter batch goes out with the end marker
            if len(buffer) >= FLUSH_BYTES:
                write(bytes(buffer))
                tail = bytearray()
                if stats is not None:
                    stats.current_rows = rows
    if stats is not None:
        stats.current_rows = 0
    tail += b"\\.\n\n"
    write(bytes(tail))
    return rows


def _batches(rows: Iterable[bytes], buffer: bytearray) -> Batches:
    """Rows joined into blocks of FLUSH_BYTES, then the (shorter) tail."""
    count = 0
    for row in rows:
        buffer += row
        count += 1
        if len(buffer) >= FLUSH_BYTES:
            yield buffer, count
            buffer, count = bytearray(), 0
    yield buffer, count


def _libpq_batches(conn: psycopg.Connection, buffer: bytearray) -> Batches:
    """Like _batches over the Copy object, reading libpq directly.

    libpq hands out one row per call; psycopg's Copy.read() adds a wait cycle per row
    that cost more CPU than the rest of the dump path together.
    """
    pgconn = conn.pgconn
    get = pgconn.get_copy_data
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)
    count = 0
    while True:
        nbytes, data = get(1)  # 1: never block; 0 means wait for the socket
        if nbytes > 0:
            buffer += data
            count += 1
            if len(buffer) >= FLUSH_BYTES:
                yield buffer, count
                buffer, count = bytearray(), 0
        elif nbytes == 0:
            poller.poll()
            pgconn.consume_input()
        else:
            break
    _finish_copy(conn)
    yield buffer, count


def _finish_copy(conn: psycopg.Connection) -> None:
    """Collect the COPY's final result, raising the server's error if it failed."""
    pgconn = conn.pgconn
    while (result := pgconn.get_result()) is not None:
        if result.status != pq.ExecStatus.COMMAND_OK:
            raise errors.error_from_result(result, encoding=conn.info.encoding)
