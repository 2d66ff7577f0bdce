"""CockroachDB dump against recorded server answers (no CockroachDB can run here).

The fake connection answers only the exact statements the CockroachDB dump issues, with rows in
the shapes CockroachDB documents (see tests/unit/crdb_recorded/*.py for the sources), and
logs every statement with the transaction and AS OF SYSTEM TIME it ran under.
"""

from __future__ import annotations

import re
import runpy
import subprocess
from pathlib import Path

import pytest

from devkit.pgserver import pg_bin
from enclave_backup.engines.cockroachdb import dump as dc
from enclave_backup.errors import DatabaseError
from enclave_backup.screen import check
from enclave_backup.sqlscript import CopyBlock, split
from enclave_backup.stats import DumpStats

RECORDED = Path(__file__).parent / "crdb_recorded"


def recorded(name: str) -> dict:
    return runpy.run_path(str(RECORDED / f"{name}.py"))


CATALOG = recorded("catalog")
DATA = recorded("data_rows")
V21 = recorded("legacy_v21_2")
ROUTINES = recorded("routines_grants")


class FakeResult:
    def __init__(self, rows):
        self.rows = list(rows)

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self):
        return list(self.rows)


class FakeCursor:
    def __init__(self, conn: "FakeCockroach"):
        self.conn = conn

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def stream(self, sql, size=1):
        self.conn.run(sql)
        self.conn.streamed.append(sql)
        self.conn.stream_sizes.append(size)
        yield from self.conn.select_rows[sql]


class FakeCockroach:
    """A psycopg-like connection (autocommit off) answering from recorded output."""

    def __init__(self, version: str, timestamp: str, *, select_rows=None, legacy=None, zone=None):
        self.version, self.timestamp = version, timestamp
        self.select_rows = select_rows or {}
        self.zone = CATALOG["ZONE_CONFIG"] if zone is None else zone
        self.legacy = legacy or {}
        self.log: list[tuple[int, str | None, str]] = []  # (transaction, AOST, statement)
        self.streamed: list[str] = []
        self.stream_sizes: list[int] = []
        self.txn = 0
        self.open = False
        self.aost: str | None = None
        self.statements_in_txn = 0
        self.commits = self.rollbacks = 0

    def run(self, sql: str) -> list:
        if not self.open:  # psycopg sends BEGIN before the first statement
            self.open, self.txn, self.aost, self.statements_in_txn = True, self.txn + 1, None, 0
        match = re.fullmatch(r"SET TRANSACTION AS OF SYSTEM TIME (.+)", sql)
        if match:
            assert self.statements_in_txn == 0, "AS OF SYSTEM TIME must open the transaction"
            self.aost = match.group(1)
        self.statements_in_txn += 1
        self.log.append((self.txn, self.aost, sql))
        return self.answer(sql)

    def answer(self, sql: str) -> list:
        answers = {
            dc.VERSION_SQL: [(self.version,)],
            dc.TIMESTAMP_SQL: [(self.timestamp,)],
            dc.SHOW_SCHEMAS_SQL: [(s,) for s in CATALOG["SHOW_CREATE_ALL_SCHEMAS"]],
            dc.SHOW_TYPES_SQL: [(s,) for s in CATALOG["SHOW_CREATE_ALL_TYPES"]],
            dc.SHOW_TABLES_SQL: [(s,) for s in CATALOG["SHOW_CREATE_ALL_TABLES"]],
            dc.RELATIONS_SQL: CATALOG["RELATIONS"],
            dc.MATVIEWS_SQL: CATALOG["MATVIEWS"],
            dc.COLUMNS_SQL: CATALOG["COLUMNS"],
            dc.SEQUENCES_SQL: CATALOG["SEQUENCES"],
            dc.GC_TTL_SQL.format('"malbork"'): self.zone,
            dc.FUNCTIONS_SQL: ROUTINES["FUNCTION_STATEMENTS"],
            dc.PROCEDURES_SQL: ROUTINES["PROCEDURE_STATEMENTS"],
            dc.TRIGGERS_SQL: ROUTINES["TRIGGER_STATEMENTS"],
            dc.SCHEMA_GRANTS_SQL: ROUTINES["SCHEMA_PRIVILEGES"],
            dc.TABLE_GRANTS_SQL: ROUTINES["TABLE_PRIVILEGES"],
            dc.TYPE_GRANTS_SQL: ROUTINES["TYPE_PRIVILEGES"],
            dc.ROUTINE_GRANTS_SQL: ROUTINES["ROUTINE_GRANTS"],
            dc.SCHEMA_OWNERS_SQL: ROUTINES["SCHEMA_OWNERS"],
            dc.TYPE_OWNERS_SQL: ROUTINES["TYPE_OWNERS"],
            dc.RELATION_OWNERS_SQL: ROUTINES["RELATION_OWNERS"],
            dc.ROUTINE_OWNERS_SQL: ROUTINES["ROUTINE_OWNERS"],
            **self.legacy,
        }
        if sql in answers:
            return answers[sql]
        if sql.startswith("SET "):
            return []
        seq = re.fullmatch(r"SELECT last_value, is_called FROM (.+)", sql)
        if seq:
            return [CATALOG["SEQUENCE_VALUES"][seq.group(1)]]
        if sql in self.select_rows:
            return []
        raise AssertionError(f"the recorded server has no answer for: {sql}")

    def execute(self, sql, params=None):
        assert params is None
        return FakeResult(self.run(sql))

    def cursor(self):
        return FakeCursor(self)

    def commit(self):
        self.open = False
        self.commits += 1

    def rollback(self):
        self.open = False
        self.rollbacks += 1


def server(version: str = "24.1", **kwargs) -> FakeCockroach:
    """A server of that version; 24.1 is what the chart deploys."""
    if version == "21.2":
        kwargs.setdefault("legacy", {dc.LEGACY_SCHEMAS_SQL: V21["SCHEMATA"],
                                     dc.LEGACY_TYPES_SQL: V21["TYPE_STATEMENTS"]})
    return FakeCockroach(DATA["VERSIONS"][version], DATA["TIMESTAMP"], select_rows=DATA["SELECT_ROWS"], **kwargs)


def v23_server() -> FakeCockroach:
    return server("23.1")


def v21_server() -> FakeCockroach:
    return server("21.2")


ALL_VERSIONS = sorted(DATA["VERSIONS"])


def dump(conn: FakeCockroach, **kwargs) -> tuple[str, DumpStats, list[bytes]]:
    chunks: list[bytes] = []
    stats = DumpStats()
    dc.dump_cockroachdb(conn, CATALOG["DATABASE"], chunks.append, stats, **kwargs)
    return b"".join(chunks).decode(), stats, chunks


def position(script: str, needle: str) -> int:
    assert needle in script, f"missing from script: {needle!r}"
    return script.index(needle)


ODD = '"sc1"."Odd ""Name"" x"'
ODD_COLUMNS = '("id", "Mixed Case", "it\'s", "secret", "state", "payload", "ratio")'
VERSION_24 = DATA["VERSIONS"]["24.1"]


def data_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("INSERT INTO")]


# --- order and schema -------------------------------------------------------------------

@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_script_order_schemas_types_tables_data_sequences_foreign_keys_then_views(version):
    script, _, _ = dump(server(version))
    order = [
        "CREATE TYPE sc1.status AS ENUM",
        "CREATE TABLE public.parent (",
        'INSERT INTO "public"."parent" ("x", "y", "z") VALUES ',
        f"INSERT INTO {ODD} {ODD_COLUMNS} VALUES ",
        "SELECT setval('\"public\".\"s\"', 42, true);",
        "ALTER TABLE public.full_test ADD CONSTRAINT full_test_x_y_z_fkey FOREIGN KEY",
        "ALTER TABLE public.full_test VALIDATE CONSTRAINT test_fk;",
        "CREATE VIEW public.vx (",
        "CREATE MATERIALIZED VIEW public.mv (x) AS SELECT x FROM public.parent;",
    ]
    positions = [position(script, needle) for needle in order]
    assert positions == sorted(positions)


def test_views_come_after_every_table_and_all_data():
    # CockroachDB refuses to rename a database that a view depends on
    # (pkg/sql/rename_database.go @ 548e61c8d9e38d46531c0d9f0b3e885d8a8245c9; logic test
    # rename_database @ 0b7d912af71c059a3ed56346f58e87bb18a7704a: "cannot rename database
    # because relation "v.public.v" depends on relation "v.public.kv""), so the restore holds
    # views back until the end; the script keeps them last so that is a tail, not a scan.
    script, _, _ = dump(server())
    first_view = position(script, "CREATE VIEW")
    assert script.rindex("INSERT INTO") < first_view
    assert script.rindex("CREATE TABLE") < first_view
    assert "REFRESH MATERIALIZED VIEW" not in script  # created after the data, it is filled at once


def test_header_names_tool_engine_database_server_snapshot_and_gc_window():
    script, _, _ = dump(server())
    head = script.split("\n\n", 1)[0]
    assert head.startswith("-- enclave-backup dump\n-- engine: cockroachdb\n-- database: malbork\n")
    assert f"-- server: {VERSION_24}" in head
    assert f"-- as of system time: {DATA['TIMESTAMP']}" in head
    assert "-- gc.ttlseconds at dump time: 14400" in head
    assert all(line.startswith("--") for line in head.splitlines())


def test_public_schema_is_not_recreated_in_an_empty_database():
    script, _, _ = dump(server())
    assert "CREATE SCHEMA IF NOT EXISTS public;" in script
    assert not re.search(r"^CREATE SCHEMA (?!IF NOT EXISTS)", script, re.M)


def test_create_rows_are_emitted_verbatim_but_for_the_database_name():
    script, _, _ = dump(server())
    assert CATALOG["ODD_TABLE_CREATE"].replace("malbork.", "") + "\n" in script
    for statement in CATALOG["SHOW_CREATE_ALL_TABLES"]:
        assert statement.replace("malbork.public.", "public.").replace("malbork.sc1.", "sc1.") in script
    # Unqualified, the script replays into any database (the scratch database of a restore).
    assert "malbork." not in script.split("-- schemas", 1)[1]


# --- data: one-line INSERT batches of cast literals ----------------------------------------

@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_every_version_writes_data_as_cast_literals_never_copy(version):
    conn = server(version)
    script, _, _ = dump(conn)
    assert "COPY" not in script.upper().replace("COPYRIGHT", "")
    assert not any(sql.startswith("COPY") for _, _, sql in conn.log)
    assert sorted(conn.streamed) == sorted(DATA["SELECT_ROWS"])
    assert set(conn.stream_sizes) == {1000}  # rows come from libpq a batch at a time, not one result each


def test_bytes_and_jsonb_are_written_so_their_own_parsers_read_them():
    # The values COPY text corrupts on 23.1+: COPY FROM un-escapes BYTES and stores the
    # text `\xdeadbeef` as bytes, and never un-escapes JSONB (pkg/sql/copy_from.go @
    # b154c94462a15c922dd4b1bbc250007a69a5f633, readTextTupleDatum's DecodeCopy type list).
    script, _, _ = dump(server())
    docs = next(line for line in data_lines(script) if '"public"."docs"' in line)
    assert docs == (
        'INSERT INTO "public"."docs" ("id", "t", "j", "b") VALUES '
        "('1'::INT8, e'a tab\\t separates us'::STRING, e'\"abc\\\\n123\"'::JSONB, decode('deadbeef', 'hex')), "
        "('2'::INT8, 'some pipe || characters'::STRING, '{\"a\": \"b\"}'::JSONB, decode('00ff', 'hex')), "
        "('3'::INT8, e'new line chars!\\n ok?'::STRING, e'{\"q\": \"say \\\\\"hi\\\\\"\\\\\\\\\"}'::JSONB, "
        "decode('', 'hex')), "
        "('4'::INT8, NULL, NULL, NULL), "
        "('5'::INT8, e'a backslash IS\\\\NT a biggie'::STRING, e'\"\\\\\\\\N\"'::JSONB, decode('5c4e', 'hex')), "
        "('6'::INT8, 'a quote \" character should not be escaped'::STRING, "
        "'[1, \"hello\", {\"a\": [\"foo\", {\"b\": 3}]}]'::JSONB, NULL), "
        "('7'::INT8, ''::STRING, 'null'::JSONB, NULL);")


def test_user_defined_types_are_cast_by_their_unqualified_name():
    script, _, _ = dump(server())
    odd = next(line for line in data_lines(script) if ODD in line)
    assert "'open'::sc1.status" in odd and "malbork." not in odd
    assert "NULL, NULL, NULL, '1.5e-323'::FLOAT8)" in odd


def test_every_statement_is_one_line_and_no_line_starts_with_a_backslash():
    # `cockroach sql` takes a line starting with a backslash as a client command, also
    # inside a multi-line statement (pkg/cli/clisqlshell/sql.go @
    # 74e17666a23dade142794c93350fe1bf0d59c570, doHandleCliCmd; "\p during a multi-line
    # statement" in its help), and re-joins a statement's lines on every new line.
    script, _, _ = dump(server())
    for line in data_lines(script):
        assert line.endswith(";")
    assert not any(line.startswith("\\") for line in script.splitlines())
    data = script[position(script, "INSERT INTO"):script.rindex("INSERT INTO")]
    assert all(line.startswith("INSERT INTO") or line.startswith("--") or not line
               for line in data.splitlines())


def test_computed_and_rowid_columns_are_not_copied_but_hidden_user_columns_are():
    conn = server()
    script, _, _ = dump(conn)
    assert "INSERT INTO \"public\".\"t\" (\"a\") VALUES ('7'::INT8);\n" in script
    assert ('INSERT INTO "public"."parent" ("x", "y", "z") VALUES '
            "('1'::INT8, '2'::INT8, '3'::INT8), ('4'::INT8, NULL, '6'::INT8);\n") in script
    assert not any('"rowid"' in sql or '"b"::' in sql or '"c"::' in sql for sql in conn.streamed)
    assert any('"secret"' in sql for sql in conn.streamed)  # NOT VISIBLE, but user data


def test_only_base_tables_are_read_never_views_sequences_or_materialized_views():
    conn = server()
    _, stats, _ = dump(conn)
    read = sorted(re.search(r" FROM (.+)$", sql).group(1) for sql in conn.streamed)
    assert read == ['"public"."docs"', '"public"."full_test"', '"public"."parent"', '"public"."s_tbl"',
                    '"public"."t"', ODD]
    assert set(stats.tables) == {"public.docs", "public.full_test", "public.parent", "public.s_tbl", "public.t",
                                 'sc1."Odd ""Name"" x"'}


def test_row_counts_and_snapshot_land_in_stats():
    _, stats, _ = dump(server())
    assert stats.tables == {"public.docs": 7, "public.full_test": 1, "public.parent": 2, "public.s_tbl": 2,
                            "public.t": 1, 'sc1."Odd ""Name"" x"': 3}
    assert stats.snapshot == DATA["TIMESTAMP"]
    assert stats.current_table == "" and stats.rows == 16


def test_batches_are_bounded_by_rows(monkeypatch):
    monkeypatch.setattr(dc.insertbatch, "BATCH_ROWS", 2)
    script, stats, _ = dump(server())
    lines = [line for line in data_lines(script) if '"public"."docs"' in line]
    assert [line.count("::INT8") for line in lines] == [2, 2, 2, 1]
    assert stats.tables["public.docs"] == 7


def test_batches_are_bounded_by_size(monkeypatch):
    monkeypatch.setattr(dc.insertbatch, "BATCH_BYTES", 1)
    script, _, _ = dump(server())
    assert script.count('INSERT INTO "public"."parent" ') == 2


# --- one snapshot -----------------------------------------------------------------------

def test_every_read_runs_in_one_transaction_at_the_one_recorded_timestamp():
    conn = server()
    dump(conn)
    first_txn = [sql for txn, _, sql in conn.log if txn == 1]
    assert first_txn == [dc.SERIALIZABLE_SQL, dc.VERSION_SQL, dc.FLOAT_DIGITS_SQL, dc.TIMESTAMP_SQL]
    assert [sql for txn, _, sql in conn.log if txn == 2] == [dc.GC_TTL_SQL.format('"malbork"')]
    reads = [(txn, aost, sql) for txn, aost, sql in conn.log if txn > 2]
    assert {txn for txn, _, _ in reads} == {3}
    assert reads[0][2] == f"SET TRANSACTION AS OF SYSTEM TIME {DATA['TIMESTAMP']}"
    assert {aost for _, aost, _ in reads} == {DATA["TIMESTAMP"]}
    assert sum(sql in conn.select_rows for _, _, sql in reads) == 6
    assert conn.commits == 1 and conn.rollbacks == 3 and not conn.open


def test_the_version_is_queried_once():
    conn = server()
    dump(conn)
    assert [sql for _, _, sql in conn.log].count(dc.VERSION_SQL) == 1


def test_a_malformed_timestamp_is_refused_before_it_reaches_sql():
    conn = FakeCockroach(VERSION_24, "1'; DROP TABLE x; --")
    with pytest.raises(DatabaseError, match="cluster_logical_timestamp"):
        dump(conn)
    assert not any("AS OF SYSTEM TIME" in sql for _, _, sql in conn.log)


# --- GC window ----------------------------------------------------------------------------

class Clock:
    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_dump_that_outlives_the_gc_window_stops_with_the_remedy():
    # 24.1's default gc.ttlseconds is 4 h; each clock read here advances 20 minutes.
    chunks: list[bytes] = []
    with pytest.raises(DatabaseError, match=r"gc\.ttlseconds=14400.*CONFIGURE ZONE USING gc\.ttlseconds"):
        dc.dump_cockroachdb(server(), "malbork", chunks.append, DumpStats(), clock=Clock(1200))


def test_a_dump_inside_the_gc_window_finishes():
    chunks: list[bytes] = []
    dc.dump_cockroachdb(server(), "malbork", chunks.append, DumpStats(), clock=Clock(1))
    assert b"CREATE MATERIALIZED VIEW" in b"".join(chunks)


def test_an_unreadable_zone_config_skips_only_the_early_check():
    script, _, _ = dump(server(zone=[]))
    assert "-- gc.ttlseconds at dump time: unknown" in script


# --- sequences --------------------------------------------------------------------------

def test_used_sequences_get_setval_and_untouched_ones_are_left_to_their_create():
    script, _, _ = dump(server())
    assert "SELECT setval('\"public\".\"s\"', 42, true);" in script
    assert "unused\"'" not in script  # last_value 0 is below MINVALUE 1: setval would fail


# --- older servers ----------------------------------------------------------------------

def test_v21_uses_catalog_queries_for_schemas_and_types():
    conn = v21_server()
    script, _, _ = dump(conn)
    statements = [sql for _, _, sql in conn.log]
    assert dc.SHOW_SCHEMAS_SQL not in statements and dc.SHOW_TYPES_SQL not in statements
    assert dc.LEGACY_SCHEMAS_SQL in statements and dc.LEGACY_TYPES_SQL in statements
    assert (position(script, 'CREATE SCHEMA IF NOT EXISTS "sc1";')
            < position(script, "CREATE TYPE sc1.status AS ENUM ('open', 'closed', 'inactive');")
            < position(script, "CREATE TABLE public.parent ("))


# A 21.2 table with a hash-sharded primary key, as SHOW CREATE prints it there
# (https://www.cockroachlabs.com/docs/v21.2/hash-sharded-indexes: "USING HASH WITH
# BUCKET_COUNT = n", refused unless experimental_enable_hash_sharded_indexes is on).
HASHED = """CREATE TABLE public.events (
    ts TIMESTAMP NOT NULL,
    crdb_internal_ts_shard_8 INT4 NOT VISIBLE NOT NULL AS (mod(fnv32(COALESCE(CAST(ts AS STRING), '':::STRING)), 8:::INT8)) STORED,
    CONSTRAINT "primary" PRIMARY KEY (ts ASC) USING HASH WITH BUCKET_COUNT = 8,
    FAMILY "primary" (ts, crdb_internal_ts_shard_8)
);"""


@pytest.mark.parametrize(("version", "expected"), [((21, 2), [dc.HASH_SHARDED_SQL]), ((22, 1), []),
                                                   ((24, 1), [])])
def test_hash_sharded_ddl_before_22_1_gets_the_session_setting(version, expected):
    assert dc.session_settings(version, [HASHED]) == expected
    assert dc.session_settings(version, CATALOG["SHOW_CREATE_ALL_TABLES"]) == []


def test_a_v21_script_with_hash_sharded_tables_enables_them_before_the_creates():
    conn = v21_server()
    original = conn.answer
    conn.answer = lambda sql: [(HASHED,)] + original(sql) if sql == dc.SHOW_TABLES_SQL else original(sql)
    script, _, _ = dump(conn)
    assert position(script, dc.HASH_SHARDED_SQL) < position(script, "CREATE TABLE public.events (")
    assert dc.HASH_SHARDED_SQL not in dump(server("24.1"))[0]


# GENERATED ALWAYS AS IDENTITY as SHOW CREATE prints it (logic test generated_as_identity,
# https://www.cockroachlabs.com/docs/v24.1/create-table#identity-columns).
IDENTITY = ('CREATE TABLE public."Ids" (\n    id INT8 NOT NULL GENERATED ALWAYS AS IDENTITY (START 1 INCREMENT 1),'
            '\n    "Other Id" INT8 NULL GENERATED ALWAYS AS IDENTITY (START 10 INCREMENT 5),'
            '\n    note STRING NULL DEFAULT \'GENERATED ALWAYS AS IDENTITY\':::STRING,'
            '\n    CONSTRAINT "Ids_pkey" PRIMARY KEY (id ASC)\n);')
BY_DEFAULT = IDENTITY.replace("ALWAYS AS IDENTITY (", "BY DEFAULT AS IDENTITY (").replace('"Ids"', "ok")


def test_identity_always_columns_are_read_from_the_create_statements():
    found = dc.identity_always_columns([IDENTITY, BY_DEFAULT, *CATALOG["SHOW_CREATE_ALL_TABLES"]])
    assert found == [('public."Ids"', "id"), ('public."Ids"', '"Other Id"')]


def with_identity_table(conn: FakeCockroach) -> FakeCockroach:
    original = conn.answer
    conn.answer = lambda sql: [(IDENTITY,)] + original(sql) if sql == dc.SHOW_TABLES_SQL else original(sql)
    return conn


@pytest.mark.parametrize("version", ["24.1", "25.2"])
def test_from_24_1_identity_always_columns_take_the_values_then_become_always_again(version, capsys):
    script, _, _ = dump(with_identity_table(server(version)))
    relax = position(script, 'ALTER TABLE public."Ids" ALTER COLUMN "Other Id" SET GENERATED BY DEFAULT;')
    assert position(script, 'CREATE TABLE public."Ids" (') < position(
        script, 'ALTER TABLE public."Ids" ALTER COLUMN id SET GENERATED BY DEFAULT;') < relax
    assert relax < script.index("INSERT INTO")
    again = position(script, 'ALTER TABLE public."Ids" ALTER COLUMN "Other Id" SET GENERATED ALWAYS;')
    assert script.rindex("INSERT INTO") < position(script, "SELECT setval(") < again
    assert "GENERATED ALWAYS AS IDENTITY" not in capsys.readouterr().out


@pytest.mark.parametrize("version", ["21.2", "22.2", "23.1"])
def test_before_24_1_identity_always_tables_are_named_in_a_warning(version, capsys):
    script, _, _ = dump(with_identity_table(server(version)))
    assert "SET GENERATED" not in script
    out = capsys.readouterr().out
    # The log renders as console text or JSON, depending on what configured it first.
    assert "GENERATED ALWAYS AS IDENTITY" in out and re.search(r'public\.\\?"Ids\\?"', out)


def test_the_identity_sequence_runs_live_in_postgresql(pg, dbname):
    # PostgreSQL has the same ALTER COLUMN ... SET GENERATED: the statements the script wraps
    # around the data load explicit values into an ALWAYS column and leave it ALWAYS.
    columns = [("public.ids", "id")]
    with pg.connect(dbname) as conn:
        conn.execute("CREATE TABLE public.ids (id INT8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)")
        with pytest.raises(Exception, match="cannot insert a non-DEFAULT value into column"):
            conn.execute("INSERT INTO public.ids (id, v) VALUES (7, 'x')")
        for sql in dc.set_generated(columns, "BY DEFAULT"):
            conn.execute(sql)
        conn.execute("INSERT INTO public.ids (id, v) VALUES (7, 'seven'), (9, 'nine')")
        for sql in dc.set_generated(columns, "ALWAYS"):
            conn.execute(sql)
        assert conn.execute("SELECT id, v FROM public.ids ORDER BY id").fetchall() == [(7, "seven"), (9, "nine")]
        assert conn.execute("SELECT identity_generation FROM information_schema.columns "
                            "WHERE table_name = 'ids' AND column_name = 'id'").fetchone()[0] == "ALWAYS"
        with pytest.raises(Exception, match="cannot insert a non-DEFAULT value into column"):
            conn.execute("INSERT INTO public.ids (id, v) VALUES (11, 'x')")


def test_servers_before_21_1_are_refused_with_the_minimum_version():
    conn = FakeCockroach(V21["OLD_VERSION"], V21["TIMESTAMP"])
    with pytest.raises(DatabaseError, match=r"v21\.1 or newer.*v20\.2\.19.*upgrade"):
        dump(conn)
    assert not any("AS OF SYSTEM TIME" in sql for _, _, sql in conn.log)


def test_a_non_cockroach_version_string_is_refused():
    conn = FakeCockroach("PostgreSQL 15.4 on x86_64-pc-linux-gnu", DATA["TIMESTAMP"])
    with pytest.raises(DatabaseError, match="ENCLAVE_BACKUP_ENGINE=postgresql"):
        dump(conn)


@pytest.mark.parametrize(("text", "version"), [
    (DATA["VERSIONS"]["25.2"], (25, 2)),
    (DATA["VERSIONS"]["24.1"], (24, 1)),
    (DATA["VERSIONS"]["23.1"], (23, 1)),
    (DATA["VERSIONS"]["22.2"], (22, 2)),
    ("CockroachDB OSS v21.1.0 (x86_64-unknown-linux-gnu, built 2021/05/17 13:49:40, go1.15.11)", (21, 1)),
    ("CockroachDB CCL v23.2.0-alpha.1 (x86_64-pc-linux-gnu, built 2023/09/27)", (23, 2)),
])
def test_version_parsing(text, version):
    assert dc.parse_version(text) == version


# --- small pieces -----------------------------------------------------------------------

def test_split_keeps_creates_before_and_everything_else_after():
    creates, after = dc.split_table_statements(CATALOG["SHOW_CREATE_ALL_TABLES"])
    assert all(s.startswith("CREATE ") for s in creates) and len(creates) == 10
    assert after[0].startswith("ALTER TABLE public.full_test ADD CONSTRAINT")
    assert after[2].startswith("-- Validate")
    assert after[-1] == "ALTER TABLE public.full_test VALIDATE CONSTRAINT test_fk;"
    relations, views = dc.split_views(creates)
    assert [v.split(" (")[0] for v in views] == ["CREATE VIEW public.vx", "CREATE MATERIALIZED VIEW public.mv"]
    assert len(relations) == 8


@pytest.mark.parametrize(("row", "copied"), [
    (("NO", "NO", "", None), True),
    (("YES", "NO", "", "unique_rowid()"), False),  # implicit primary key
    (("YES", "NO", "", None), True),  # NOT VISIBLE user column
    (("NO", "YES", "a + 1:::INT8", None), False),  # computed, stored or virtual
    (("NO", "ALWAYS", "a * 2", None), False),
])
def test_column_selection(row, copied):
    assert dc.is_copied(*row) is copied


def test_table_without_copyable_columns_is_reloaded_with_default_rows():
    table = dc.Table("public", "only_rowid", ())
    conn = FakeCockroach(VERSION_24, DATA["TIMESTAMP"])
    conn.answer = lambda sql: [(2,)] if sql == 'SELECT count(*) FROM "public"."only_rowid"' else []
    out: list[bytes] = []
    stats = DumpStats()
    dc.dump_table(conn, table, out.append, stats)
    assert b"".join(out) == b'INSERT INTO "public"."only_rowid" DEFAULT VALUES;\n' * 2
    assert stats.tables == {"public.only_rowid": 2}


# --- the emitted data replays in a real PostgreSQL, through psql and through the restore's splitter ---

# PostgreSQL stand-ins for CockroachDB's type names: STRING as a domain over text, the enum as an enum.
PG_SCHEMA = ('CREATE DOMAIN string AS text; CREATE SCHEMA sc1; '
             "CREATE TYPE sc1.status AS ENUM ('open', 'closed', 'inactive'); "
             'CREATE TABLE sc1."Odd ""Name"" x" (id INT8 PRIMARY KEY, "Mixed Case" string, "it\'s" string, '
             "secret string, state sc1.status, payload BYTEA, ratio FLOAT8); "
             "CREATE TABLE public.docs (id INT8 PRIMARY KEY, t string, j JSONB, b BYTEA);")
EXPECTED_ODD_ROWS = [
    (1, "Tab\there", "line\nbreak", "s3cr3t", "open", b"\x00\xff", "nan"),
    (2, "\\.", "", None, "closed", b"", "-0.0"),
    (3, "Zażółć 🐘", "it's", None, None, None, "1.5e-323"),
]
EXPECTED_DOCS = [
    (1, "a tab\t separates us", "abc\n123", b"\xde\xad\xbe\xef"),
    (2, "some pipe || characters", {"a": "b"}, b"\x00\xff"),
    (3, "new line chars!\n ok?", {"q": 'say "hi"\\'}, b""),
    (4, None, None, None),
    (5, "a backslash IS\\NT a biggie", "\\N", b"\\N"),
    (6, 'a quote " character should not be escaped', [1, "hello", {"a": ["foo", {"b": 3}]}], None),
    (7, "", None, None),
]


def replayed(pg, dbname: str) -> tuple[list[tuple], list[tuple]]:
    with pg.connect(dbname) as conn:
        odd = conn.execute('SELECT * FROM sc1."Odd ""Name"" x" ORDER BY id').fetchall()
        docs = conn.execute("SELECT id, t, j, b FROM public.docs ORDER BY id").fetchall()
    odd = [(*row[:5], None if row[5] is None else bytes(row[5]), repr(row[6])) for row in odd]
    docs = [(i, t, j, None if b is None else bytes(b)) for i, t, j, b in docs]
    return odd, docs


def test_data_replays_in_postgresql_through_psql(pg, dbname):
    script, _, _ = dump(server())
    inserts = "\n".join(line for line in data_lines(script) if ODD in line or '"public"."docs"' in line)
    env = {**pg.env(dbname), "PATH": "/usr/bin:/bin"}
    subprocess.run([pg_bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"], input=(PG_SCHEMA + "\n" + inserts).encode(),
                   env=env, check=True, capture_output=True)
    odd, docs = replayed(pg, dbname)
    assert odd == EXPECTED_ODD_ROWS
    # JSON 'null' is a JSON value, not SQL NULL; psycopg reads both as None, so check it apart.
    assert docs == EXPECTED_DOCS
    with pg.connect(dbname) as conn:
        assert conn.execute("SELECT j IS NOT NULL FROM public.docs WHERE id = 7").fetchone()[0]


def test_data_replays_in_postgresql_through_the_restore_splitter(pg, dbname):
    from enclave_backup.sqlscript import Statement, split
    script, _, _ = dump(server())
    inserts = "\n".join(line for line in data_lines(script) if ODD in line or '"public"."docs"' in line)
    with pg.connect(dbname) as conn:
        conn.autocommit = True
        conn.execute(PG_SCHEMA)
        statements = list(split([(inserts + "\n").encode()]))
        assert all(isinstance(s, Statement) for s in statements) and len(statements) == 2
        for statement in statements:
            conn.execute(statement.sql)
    assert replayed(pg, dbname) == (EXPECTED_ODD_ROWS, EXPECTED_DOCS)


# --- routines, triggers, grants, owners ----------------------------------------------------
# Recorded answers and their sources: tests/unit/crdb_recorded/routines_grants.py.

@pytest.mark.parametrize(("version", "expected"), [
    ("21.2", []), ("22.2", [dc.FUNCTIONS_SQL]), ("23.1", [dc.FUNCTIONS_SQL]),
    ("24.1", [dc.FUNCTIONS_SQL, dc.PROCEDURES_SQL]), ("25.2", [dc.FUNCTIONS_SQL, dc.PROCEDURES_SQL]),
    ("25.3", [dc.FUNCTIONS_SQL, dc.PROCEDURES_SQL, dc.TRIGGERS_SQL]),
])
def test_routine_and_trigger_catalogs_are_read_only_where_the_version_has_them(version, expected):
    # One failing query aborts the AS OF SYSTEM TIME transaction, so nothing is probed:
    # functions 22.2+, procedures 23.2+, crdb_internal.create_trigger_statements 25.3+.
    conn = server(version)
    script, _, _ = dump(conn)
    sent = [sql for _, _, sql in conn.log]
    routine_reads = [dc.FUNCTIONS_SQL, dc.PROCEDURES_SQL, dc.TRIGGERS_SQL]
    assert [sql for sql in routine_reads if sql in sent] == expected
    # Routine grants and owners are asked for only when there are routines.
    assert (dc.ROUTINE_GRANTS_SQL in sent) == (dc.ROUTINE_OWNERS_SQL in sent) == bool(expected)
    assert ("CREATE FUNCTION public.f(" in script) == bool(expected)
    assert ("CREATE PROCEDURE" in script) == (dc.PROCEDURES_SQL in expected)
    assert ("CREATE TRIGGER" in script) == (dc.TRIGGERS_SQL in expected)


def test_tail_order_routines_triggers_views_grants_owners_after_the_data():
    script, _, _ = dump(server("25.3"))
    order = [
        "ALTER TABLE public.full_test VALIDATE CONSTRAINT test_fk;",
        "-- routines\nCREATE FUNCTION public.f1()",
        "CREATE FUNCTION public.f(IN a public.mood)",  # creation order: function_id 121
        "CREATE PROCEDURE public.double_triple(",  # procedure_id 122
        "CREATE FUNCTION public.trigger_func()",  # function_id 124
        "CREATE TRIGGER t1_trigger AFTER INSERT ON public.parent FOR EACH ROW EXECUTE FUNCTION public.trigger_func();",
        "CREATE VIEW public.vx (",
        "CREATE MATERIALIZED VIEW public.mv",
        "-- grants\n",
        'GRANT CREATE ON SCHEMA "sc1" TO "app_owner";',
        'GRANT SELECT ON TABLE "public"."parent" TO "app_reader";',
        "-- owners\n",
        'ALTER SCHEMA "sc1" OWNER TO "app_owner";',
        'ALTER TABLE "public"."parent" OWNER TO "app_owner";',
    ]
    positions = [position(script, needle) for needle in order]
    assert positions == sorted(positions)
    # Triggers come after every row: the load does not fire them (as pg_dump does).
    assert script.rindex("INSERT INTO") < position(script, "CREATE TRIGGER")
    assert "malbork." not in script.split("-- schemas", 1)[1]


def with_table_calling_f1(conn: FakeCockroach) -> FakeCockroach:
    original = conn.answer
    conn.answer = lambda sql: ([(ROUTINES["TABLE_CALLING_F1"],)] + original(sql) if sql == dc.SHOW_TABLES_SQL
                               else original(sql))
    return conn


@pytest.mark.parametrize("version", ["24.1", "25.3"])
def test_a_routine_a_table_calls_is_created_before_the_tables_and_only_once(version):
    # A DEFAULT may call a function (logic test udf_in_column_defaults): CREATE TABLE needs it.
    script, _, _ = dump(with_table_calling_f1(server(version)))
    assert (position(script, "-- routines the tables call\nCREATE FUNCTION public.f1()")
            < position(script, "CREATE TABLE public.t1 (") < position(script, "CREATE TABLE public.parent ("))
    assert script.count("CREATE FUNCTION public.f1()") == 1
    # The routine that reads a table still waits for the tables.
    assert script.rindex("CREATE TABLE") < position(script, "CREATE FUNCTION public.f(")


def test_routine_called_by_looks_for_a_call_outside_string_literals():
    f1 = dc.Routine(100120, "FUNCTION", "public.f1", ROUTINES["F1"])
    assert f1.called_by([ROUTINES["TABLE_CALLING_F1"]])
    assert not f1.called_by(["CREATE TABLE public.x (\n    n STRING NULL DEFAULT 'public.f1()':::STRING\n);"])
    assert not f1.called_by(["CREATE TABLE public.x (\n    n INT8 NULL DEFAULT public.f10()\n);"])


def test_grants_skip_admin_and_root_name_public_as_the_keyword_and_sequences_as_sequences():
    script, _, _ = dump(server("25.3"))
    grants = script.split("-- grants\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert grants == [
        'GRANT CREATE ON SCHEMA "public" TO PUBLIC;',
        'GRANT USAGE ON SCHEMA "public" TO PUBLIC;',
        'GRANT CREATE ON SCHEMA "sc1" TO "app_owner";',
        'GRANT USAGE ON SCHEMA "sc1" TO "app_reader";',
        'GRANT SELECT ON TABLE "public"."parent" TO "app_reader";',
        'GRANT USAGE ON SEQUENCE "public"."s" TO "app_writer";',
        'GRANT SELECT ON TABLE "public"."vx" TO "app_reader";',
        'GRANT INSERT ON TABLE "sc1"."Odd ""Name"" x" TO "app_writer";',
        'GRANT USAGE ON TYPE "public"."mood" TO PUBLIC;',
        'GRANT USAGE ON TYPE "sc1"."status" TO "app_reader";',
        'GRANT EXECUTE ON PROCEDURE public.double_triple TO "app_writer";',
        'GRANT EXECUTE ON FUNCTION public.f TO "app_reader";',
        'GRANT EXECUTE ON FUNCTION public.f TO PUBLIC;',
    ]
    assert ("-- roles the grants and owners below name; each must exist where this is replayed: "
            "app_owner, app_reader, app_writer, root\n-- grants\n") in script


def test_owners_of_schemas_the_backups_types_relations_and_routines():
    script, _, _ = dump(server("25.3"))
    owners = script.split("-- owners\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert owners == [
        'ALTER SCHEMA "sc1" OWNER TO "app_owner";',
        # pg_type's array types (_mood) and table row types (parent) are not the backup's types.
        'ALTER TYPE "public"."mood" OWNER TO "root";',
        'ALTER TYPE "sc1"."status" OWNER TO "app_owner";',
        'ALTER MATERIALIZED VIEW "public"."mv" OWNER TO "root";',
        'ALTER TABLE "public"."parent" OWNER TO "app_owner";',
        'ALTER SEQUENCE "public"."s" OWNER TO "app_owner";',
        'ALTER VIEW "public"."vx" OWNER TO "root";',
        'ALTER TABLE "sc1"."Odd ""Name"" x" OWNER TO "app_owner";',
        'ALTER FUNCTION public.f1 OWNER TO "root";',
        'ALTER FUNCTION public.f OWNER TO "app_owner";',
        'ALTER PROCEDURE public.double_triple OWNER TO "root";',
        'ALTER FUNCTION public.trigger_func OWNER TO "root";',
    ]


def test_before_22_2_grants_and_owners_cover_schemas_tables_and_types():
    script, _, _ = dump(server("21.2"))
    assert 'GRANT SELECT ON TABLE "public"."parent" TO "app_reader";' in script
    assert 'ALTER TYPE "sc1"."status" OWNER TO "app_owner";' in script
    assert "FUNCTION" not in script.split("-- grants\n", 1)[1]
    # GRANT ... ON SEQUENCE is documented from 22.2; before, a sequence is granted as a table.
    assert 'GRANT USAGE ON TABLE "public"."s" TO "app_writer";' in script


def test_overloaded_routines_keep_their_definitions_but_lose_grants_and_owners_with_a_warning(capsys):
    # Without an argument list GRANT and ALTER need a unique name (logic test udf_privileges
    # grants `test_priv_sc1.test_priv_f3` by name alone).
    conn = server("25.3")
    original = conn.answer
    overload = ROUTINES["F_READS_TABLE"].replace("(IN a malbork.public.mood)", "(IN a INT8)")
    conn.answer = lambda sql: original(sql) + [(125, overload)] if sql == dc.FUNCTIONS_SQL else original(sql)
    script, _, _ = dump(conn)
    assert "CREATE FUNCTION public.f(IN a public.mood)" in script and "CREATE FUNCTION public.f(IN a INT8)" in script
    assert "ON FUNCTION public.f " not in script and "ALTER FUNCTION public.f OWNER" not in script
    assert 'GRANT EXECUTE ON PROCEDURE public.double_triple TO "app_writer";' in script
    out = capsys.readouterr().out
    assert "overloaded routines" in out and "public.f" in out


def test_an_unreadable_routine_definition_stops_the_dump():
    conn = server("25.3")
    original = conn.answer
    conn.answer = lambda sql: [(130, "CREATE FUNCTION f")] if sql == dc.FUNCTIONS_SQL else original(sql)
    with pytest.raises(DatabaseError, match="unexpected routine definition"):
        dump(conn)


# PostgreSQL stand-ins for the objects the tail names (STRING as a domain, as above).
PG_OBJECTS = ('CREATE DOMAIN string AS text; CREATE SCHEMA sc1; '
              "CREATE TYPE public.mood AS ENUM ('happy', 'sad'); "
              "CREATE TYPE sc1.status AS ENUM ('open', 'closed', 'inactive'); "
              "CREATE TABLE public.parent (x INT8, y INT8, z INT8); "
              'CREATE TABLE sc1."Odd ""Name"" x" (id INT8 PRIMARY KEY); '
              "CREATE SEQUENCE public.s;")
PG_ROLES = ("app_owner", "app_reader", "app_writer", "root")


def test_the_tail_replays_live_in_postgresql_through_psql(pg, dbname):
    # PostgreSQL takes the same statements: CockroachDB's routine text (INT8, NOT LEAKPROOF,
    # OUT parameters, PL/pgSQL), CREATE TRIGGER, GRANT ... ON SCHEMA/TABLE/SEQUENCE/TYPE/
    # FUNCTION/PROCEDURE, ALTER ... OWNER TO; views are left out (they are CockroachDB text).
    script, _, _ = dump(server("25.3"))
    tail = script[position(script, "-- routines\n"):]
    tail = tail.replace(tail[tail.index("-- views\n"):tail.index("-- roles the grants")], "")
    tail = "\n".join(line for line in tail.splitlines()
                     if '"vx"' not in line and '"mv"' not in line)  # the views' own grants and owners
    env = {**pg.env(dbname), "PATH": "/usr/bin:/bin"}
    with pg.connect() as conn:
        for name in PG_ROLES:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
                conn.execute(f'CREATE ROLE "{name}"')
    try:
        subprocess.run([pg_bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"], input=(PG_OBJECTS + "\n" + tail).encode(),
                       env=env, check=True, capture_output=True)
        with pg.connect(dbname) as conn:
            assert conn.execute("SELECT public.f('happy')").fetchone() == (None,)  # no rows in parent yet
            assert conn.execute("CALL public.double_triple(2, NULL)").fetchone() == (4, 12)
            conn.execute("INSERT INTO public.parent (x) VALUES (5)")  # the trigger fires now, after the load
            assert conn.execute("SELECT public.f('sad')").fetchone() == (5,)
            assert conn.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal").fetchall() == [("t1_trigger",)]
            assert conn.execute("SELECT has_table_privilege('app_reader', 'public.parent', 'SELECT'), "
                                "has_sequence_privilege('app_writer', 'public.s', 'USAGE'), "
                                "has_function_privilege('app_reader', 'public.f(public.mood)', 'EXECUTE'), "
                                "has_schema_privilege('app_reader', 'sc1', 'USAGE')").fetchone() == (True,) * 4
            assert conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'parent'").fetchone() == ("app_owner",)
            assert conn.execute("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'sc1'"
                                ).fetchone() == ("app_owner",)
            assert conn.execute("SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname = 'f'"
                                ).fetchone() == ("app_owner",)
    finally:
        with pg.connect(dbname) as conn:
            for name in PG_ROLES:
                conn.execute(f'DROP OWNED BY "{name}" CASCADE')
        with pg.connect() as conn:
            for name in PG_ROLES:
                conn.execute(f'DROP ROLE IF EXISTS "{name}"')


def test_a_privilege_name_that_is_not_a_keyword_stops_the_dump():
    conn = server("24.1")
    original = conn.answer
    conn.answer = lambda sql: ([("public", "parent", "app_reader", "SELECT; DROP TABLE x")]
                               if sql == dc.TABLE_GRANTS_SQL else original(sql))
    with pytest.raises(DatabaseError, match="unexpected privilege name"):
        dump(conn)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_every_statement_of_the_dump_passes_the_replay_screen(version):
    # What the restore's screen must let through: our own dump, whole.
    script, _, chunks = dump(server(version))
    statements = [item.statement if isinstance(item, CopyBlock) else item for item in split(chunks)]
    assert len(statements) > 20
    for statement in statements:
        check(statement)
