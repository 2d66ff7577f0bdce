"""CockroachDB dump against recorded server answers (no CockroachDB can run here).

The fake connection answers only the exact statements dump_cockroach issues, with rows in
the shapes CockroachDB documents (see tests/unit/crdb_recorded/*.py for the sources), and
logs every statement with the transaction and AS OF SYSTEM TIME it ran under.
"""

from __future__ import annotations

import re
import runpy
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from enclave_backup import dump_cockroach as dc
from enclave_backup.errors import DatabaseError
from enclave_backup.stats import DumpStats
from tests.support.pgserver import pg_bin

RECORDED = Path(__file__).parent / "crdb_recorded"


def recorded(name: str) -> dict:
    return runpy.run_path(str(RECORDED / f"{name}.py"))


CATALOG = recorded("catalog")
V23 = recorded("data_v23_1")
V22 = recorded("data_v22_2")
V21 = recorded("legacy_v21_2")


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

    @contextmanager
    def copy(self, sql):
        self.conn.run(sql)
        yield iter(self.conn.copy_out[sql])

    def stream(self, sql):
        self.conn.run(sql)
        self.conn.streamed.append(sql)
        yield from self.conn.select_rows[sql]


class FakeCockroach:
    """A psycopg-like connection (autocommit off) answering from recorded output."""

    def __init__(self, version: str, timestamp: str, *, copy_out=None, select_rows=None, legacy=None):
        self.version, self.timestamp = version, timestamp
        self.copy_out = copy_out or {}
        self.select_rows = select_rows or {}
        self.legacy = legacy or {}
        self.log: list[tuple[int, str | None, str]] = []  # (transaction, AOST, statement)
        self.streamed: list[str] = []
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
            **self.legacy,
        }
        if sql in answers:
            return answers[sql]
        if sql.startswith("SET "):
            return []
        seq = re.fullmatch(r"SELECT last_value, is_called FROM (.+)", sql)
        if seq:
            return [CATALOG["SEQUENCE_VALUES"][seq.group(1)]]
        if sql in self.copy_out or sql in self.select_rows:
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


def v23_server() -> FakeCockroach:
    return FakeCockroach(V23["VERSION"], V23["TIMESTAMP"], copy_out=V23["COPY_OUT"])


def v22_server() -> FakeCockroach:
    return FakeCockroach(V22["VERSION"], V22["TIMESTAMP"], select_rows=V22["SELECT_ROWS"])


def v21_server() -> FakeCockroach:
    legacy = {dc.LEGACY_SCHEMAS_SQL: V21["SCHEMATA"], dc.LEGACY_TYPES_SQL: V21["TYPE_STATEMENTS"]}
    return FakeCockroach(V21["VERSION"], V21["TIMESTAMP"], select_rows=V22["SELECT_ROWS"], legacy=legacy)


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


# --- order and schema -------------------------------------------------------------------

def test_script_order_schemas_types_creates_data_sequences_then_foreign_keys():
    script, _, _ = dump(v23_server())
    order = [
        "CREATE SCHEMA IF NOT EXISTS sc1;",
        "CREATE TYPE sc1.status AS ENUM",
        "CREATE TABLE public.parent (",
        "CREATE VIEW public.vx (",
        "CREATE MATERIALIZED VIEW public.mv",
        'COPY "public"."parent" ("x", "y", "z") FROM STDIN;',
        f"COPY {ODD} {ODD_COLUMNS} FROM STDIN;",
        'REFRESH MATERIALIZED VIEW "public"."mv";',
        "SELECT setval('\"public\".\"s\"', 42, true);",
        "ALTER TABLE public.full_test ADD CONSTRAINT full_test_x_y_z_fkey FOREIGN KEY",
        "-- Validate foreign key constraints.",
        "ALTER TABLE public.full_test VALIDATE CONSTRAINT test_fk;",
    ]
    positions = [position(script, needle) for needle in order]
    assert positions == sorted(positions)


def test_every_foreign_key_statement_follows_all_data():
    script, _, _ = dump(v23_server())
    last_data = script.rindex("\\.\n")
    for line in script.splitlines():
        if line.startswith("ALTER TABLE"):
            assert script.index(line) > last_data


def test_header_names_tool_engine_database_server_and_snapshot():
    script, _, _ = dump(v23_server())
    head = script.split("\n\n", 1)[0]
    assert head.startswith("-- enclave-backup dump\n-- engine: cockroachdb\n-- database: malbork\n")
    assert f"-- server: {V23['VERSION']}" in head
    assert f"-- as of system time: {V23['TIMESTAMP']}" in head
    assert all(line.startswith("--") for line in head.splitlines())


def test_public_schema_is_not_recreated_in_an_empty_database():
    script, _, _ = dump(v23_server())
    assert "CREATE SCHEMA IF NOT EXISTS public;" in script
    assert not re.search(r"^CREATE SCHEMA (?!IF NOT EXISTS)", script, re.M)


def test_create_rows_are_emitted_verbatim_but_for_the_database_name():
    script, _, _ = dump(v23_server())
    assert CATALOG["ODD_TABLE_CREATE"].replace("malbork.", "") + "\n" in script
    for statement in CATALOG["SHOW_CREATE_ALL_TABLES"]:
        assert statement.replace("malbork.public.", "public.").replace("malbork.sc1.", "sc1.") in script
    # Unqualified, the script replays into any database (the scratch database of a restore).
    assert "malbork." not in script.split("-- schemas", 1)[1].split("COPY", 1)[0]


def test_schemas_come_before_the_types_that_live_in_them():
    script, _, _ = dump(v23_server())
    assert position(script, "CREATE SCHEMA IF NOT EXISTS sc1;") < position(script, "CREATE TYPE sc1.status")


# --- data, v23.1+: COPY ---------------------------------------------------------------

def test_copy_blocks_quote_odd_identifiers_and_keep_rows_verbatim():
    script, _, _ = dump(v23_server())
    block = (f"COPY {ODD} {ODD_COLUMNS} FROM STDIN;\n"
             "1\tTab\\there\tline\\nbreak\ts3cr3t\topen\t\\\\x00ff\tNaN\n"
             "2\t\\\\.\t\t\\N\tclosed\t\\\\x\t-0\n"
             "3\tZażółć 🐘\tit's\t\\N\t\\N\t\\N\t1.5e-323\n"
             "\\.\n")
    assert block in script


def test_computed_and_rowid_columns_are_not_copied_but_hidden_user_columns_are():
    conn = v23_server()
    script, _, _ = dump(conn)
    assert 'COPY "public"."t" ("a") FROM STDIN;\n7\n\\.\n' in script
    assert 'COPY "public"."parent" ("x", "y", "z") FROM STDIN;\n1\t2\t3\n4\t\\N\t6\n\\.\n' in script
    copies = [sql for _, _, sql in conn.log if sql.startswith("COPY")]
    assert not any('"rowid"' in sql or '"b"' in sql or '"c"' in sql for sql in copies)
    assert any('"secret"' in sql for sql in copies)  # NOT VISIBLE, but user data


def test_only_base_tables_are_copied_never_views_sequences_or_materialized_views():
    conn = v23_server()
    _, stats, _ = dump(conn)
    copied = sorted(re.search(r' FROM (.+)\) TO STDOUT$', sql).group(1)
                    for _, _, sql in conn.log if sql.startswith("COPY"))
    assert copied == ['"public"."full_test"', '"public"."parent"', '"public"."s_tbl"', '"public"."t"', ODD]
    assert set(stats.tables) == {"public.full_test", "public.parent", "public.s_tbl", "public.t",
                                 'sc1.Odd "Name" x'}


def test_row_counts_and_snapshot_land_in_stats():
    _, stats, _ = dump(v23_server())
    assert stats.tables == {"public.full_test": 1, "public.parent": 2, "public.s_tbl": 2, "public.t": 1,
                            'sc1.Odd "Name" x': 3}
    assert stats.snapshot == V23["TIMESTAMP"]
    assert stats.current_table == "" and stats.rows == 9


def test_v23_never_falls_back_to_inserts():
    conn = v23_server()
    script, _, _ = dump(conn)
    assert conn.streamed == []
    assert "INSERT INTO" not in script


# --- one snapshot -----------------------------------------------------------------------

def test_every_read_runs_in_one_transaction_at_the_one_recorded_timestamp():
    conn = v23_server()
    dump(conn)
    first_txn = [sql for txn, _, sql in conn.log if txn == 1]
    assert first_txn == [dc.SERIALIZABLE_SQL, dc.VERSION_SQL, dc.FLOAT_DIGITS_SQL, dc.TIMESTAMP_SQL]
    reads = [(txn, aost, sql) for txn, aost, sql in conn.log if txn != 1]
    assert {txn for txn, _, _ in reads} == {2}
    assert reads[0][2] == f"SET TRANSACTION AS OF SYSTEM TIME {V23['TIMESTAMP']}"
    assert {aost for _, aost, _ in reads} == {V23["TIMESTAMP"]}
    assert any(sql == dc.SHOW_TABLES_SQL for _, _, sql in reads)
    assert sum(sql.startswith("COPY") for _, _, sql in reads) == 5
    assert conn.commits == 1 and conn.rollbacks == 2 and not conn.open


def test_a_passed_version_is_not_queried_again():
    conn = v23_server()
    dump(conn, now_version=V23["VERSION"])
    assert dc.VERSION_SQL not in [sql for _, _, sql in conn.log]


def test_a_malformed_timestamp_is_refused_before_it_reaches_sql():
    conn = FakeCockroach(V23["VERSION"], "1'; DROP TABLE x; --", copy_out=V23["COPY_OUT"])
    with pytest.raises(DatabaseError, match="cluster_logical_timestamp"):
        dump(conn)
    assert not any("AS OF SYSTEM TIME" in sql for _, _, sql in conn.log)


# --- sequences --------------------------------------------------------------------------

def test_used_sequences_get_setval_and_untouched_ones_are_left_to_their_create():
    script, _, _ = dump(v23_server())
    assert "SELECT setval('\"public\".\"s\"', 42, true);" in script
    assert "unused\"'" not in script  # last_value 0 is below MINVALUE 1: setval would fail


# --- data, 21.1 to 22.2: batched INSERTs ------------------------------------------------

def test_v22_streams_rows_as_server_text_and_writes_exact_literals():
    conn = v22_server()
    script, stats, _ = dump(conn)
    assert f'INSERT INTO {ODD} {ODD_COLUMNS} VALUES\n' in script
    assert ("('1', e'Tab\\there', e'line\\nbreak', 's3cr3t', 'open', decode('00ff', 'hex'), 'NaN'),\n"
            "('2', e'\\\\.', '', NULL, 'closed', decode('', 'hex'), '-0'),\n"
            "('3', 'Zażółć 🐘', 'it''s', NULL, NULL, NULL, '1.5e-323');\n") in script
    assert ('INSERT INTO "public"."parent" ("x", "y", "z") VALUES\n'
            "('1', '2', '3'),\n('4', NULL, '6');\n") in script
    assert "COPY " not in script
    assert sorted(conn.streamed) == sorted(V22["SELECT_ROWS"])
    assert stats.tables['sc1.Odd "Name" x'] == 3


def test_v22_inserts_come_after_creates_and_before_foreign_keys():
    script, _, _ = dump(v22_server())
    assert (position(script, "CREATE TABLE public.parent (")
            < position(script, 'INSERT INTO "public"."parent"')
            < position(script, "SELECT setval(")
            < position(script, "ALTER TABLE public.full_test ADD CONSTRAINT"))


def test_v22_select_excludes_computed_and_rowid_and_reads_bytes_as_hex():
    conn = v22_server()
    dump(conn)
    assert 'SELECT "a"::STRING FROM "public"."t"' in conn.streamed
    odd = next(sql for sql in conn.streamed if "Odd" in sql)
    assert "encode(\"payload\", 'hex')" in odd and '"rowid"' not in odd


def test_insert_batches_split_by_row_count(monkeypatch):
    monkeypatch.setattr(dc, "INSERT_BATCH_ROWS", 2)
    script, stats, _ = dump(v22_server())
    assert script.count(f"INSERT INTO {ODD} ") == 2
    assert stats.tables['sc1.Odd "Name" x'] == 3


def test_insert_batches_split_by_size(monkeypatch):
    monkeypatch.setattr(dc, "INSERT_BATCH_BYTES", 1)
    script, _, _ = dump(v22_server())
    assert script.count('INSERT INTO "public"."parent" ') == 2


@pytest.mark.parametrize(("text", "literal"), [
    ("plain", "'plain'"),
    ("", "''"),
    ("it's", "'it''s'"),
    ("\\N", "e'\\\\N'"),
    ("a\tb\nc\rd", "e'a\\tb\\nc\\rd'"),
    ("quote ' and \\", "e'quote \\' and \\\\'"),
    ("bell\x07del\x7f", "e'bell\\x07del\\x7f'"),
    ("ünï 🐘", "'ünï 🐘'"),
])
def test_string_literals(text, literal):
    assert dc.string_literal(text) == literal


# --- older servers ----------------------------------------------------------------------

def test_v21_uses_catalog_queries_for_schemas_and_types_and_inserts_for_data():
    conn = v21_server()
    script, _, _ = dump(conn)
    statements = [sql for _, _, sql in conn.log]
    assert dc.SHOW_SCHEMAS_SQL not in statements and dc.SHOW_TYPES_SQL not in statements
    assert dc.LEGACY_SCHEMAS_SQL in statements and dc.LEGACY_TYPES_SQL in statements
    assert (position(script, 'CREATE SCHEMA IF NOT EXISTS "sc1";')
            < position(script, "CREATE TYPE sc1.status AS ENUM ('open', 'closed', 'inactive');")
            < position(script, "CREATE TABLE public.parent ("))
    assert 'INSERT INTO "public"."t" ("a") VALUES\n(\'7\');' in script


def test_servers_before_21_1_are_refused_with_the_minimum_version():
    conn = FakeCockroach(V21["OLD_VERSION"], V21["TIMESTAMP"])
    with pytest.raises(DatabaseError, match=r"v21\.1 or newer.*v20\.2\.19.*upgrade"):
        dump(conn)
    assert not any("AS OF SYSTEM TIME" in sql for _, _, sql in conn.log)


def test_a_non_cockroach_version_string_is_refused():
    conn = FakeCockroach("PostgreSQL 15.4 on x86_64-pc-linux-gnu", V23["TIMESTAMP"])
    with pytest.raises(DatabaseError, match="ENCLAVE_BACKUP_ENGINE=postgresql"):
        dump(conn)


@pytest.mark.parametrize(("text", "version"), [
    (V23["VERSION"], (23, 1)),
    (V22["VERSION"], (22, 2)),
    ("CockroachDB OSS v21.1.0 (x86_64-unknown-linux-gnu, built 2021/05/17 13:49:40, go1.15.11)", (21, 1)),
    ("CockroachDB CCL v23.2.0-alpha.1 (x86_64-pc-linux-gnu, built 2023/09/27)", (23, 2)),
])
def test_version_parsing(text, version):
    assert dc.parse_version(text) == version


# --- small pieces -----------------------------------------------------------------------

def test_split_keeps_creates_before_and_everything_else_after():
    creates, after = dc.split_table_statements(CATALOG["SHOW_CREATE_ALL_TABLES"])
    assert all(s.startswith("CREATE ") for s in creates) and len(creates) == 9
    assert after[0].startswith("ALTER TABLE public.full_test ADD CONSTRAINT")
    assert after[2].startswith("-- Validate")
    assert after[-1] == "ALTER TABLE public.full_test VALIDATE CONSTRAINT test_fk;"


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
    conn = FakeCockroach(V23["VERSION"], V23["TIMESTAMP"])
    conn.answer = lambda sql: [(2,)] if sql == 'SELECT count(*) FROM "public"."only_rowid"' else []
    out: list[bytes] = []
    stats = DumpStats()
    dc.dump_table(conn, table, (23, 1), out.append, stats)
    assert b"".join(out) == b'INSERT INTO "public"."only_rowid" DEFAULT VALUES;\n' * 2
    assert stats.tables == {"public.only_rowid": 2}


# --- the emitted data parses in a real PostgreSQL (same COPY text format and e'' escapes) ---

# PostgreSQL types standing in for the CockroachDB ones (enum as text, STRING as text).
PG_ODD_TABLE = ('CREATE SCHEMA sc1; CREATE TABLE sc1."Odd ""Name"" x" (id INT8 PRIMARY KEY, '
                '"Mixed Case" TEXT, "it\'s" TEXT, secret TEXT, state TEXT, payload BYTEA, ratio FLOAT8);')
EXPECTED_ODD_ROWS = [
    (1, "Tab\there", "line\nbreak", "s3cr3t", "open", b"\x00\xff", "nan"),
    (2, "\\.", "", None, "closed", b"", "-0.0"),
    (3, "Zażółć 🐘", "it's", None, None, None, "1.5e-323"),
]


def odd_table_data(script: str) -> str:
    """The COPY block or INSERT statements of the odd table, as the script has them."""
    if f"COPY {ODD}" in script:
        start = script.index(f"COPY {ODD}")
        return script[start:script.index("\\.\n", start) + 3]
    start = script.index(f"INSERT INTO {ODD}")
    return script[start:script.index(";\n", start) + 2]


def replay_in_postgres(pg, dbname: str, sql: str) -> list[tuple]:
    env = {**pg.env(dbname), "PATH": "/usr/bin:/bin"}
    subprocess.run([pg_bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"], input=sql.encode(), env=env,
                   check=True, capture_output=True)
    with pg.connect(dbname) as conn:
        rows = conn.execute('SELECT * FROM sc1."Odd ""Name"" x" ORDER BY id').fetchall()
    return [(*row[:5], None if row[5] is None else bytes(row[5]), repr(row[6])) for row in rows]


@pytest.mark.parametrize("server", [v23_server, v22_server], ids=["copy", "insert"])
def test_odd_table_data_round_trips_through_postgresql(pg, dbname, server):
    script, _, _ = dump(server())
    assert replay_in_postgres(pg, dbname, PG_ODD_TABLE + "\n" + odd_table_data(script)) == EXPECTED_ODD_ROWS
