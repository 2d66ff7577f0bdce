"""CockroachDB dump: one AS OF SYSTEM TIME snapshot -> a plain SQL script `cockroach sql` replays.

Script order: schemas, types, the user-defined routines that table definitions call (a
DEFAULT or CHECK may call one), the tables and sequences of SHOW CREATE ALL TABLES
(dependency-ordered by CockroachDB), GENERATED ALWAYS identity columns relaxed to BY DEFAULT
(24.1+), table data as one-line INSERT batches, sequence values, identity columns ALWAYS
again, the foreign keys SHOW CREATE ALL TABLES lists as separate ALTER statements, and then
the tail: the other routines (22.2+; procedures 23.2+) in creation order, triggers (25.3+),
views and materialized views, grants, and owners. Triggers after the data do not fire
while it loads. The tail comes last so a restore can run it after the database got its
final name: CockroachDB refuses to rename a database while views or routines depend on its
tables (pkg/sql/rename_database.go).

Data is never written as COPY: CockroachDB's COPY FROM un-escapes only some types
(pkg/sql/copy_from.go), so BYTES and JSONB values would not survive COPY text.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import psycopg

from ... import log
from . import insertbatch
from ...db import quote_ident, quote_literal
from ...errors import DatabaseError
from ...stats import DumpStats, table_key

MIN_VERSION = (21, 1)
SHOW_CREATE_ALL_SCHEMAS_TYPES_VERSION = (22, 1)
HASH_SHARDED_DEFAULT_VERSION = (22, 1)
# Before 22.1, hash-sharded DDL is refused unless this is on; from 22.1 the variable is kept
# as a no-op for compatibility (pkg/sql/vars.go @ 91982ad3bced2707c9505ce1bee59cc88875505d),
# so the script replays on newer servers too.
HASH_SHARDED_SQL = "SET experimental_enable_hash_sharded_indexes = on;"
# From 24.1 an identity column's generation can change (cockroach#115889; logic test
# alter_column_identity @ 0e36b604b60f0ba0053b0eeb1012a812b7651896): GENERATED ALWAYS columns
# take the backup's values while BY DEFAULT and get ALWAYS back after the data.
SET_GENERATED_VERSION = (24, 1)
# User-defined functions (crdb_internal.create_function_statements) from 22.2, stored
# procedures (crdb_internal.create_procedure_statements) from 23.2; triggers can be read
# (crdb_internal.create_trigger_statements, what SHOW CREATE ALL TRIGGERS reads) from 25.3.
ROUTINES_VERSION = (22, 2)
PROCEDURES_VERSION = (23, 2)
TRIGGERS_VERSION = (25, 3)
# A routine's pg_proc OID is its descriptor id plus this (pkg/sql/oidext; udf logic tests).
ROUTINE_OID_OFFSET = 100000
# Roles that hold every privilege on every object anyway; granting to them again is noise.
IMPLICIT_GRANTEES = ("admin", "root")
# GRANT ... ON SEQUENCE is documented from 22.2 (cockroachdb/docs src/current/v22.2/grant.md @
# 39514c33e9f864a37eea738f67c41c8c91620896: "database, table, sequence, or function names");
# before, a sequence is granted as a table.
GRANT_ON_SEQUENCE_VERSION = (22, 2)
GC_MARGIN = 0.9  # fail once the dump has used this share of the GC window

SYSTEM_SCHEMAS = ("crdb_internal", "information_schema", "pg_catalog", "pg_extension")
_SYSTEM_SCHEMA_LIST = ", ".join(quote_literal(s) for s in SYSTEM_SCHEMAS)

# The exact statements issued; the unit tests' recorded server answers key on them.
VERSION_SQL = "SELECT version()"
SERIALIZABLE_SQL = "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"
FLOAT_DIGITS_SQL = "SET extra_float_digits = 3"
TIMESTAMP_SQL = "SELECT cluster_logical_timestamp()::STRING"
AOST_SQL = "SET TRANSACTION AS OF SYSTEM TIME {}"
SHOW_SCHEMAS_SQL = "SHOW CREATE ALL SCHEMAS"
SHOW_TYPES_SQL = "SHOW CREATE ALL TYPES"
SHOW_TABLES_SQL = "SHOW CREATE ALL TABLES"
# Before 22.1 there is no SHOW CREATE ALL SCHEMAS / TYPES.
LEGACY_SCHEMAS_SQL = (
    "SELECT schema_name FROM information_schema.schemata "
    "WHERE catalog_name = current_database() "
    f"AND schema_name NOT IN ('public', {_SYSTEM_SCHEMA_LIST}) "
    "AND schema_name NOT LIKE 'pg_temp%' ORDER BY schema_name")
LEGACY_TYPES_SQL = (
    "SELECT create_statement FROM crdb_internal.create_type_statements "
    "WHERE database_name = current_database() ORDER BY descriptor_id")
RELATIONS_SQL = (
    "SELECT table_schema, table_name, table_type FROM information_schema.tables "
    f"WHERE table_catalog = current_database() AND table_schema NOT IN ({_SYSTEM_SCHEMA_LIST}) "
    "ORDER BY table_schema, table_name")
MATVIEWS_SQL = (
    "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'm' ORDER BY n.nspname, c.relname")
COLUMNS_SQL = (
    "SELECT table_schema, table_name, column_name, crdb_sql_type, is_hidden, is_generated, "
    "generation_expression, column_default FROM information_schema.columns "
    f"WHERE table_catalog = current_database() AND table_schema NOT IN ({_SYSTEM_SCHEMA_LIST}) "
    "ORDER BY table_schema, table_name, ordinal_position")
SEQUENCES_SQL = (
    "SELECT sequence_schema, sequence_name, minimum_value, maximum_value "
    "FROM information_schema.sequences WHERE sequence_catalog = current_database() "
    "ORDER BY sequence_schema, sequence_name")

FUNCTIONS_SQL = (
    "SELECT function_id, create_statement FROM crdb_internal.create_function_statements "
    "WHERE database_name = current_database() ORDER BY function_id")
PROCEDURES_SQL = (
    "SELECT procedure_id, create_statement FROM crdb_internal.create_procedure_statements "
    "WHERE database_name = current_database() ORDER BY procedure_id")
TRIGGERS_SQL = (
    "SELECT create_statement FROM crdb_internal.create_trigger_statements "
    "WHERE database_name = current_database() ORDER BY table_id, trigger_id")
# The information_schema columns SHOW GRANTS itself reads (pkg/sql/delegate/show_grants.go).
SCHEMA_GRANTS_SQL = (
    "SELECT table_schema, grantee, privilege_type FROM information_schema.schema_privileges "
    f"WHERE table_catalog = current_database() AND table_schema NOT IN ({_SYSTEM_SCHEMA_LIST}) "
    "ORDER BY table_schema, grantee, privilege_type")
TABLE_GRANTS_SQL = (
    "SELECT table_schema, table_name, grantee, privilege_type FROM information_schema.table_privileges "
    f"WHERE table_catalog = current_database() AND table_schema NOT IN ({_SYSTEM_SCHEMA_LIST}) "
    "ORDER BY table_schema, table_name, grantee, privilege_type")
TYPE_GRANTS_SQL = (
    "SELECT type_schema, type_name, grantee, privilege_type FROM information_schema.type_privileges "
    f"WHERE type_catalog = current_database() AND type_schema NOT IN ({_SYSTEM_SCHEMA_LIST}) "
    "ORDER BY type_schema, type_name, grantee, privilege_type")
ROUTINE_GRANTS_SQL = (
    "SELECT specific_name, grantee, privilege_type FROM information_schema.role_routine_grants "
    "WHERE routine_catalog = current_database() ORDER BY specific_name, grantee, privilege_type")
SCHEMA_OWNERS_SQL = (
    "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_catalog.pg_namespace "
    f"WHERE nspname NOT IN ('public', {_SYSTEM_SCHEMA_LIST}) AND nspname NOT LIKE 'pg_temp%' ORDER BY nspname")
TYPE_OWNERS_SQL = (
    "SELECT n.nspname, t.typname, pg_get_userbyid(t.typowner) FROM pg_catalog.pg_type t "
    "JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace "
    f"WHERE n.nspname NOT IN ({_SYSTEM_SCHEMA_LIST}) ORDER BY n.nspname, t.typname")
RELATION_OWNERS_SQL = (
    "SELECT n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    f"WHERE c.relkind IN ('r', 'v', 'm', 'S') AND n.nspname NOT IN ({_SYSTEM_SCHEMA_LIST}) "
    "ORDER BY n.nspname, c.relname")
ROUTINE_OWNERS_SQL = (
    "SELECT oid::INT8, pg_get_userbyid(proowner) FROM pg_catalog.pg_proc "
    f"WHERE oid::INT8 > {ROUTINE_OID_OFFSET} ORDER BY 1")

# Rows libpq hands over per result (chunked rows mode, libpq 17+; the image's is 18): a result per
# row cost 4.5x the client CPU. The server streams rows as before, so any CockroachDB serves it.
STREAM_ROWS = insertbatch.BATCH_ROWS if psycopg.pq.version() >= 170000 else 1

GC_TTL_SQL = "SELECT raw_config_sql FROM [SHOW ZONE CONFIGURATION FROM DATABASE {}]"
VIEW_PREFIXES = ("CREATE VIEW ", "CREATE MATERIALIZED VIEW ", "CREATE OR REPLACE VIEW ")

_GC_TTL_RE = re.compile(r"gc\.ttlseconds\s*=\s*(\d+)")
_VERSION_RE = re.compile(r"CockroachDB\s+\S+\s+v(\d+)\.(\d+)")
_HLC_RE = re.compile(r"\d+(\.\d+)?")


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str  # as information_schema.columns.crdb_sql_type has it, database name removed


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: tuple[Column, ...]

    @property
    def qualified(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    @property
    def key(self) -> str:
        return table_key(self.schema, self.name)

    @property
    def column_list(self) -> str:
        return ", ".join(quote_ident(c.name) for c in self.columns)

    def target(self) -> insertbatch.Target:
        casts = tuple(None if is_bytes(c) else c.sql_type for c in self.columns)
        return insertbatch.Target(self.qualified, self.column_list, casts)


def parse_version(version: str) -> tuple[int, int]:
    """(major, minor) from `SELECT version()`, e.g. 'CockroachDB CCL v23.1.11 (...)'."""
    match = _VERSION_RE.search(version)
    if not match:
        raise DatabaseError(f"cannot read a CockroachDB version from {version!r}; "
                            "set ENCLAVE_BACKUP_ENGINE=postgresql if this is a PostgreSQL server")
    return int(match.group(1)), int(match.group(2))


def check_supported(version: tuple[int, int], text: str) -> None:
    if version < MIN_VERSION:
        raise DatabaseError(
            f"CockroachDB v{MIN_VERSION[0]}.{MIN_VERSION[1]} or newer is required for backups, "
            f"but the server reports {text!r}; upgrade the cluster first")


def dump_cockroachdb(conn: psycopg.Connection, database: str, write: Callable[[bytes], None],
                     stats: DumpStats, *, clock: Callable[[], float] = time.monotonic) -> None:
    """Write a replayable SQL script of `database`, every read at one AS OF SYSTEM TIME."""
    version, version_text, timestamp = pick_snapshot(conn)
    window = GcWindow(gc_ttl_seconds(conn, database), clock)
    stats.snapshot = timestamp
    # A historical, read-only transaction: every read below sees the same snapshot.
    conn.execute(AOST_SQL.format(timestamp))
    write(header(database, version_text, timestamp, window.ttl))
    write_statements(write, "schemas", schema_statements(conn, version))
    types = unqualify(type_statements(conn, version), database)
    write_statements(write, "types", types)
    creates, constraints = split_table_statements(unqualify(first_column(conn, SHOW_TABLES_SQL), database))
    relations, views = split_views(creates)
    routines = read_routines(conn, version, database)
    called = [r for r in routines if r.called_by(relations)]
    write_statements(write, "routines the tables call", [r.create for r in called])
    always = identity_always_columns(relations)
    if version < SET_GENERATED_VERSION:
        warn_unrestorable(always)
        always = []
    write_statements(write, "session settings the DDL below needs", session_settings(version, relations))
    write_statements(write, "tables and sequences", relations)
    write_statements(write, "identity columns take the backup's values",
                     set_generated(always, "BY DEFAULT"))
    matviews = set(conn.execute(MATVIEWS_SQL).fetchall())
    for table in list_tables(conn, matviews, database):
        window.check(table.key)
        dump_table(conn, table, write, stats, window)
    stats.current_table = ""
    write_statements(write, "sequence values", sequence_statements(conn))
    write_statements(write, "identity columns generated always again", set_generated(always, "ALWAYS"))
    write_statements(write, "foreign keys", constraints)
    write_statements(write, "routines", [r.create for r in routines if r not in called])
    write_statements(write, "triggers", trigger_statements(conn, version, database))
    # Created after the data, a materialized view is filled by its CREATE; no REFRESH needed.
    write_statements(write, "views", views)
    overloaded = overloaded_names(routines)
    if overloaded:
        log.get().warning("grants and owners of overloaded routines are not in the backup: "
                          "set them again after a restore", routines=overloaded)
    targets = routine_targets(routines)
    grants = grant_statements(conn, targets, version >= GRANT_ON_SEQUENCE_VERSION)
    owners = owner_statements(conn, targets, types)
    roles = sorted({name for _, name in grants + owners if name.lower() != "public"})
    if roles:
        write(f"-- roles the grants and owners below name; each must exist where this is replayed: "
              f"{one_line(', '.join(roles))}\n".encode())
    write_statements(write, "grants", [sql for sql, _ in grants])
    write_statements(write, "owners", [sql for sql, _ in owners])
    window.check("the end of the dump")
    conn.rollback()


class GcWindow:
    """Rows read AS OF SYSTEM TIME exist only until gc.ttlseconds have passed since then.

    Reads older than the GC threshold fail with "must be after replica GC threshold"
    (pkg/kv/kvserver/replica_read.go); stopping a little before that says why and what to do.
    """

    def __init__(self, ttl: int | None, clock: Callable[[], float]):
        self.ttl, self.clock, self.started = ttl, clock, clock()

    def check(self, where: str) -> None:
        if self.ttl is None:
            return
        elapsed = self.clock() - self.started
        if elapsed >= self.ttl * GC_MARGIN:
            raise DatabaseError(
                f"the dump has run {elapsed:.0f}s, close to the database's GC window gc.ttlseconds={self.ttl} "
                f"(stopped before {where}): older row versions of the snapshot may be gone, so no consistent "
                "backup can be finished. Raise the window above the dump's run time, e.g. "
                "ALTER DATABASE <db> CONFIGURE ZONE USING gc.ttlseconds = 90000, or use the native backup method")


def gc_ttl_seconds(conn: psycopg.Connection, database: str) -> int | None:
    """The database's zone gc.ttlseconds (inherited from the default zone when unset).

    Runs in a transaction of its own; a user who may not read zone configurations gets
    no early check (the dump then fails only at the GC threshold itself).
    """
    try:
        rows = conn.execute(GC_TTL_SQL.format(quote_ident(database))).fetchall()
    except psycopg.Error:
        rows = []
    conn.rollback()
    for (config,) in rows:
        match = _GC_TTL_RE.search(config or "")
        if match:
            return int(match.group(1))
    return None


def pick_snapshot(conn: psycopg.Connection) -> tuple[tuple[int, int], str, str]:
    """Server version and the HLC timestamp (DECIMAL, as AS OF SYSTEM TIME takes it).

    cluster_logical_timestamp() is refused under READ COMMITTED, hence SERIALIZABLE; the
    rollback first makes sure the SET TRANSACTION statements open their transactions.
    """
    conn.rollback()
    conn.execute(SERIALIZABLE_SQL)
    version_text = conn.execute(VERSION_SQL).fetchone()[0]
    version = parse_version(version_text)
    check_supported(version, version_text)
    conn.execute(FLOAT_DIGITS_SQL)  # shortest exact float text for the INSERT fallback
    timestamp = str(conn.execute(TIMESTAMP_SQL).fetchone()[0]).strip()
    conn.commit()
    if not _HLC_RE.fullmatch(timestamp):
        raise DatabaseError(f"unexpected cluster_logical_timestamp() value {timestamp!r}")
    return version, version_text, timestamp


def header(database: str, version_text: str, timestamp: str, gc_ttl: int | None = None) -> bytes:
    lines = ["-- enclave-backup dump", "-- engine: cockroachdb",
             f"-- database: {one_line(database)}", f"-- server: {one_line(version_text)}",
             f"-- as of system time: {one_line(timestamp)}",
             f"-- gc.ttlseconds at dump time: {gc_ttl if gc_ttl is not None else 'unknown'}",
             "-- replay: cockroach sql -d <database> < this file (into an empty database)", ""]
    return ("\n".join(lines) + "\n").encode()


def one_line(text: str) -> str:
    return " ".join(text.split())


def first_column(conn: psycopg.Connection, sql: str) -> list[str]:
    return [row[0] for row in conn.execute(sql).fetchall()]


def as_statement(text: str) -> str:
    text = text.strip()
    return text if text.endswith(";") or text.startswith("--") else text + ";"


def write_statements(write: Callable[[bytes], None], title: str, statements: Iterable[str]) -> None:
    statements = list(statements)
    if statements:
        body = "".join(as_statement(s) + "\n" for s in statements)
        write(f"-- {title}\n{body}\n".encode())


def schema_statements(conn: psycopg.Connection, version: tuple[int, int]) -> list[str]:
    if version >= SHOW_CREATE_ALL_SCHEMAS_TYPES_VERSION:
        return [if_not_exists(s) for s in first_column(conn, SHOW_SCHEMAS_SQL)]
    return [f"CREATE SCHEMA IF NOT EXISTS {quote_ident(name)};"
            for name in first_column(conn, LEGACY_SCHEMAS_SQL)]


def unqualify(statements: list[str], database: str) -> list[str]:
    """Drop the database from three-part names (`malbork.public.t` -> `public.t`).

    SHOW CREATE qualifies types and view references with the database's name; unqualified,
    the script replays into any database, such as the scratch database of a restore.
    """
    names = "|".join(re.escape(n) for n in {database, quote_ident(database)})
    pattern = re.compile(rf'(?<![\w."$])(?:{names})\.(?=(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)\.)')
    return [pattern.sub("", s) for s in statements]


def if_not_exists(statement: str) -> str:
    """SHOW CREATE ALL SCHEMAS lists `public`, which every new database already has."""
    return re.sub(r"^\s*CREATE SCHEMA (?!IF NOT EXISTS )", "CREATE SCHEMA IF NOT EXISTS ", statement,
                  count=1)


def type_statements(conn: psycopg.Connection, version: tuple[int, int]) -> list[str]:
    sql = SHOW_TYPES_SQL if version >= SHOW_CREATE_ALL_SCHEMAS_TYPES_VERSION else LEGACY_TYPES_SQL
    return first_column(conn, sql)


def split_table_statements(rows: list[str]) -> tuple[list[str], list[str]]:
    """CREATE rows go before the data; the FK ALTERs, their comment and VALIDATEs after it."""
    creates = [r for r in rows if r.lstrip().upper().startswith("CREATE ")]
    after = [r for r in rows if not r.lstrip().upper().startswith("CREATE ")]
    return creates, after


_CREATE_TABLE = re.compile(r"^\s*CREATE TABLE\s+(.+?)\s+\(\n(.*)\n\)", re.S)
_COLUMN_NAME = re.compile(r'^\s+("(?:[^"]|"")+"|[^\s"]+)\s')
_STRING_LITERAL = re.compile(r"e?'(?:[^'\\]|''|\\.)*'", re.I)
_ALWAYS_IDENTITY = re.compile(r"\bGENERATED ALWAYS AS IDENTITY\b")


def identity_always_columns(relations: list[str]) -> list[tuple[str, str]]:
    """(table, column) of every GENERATED ALWAYS AS IDENTITY column, both as SHOW CREATE prints them.

    SHOW CREATE prints one column per line, indented, name first, inside `CREATE TABLE t (`...`)`.
    """
    found = []
    for statement in relations:
        match = _CREATE_TABLE.match(statement)
        if match:
            for line in match.group(2).splitlines():
                name = _COLUMN_NAME.match(line)
                # Not inside a literal, such as a DEFAULT string that happens to say it.
                if name and _ALWAYS_IDENTITY.search(_STRING_LITERAL.sub("''", line[name.end():])):
                    found.append((match.group(1), name.group(1)))
    return found


def set_generated(columns: list[tuple[str, str]], generation: str) -> list[str]:
    return [f"ALTER TABLE {table} ALTER COLUMN {column} SET GENERATED {generation};" for table, column in columns]


def warn_unrestorable(columns: list[tuple[str, str]]) -> list[str]:
    """Before 24.1 a GENERATED ALWAYS identity column refuses explicit values and cannot be relaxed."""
    tables = sorted({table for table, _ in columns})
    if tables:
        log.get().warning("these tables have GENERATED ALWAYS AS IDENTITY columns, which refuse the backup's "
                          "explicit values on servers before 24.1: a restore stops at their first INSERT. "
                          "Upgrade to 24.1+, change the columns to GENERATED BY DEFAULT AS IDENTITY or use the "
                          "native backup method", tables=tables)
    return tables


def session_settings(version: tuple[int, int], relations: list[str]) -> list[str]:
    hashed = any(re.search(r"\bUSING\s+HASH\b", r, re.I) for r in relations)
    return [HASH_SHARDED_SQL] if hashed and version < HASH_SHARDED_DEFAULT_VERSION else []


def split_views(creates: list[str]) -> tuple[list[str], list[str]]:
    """Tables and sequences first; views (in CockroachDB's dependency order) for the end."""
    views = [c for c in creates if c.lstrip().upper().startswith(VIEW_PREFIXES)]
    return [c for c in creates if c not in views], views


def is_copied(hidden: str, generated: str, expression: str | None, default: str | None) -> bool:
    """Computed columns are recomputed on insert; the implicit rowid gets fresh values.

    Other NOT VISIBLE columns hold user data and are copied.
    """
    if (expression or "").strip() or (generated or "").upper() in ("YES", "ALWAYS"):
        return False
    return not (hidden == "YES" and (default or "").strip() == "unique_rowid()")


def list_tables(conn: psycopg.Connection, matviews: set[tuple[str, str]], database: str) -> list[Table]:
    columns: dict[tuple[str, str], list[Column]] = {}
    for schema, table, name, sql_type, hidden, generated, expression, default in \
            conn.execute(COLUMNS_SQL).fetchall():
        if is_copied(hidden, generated, expression, default):
            # A user-defined type is named `db.schema.type`; unqualified it resolves in any database.
            cast = unqualify([sql_type], database)[0]
            columns.setdefault((schema, table), []).append(Column(name, cast))
    tables = []
    for schema, name, kind in conn.execute(RELATIONS_SQL).fetchall():
        # Views and sequences come back with SHOW CREATE ALL TABLES; only tables hold rows.
        if kind == "BASE TABLE" and (schema, name) not in matviews:
            tables.append(Table(schema, name, tuple(columns.get((schema, name), ()))))
    return tables


def dump_table(conn: psycopg.Connection, table: Table, write: Callable[[bytes], None], stats: DumpStats,
               window: GcWindow | None = None) -> None:
    stats.current_table = table.key
    stats.tables[table.key] = 0
    if not table.columns:
        stats.tables[table.key] = dump_default_rows(conn, table, write)
    else:
        dump_inserts(conn, table, write, stats, window)


def dump_default_rows(conn: psycopg.Connection, table: Table, write: Callable[[bytes], None]) -> int:
    """A table whose only columns are computed or rowid: each row is all defaults."""
    count = conn.execute(f"SELECT count(*) FROM {table.qualified}").fetchone()[0]
    for _ in range(count):
        write(f"INSERT INTO {table.qualified} DEFAULT VALUES;\n".encode())
    return count


def is_bytes(column: Column) -> bool:
    return column.sql_type.upper() in ("BYTES", "BYTEA")


def select_as_text_sql(table: Table) -> str:
    """Every value as the server's own text of it, which its cast from STRING parses back; BYTES as hex."""
    exprs = [f"encode({quote_ident(c.name)}, 'hex')" if is_bytes(c) else f"{quote_ident(c.name)}::STRING"
             for c in table.columns]
    return f"SELECT {', '.join(exprs)} FROM {table.qualified}"


def dump_inserts(conn: psycopg.Connection, table: Table, write: Callable[[bytes], None],
                 stats: DumpStats, window: GcWindow | None = None) -> None:
    """Stream the rows and write them as bounded INSERT batches, each committed on its own at replay."""

    def counted(rows: int) -> None:
        stats.tables[table.key] += rows
        if window is not None:
            window.check(f"the next rows of {table.key}")

    with conn.cursor() as cur:
        rows = cur.stream(select_as_text_sql(table), size=STREAM_ROWS)
        insertbatch.write_batches(rows, table.target(), write, counted)


def sequence_statements(conn: psycopg.Connection) -> list[str]:
    statements = []
    for schema, name, minimum, maximum in conn.execute(SEQUENCES_SQL).fetchall():
        qualified = f"{quote_ident(schema)}.{quote_ident(name)}"
        last_value, is_called = conn.execute(f"SELECT last_value, is_called FROM {qualified}").fetchone()
        # An unused sequence reports START - INCREMENT, outside its bounds; CREATE already
        # restores that state and setval would reject the value.
        if int(minimum) <= int(last_value) <= int(maximum):
            called = "true" if is_called else "false"
            statements.append(f"SELECT setval({quote_literal(qualified)}, {int(last_value)}, {called});")
    return statements


_ROUTINE_HEAD = re.compile(
    r'^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE)\s+'
    r'((?:"(?:[^"]|"")+"|[^\s(."]+)\.(?:"(?:[^"]|"")+"|[^\s(."]+))\s*\(', re.I)


@dataclass(frozen=True)
class Routine:
    oid: int  # descriptor id + ROUTINE_OID_OFFSET, as pg_proc and role_routine_grants name it
    kind: str  # FUNCTION or PROCEDURE
    name: str  # schema.name as its CREATE statement writes it
    create: str

    def called_by(self, relations: list[str]) -> bool:
        """Does a table's DEFAULT, ON UPDATE, computed column, CHECK or index call it (`schema.name(`)?"""
        call = re.compile(re.escape(self.name) + r"\s*\(")
        return any(call.search(_STRING_LITERAL.sub("''", r)) for r in relations)


def read_routines(conn: psycopg.Connection, version: tuple[int, int], database: str) -> list[Routine]:
    """Functions (22.2+) and procedures (23.2+) in creation order: each follows the routines it calls."""
    rows = conn.execute(FUNCTIONS_SQL).fetchall() if version >= ROUTINES_VERSION else []
    if version >= PROCEDURES_VERSION:
        rows += conn.execute(PROCEDURES_SQL).fetchall()
    return [parse_routine(int(routine_id) + ROUTINE_OID_OFFSET, unqualify([create], database)[0])
            for routine_id, create in sorted(rows, key=lambda row: int(row[0]))]


def parse_routine(oid: int, create: str) -> Routine:
    head = _ROUTINE_HEAD.match(create)
    if not head:
        raise DatabaseError(f"unexpected routine definition from the server: {one_line(create)[:120]!r}")
    return Routine(oid, head.group(1).upper(), head.group(2), create)


def trigger_statements(conn: psycopg.Connection, version: tuple[int, int], database: str) -> list[str]:
    return unqualify(first_column(conn, TRIGGERS_SQL), database) if version >= TRIGGERS_VERSION else []


def overloaded_names(routines: list[Routine]) -> list[str]:
    """Routine names with several argument lists: GRANT, ALTER and DROP need the list to name one."""
    names = [r.name for r in routines]
    return sorted({name for name in names if names.count(name) > 1})


def routine_targets(routines: list[Routine]) -> dict[int, str]:
    """`FUNCTION schema.name` by OID, for routines whose name is not overloaded."""
    overloaded = set(overloaded_names(routines))
    return {r.oid: f"{r.kind} {r.name}" for r in routines if r.name not in overloaded}


def qualified(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"


def role(name: str) -> str:
    """PUBLIC is a keyword, not a role name (quoted, PostgreSQL looks for a role called "public")."""
    return "PUBLIC" if name.lower() == "public" else quote_ident(name)


_PRIVILEGE = re.compile(r"[A-Z][A-Z_ ]*")


def grant_statements(conn: psycopg.Connection, targets: dict[int, str], on_sequence: bool) -> list[tuple[str, str]]:
    """(GRANT statement, grantee): schemas first, so owners set after them have CREATE there."""
    return [(grant_sql(target, grantee, privilege), grantee)
            for target, grantee, privilege in grant_rows(conn, targets, on_sequence)]


def grant_sql(target: str, grantee: str, privilege: str) -> str:
    return f"GRANT {privilege} ON {target} TO {role(grantee)};"


def grant_rows(conn: psycopg.Connection, targets: dict[int, str], on_sequence: bool) -> list[tuple[str, str, str]]:
    """(target as GRANT names it, grantee, privilege) of the database's objects but admin's and root's."""
    grants = []
    for schema, grantee, privilege in conn.execute(SCHEMA_GRANTS_SQL).fetchall():
        grants.append((f"SCHEMA {quote_ident(schema)}", grantee, privilege))
    kinds = {(schema, name): kind for schema, name, kind in conn.execute(RELATIONS_SQL).fetchall()}
    for schema, name, grantee, privilege in conn.execute(TABLE_GRANTS_SQL).fetchall():
        keyword = "SEQUENCE" if on_sequence and kinds.get((schema, name)) == "SEQUENCE" else "TABLE"
        grants.append((f"{keyword} {qualified(schema, name)}", grantee, privilege))
    for schema, name, grantee, privilege in conn.execute(TYPE_GRANTS_SQL).fetchall():
        grants.append((f"TYPE {qualified(schema, name)}", grantee, privilege))
    if targets:
        for specific, grantee, privilege in conn.execute(ROUTINE_GRANTS_SQL).fetchall():
            # specific_name is `<name>_<oid>` (logic test udf_privileges).
            oid = int(specific.rsplit("_", 1)[1])
            if oid in targets:
                grants.append((targets[oid], grantee, privilege))
    for _, _, privilege in grants:
        if not _PRIVILEGE.fullmatch(privilege):  # written into the script unquoted
            raise DatabaseError(f"unexpected privilege name from the server: {privilege!r}")
    return [grant for grant in grants if grant[1] not in IMPLICIT_GRANTEES]


_IDENT = r'(?:"(?:[^"]|"")+"|[^\s."(]+)'
_TYPE_NAME = re.compile(rf'^\s*CREATE\s+TYPE\s+({_IDENT})\.({_IDENT})\s', re.I)
_RELATION_KEYWORD = {"r": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}


def ident(text: str) -> str:
    """The name an identifier as SHOW CREATE prints it stands for."""
    return text[1:-1].replace('""', '"') if text.startswith('"') else text


def owner_statements(conn: psycopg.Connection, targets: dict[int, str], types: list[str]) -> list[tuple[str, str]]:
    """(ALTER ... OWNER TO statement, owner) of schemas, the backup's types, relations and routines."""
    return [(owner_sql(target, owner), owner) for target, owner in owner_rows(conn, targets, types)]


def owner_sql(target: str, owner: str) -> str:
    return f"ALTER {target} OWNER TO {role(owner)};"


def owner_rows(conn: psycopg.Connection, targets: dict[int, str], types: list[str]) -> list[tuple[str, str]]:
    """(target as ALTER names it, owner) of schemas, the given types, relations and routines."""
    owners = [(f"SCHEMA {quote_ident(schema)}", owner) for schema, owner in conn.execute(SCHEMA_OWNERS_SQL).fetchall()]
    created = {(ident(m.group(1)), ident(m.group(2))) for m in map(_TYPE_NAME.match, types) if m}
    # pg_type also lists the implicit array type of each enum and the row type of each table.
    owners += [(f"TYPE {qualified(schema, name)}", owner)
               for schema, name, owner in conn.execute(TYPE_OWNERS_SQL).fetchall() if (schema, name) in created]
    owners += [(f"{_RELATION_KEYWORD[kind]} {qualified(schema, name)}", owner)
               for schema, name, kind, owner in conn.execute(RELATION_OWNERS_SQL).fetchall()]
    if targets:
        owners += [(targets[int(oid)], owner) for oid, owner in conn.execute(ROUTINE_OWNERS_SQL).fetchall()
                   if int(oid) in targets]
    return [(target, owner) for target, owner in owners if owner]
