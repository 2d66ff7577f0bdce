"""PostgreSQL dump: pg_dump's schema sections plus our own COPY stream, all in one snapshot.

The snapshot is exported from a REPEATABLE READ READ ONLY transaction; pg_dump reads the
pre-data and post-data sections with `--snapshot`, and table data is copied inside the same
transaction, so every byte of the script describes one moment.
"""

from __future__ import annotations

import subprocess
import threading
from typing import Callable

import psycopg

from . import log
from .copydata import stream_copy
from .db import quote_ident, quote_literal
from .errors import DatabaseError
from .stats import DumpStats

Write = Callable[[bytes], None]

# Ordinary tables and leaf partitions with storage; partitioned parents (relkind 'p') hold
# no rows, views and materialized views are rebuilt from the schema.
_TABLES = """
SELECT n.nspname, c.relname,
       array_agg(a.attname ORDER BY a.attnum) FILTER (WHERE a.attnum > 0 AND NOT a.attisdropped
                                                     AND a.attgenerated = '')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
GROUP BY n.nspname, c.relname
ORDER BY n.nspname, c.relname
"""

_SEQUENCES = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY n.nspname, c.relname
"""


def begin_snapshot(conn: psycopg.Connection) -> str:
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    encoding = conn.execute("SHOW server_encoding").fetchone()[0]
    # COPY output must be in the encoding pg_dump's header declares (the database's).
    conn.execute(f"SET client_encoding = {quote_literal(encoding)}")
    conn.execute("SET row_security = off")
    return conn.execute("SELECT pg_export_snapshot()").fetchone()[0]


def run_pg_dump(database: str, snapshot: str, section: str, write: Write, pg_dump: str = "pg_dump") -> None:
    """Stream one pg_dump section into `write`; libpq variables reach pg_dump through the environment."""
    cmd = [pg_dump, "--format=plain", f"--section={section}", f"--snapshot={snapshot}",
           "--no-password", f"--dbname={database}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
    reader.start()
    try:
        while chunk := proc.stdout.read(1 << 16):
            write(chunk)
    except BaseException:
        proc.kill()
        raise
    finally:
        code = proc.wait()
        reader.join()
    if code != 0:
        detail = log.scrub(b"".join(errors).decode(errors="replace").strip())
        raise DatabaseError(f"pg_dump --section={section} failed (exit {code}): {detail}")


def _qualified(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"


def dump_postgresql(conn: psycopg.Connection, database: str, write: Write, stats: DumpStats,
                    *, pg_dump: str = "pg_dump") -> None:
    snapshot = begin_snapshot(conn)
    stats.snapshot = snapshot
    run_pg_dump(database, snapshot, "pre-data", write, pg_dump)

    write(b"\n--\n-- Table data\n--\n\n")
    for schema, table, columns in conn.execute(_TABLES).fetchall():
        name = _qualified(schema, table)
        stats.current_table = f"{schema}.{table}"
        cols = ", ".join(quote_ident(c) for c in columns or [])
        # A table without columns (CREATE TABLE t ()) still has rows: COPY takes no list then.
        column_list = f" ({cols})" if cols else ""
        stats.tables[stats.current_table] = stream_copy(
            conn, f"COPY {name}{column_list} TO STDOUT", f"COPY {name}{column_list} FROM stdin;\n", write, stats)
    stats.current_table = ""

    for schema, seq in conn.execute(_SEQUENCES).fetchall():
        name = _qualified(schema, seq)
        last_value, is_called = conn.execute(f"SELECT last_value, is_called FROM {name}").fetchone()
        target = quote_literal(name)
        write(f"SELECT pg_catalog.setval({target}, {last_value}, {'true' if is_called else 'false'});\n".encode())
    write(b"\n")

    run_pg_dump(database, snapshot, "post-data", write, pg_dump)
    conn.rollback()
