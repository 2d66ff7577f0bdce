"""The restore swap that carries views across the renames CockroachDB refuses while views exist.

CockroachDB: `ALTER DATABASE ... RENAME` fails while a view depends on one of the
database's tables (pkg/sql/rename_database.go @ 548e61c8d9e38d46531c0d9f0b3e885d8a8245c9,
isAllowedDependentDescInRenameDatabase allows only sequences; logic test rename_database @
0b7d912af71c059a3ed56346f58e87bb18a7704a). Views are listed from
crdb_internal.create_statements ("CREATE and ALTER statements for all tables accessible
by current user in current database", descriptor_type 'view', schema_name;
pkg/sql/crdb_internal.go @ adc84745e4e107a73a1fd4b596c724a08165c34e).

The statement sequence is checked against recorded answers, and the same sequence runs
live on PostgreSQL with a PostgreSQL catalog query standing in for the view listing.
"""

from __future__ import annotations

import psycopg
import pytest

from enclave_backup import swap_views
from enclave_backup.errors import DatabaseError
from enclave_backup.swap import CockroachDB
from enclave_backup.swap_views import View, is_view_statement, swap_keeping_views

# crdb_internal.create_statements rows of the live database (schema_name, descriptor_name,
# create_statement): view queries come back qualified with the database's name, as
# SHOW CREATE prints them (see tests/unit/crdb_recorded/catalog.py for the sources).
LIVE_VIEWS = [
    ("public", "vx", 'CREATE VIEW public.vx ("?column?") AS SELECT 1'),
    ("public", "mv", "CREATE MATERIALIZED VIEW public.mv (x) AS SELECT x FROM malbork.public.parent"),
]
DEFERRED = ['CREATE VIEW public.vx ("?column?") AS SELECT 1',
            "CREATE MATERIALIZED VIEW public.mv (x) AS SELECT x FROM public.parent WHERE x > 0"]


class Conn:
    """A recorded connection: logs (database, statement) into a shared list."""

    def __init__(self, database: str, log: list, answers: dict, fail: dict):
        self.database, self.log, self.answers, self.fail = database, log, answers, fail

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql, params=None):
        self.log.append((self.database, sql))
        if (self.database, sql) in self.fail:
            raise self.fail[(self.database, sql)]
        return _Rows(self.answers.get((self.database, sql), []))


class _Rows:
    def __init__(self, rows):
        self.rows = rows

    def fetchall(self):
        return list(self.rows)


def recorded(fail: dict | None = None, answers: dict | None = None):
    log: list = []
    answers = {("malbork", CockroachDB.VIEWS_SQL): LIVE_VIEWS, **(answers or {})}
    fail = fail or {}
    return Conn("defaultdb", log, answers, fail), (lambda name: Conn(name, log, answers, fail)), log


def test_statement_kinds_held_back_until_the_swap():
    assert is_view_statement("CREATE VIEW public.v AS SELECT 1")
    assert is_view_statement("create or replace view v as select 1")
    assert is_view_statement("CREATE MATERIALIZED VIEW public.mv (x) AS SELECT x FROM public.parent")
    assert is_view_statement("REFRESH MATERIALIZED VIEW public.mv")
    assert is_view_statement("COMMENT ON VIEW public.v IS 'x'")
    assert not is_view_statement("CREATE TABLE public.view (x INT8)")
    assert not is_view_statement('INSERT INTO "public"."views" ("x") VALUES (\'1\'::INT8)')


def test_cockroachdb_views_are_read_unqualified_and_dropped_newest_first():
    main, connect, log = recorded()
    with connect("malbork") as conn:
        views = CockroachDB().views(conn, "malbork")
    assert views == [View("public", "vx", False, 'CREATE VIEW public.vx ("?column?") AS SELECT 1'),
                     View("public", "mv", True, "CREATE MATERIALIZED VIEW public.mv (x) AS SELECT x FROM public.parent")]
    assert CockroachDB().drop_view_sql(views[1]) == 'DROP MATERIALIZED VIEW IF EXISTS "public"."mv"'


def test_cockroachdb_swap_sequence():
    main, connect, log = recorded()
    swap_keeping_views(main, CockroachDB(), "malbork", "malbork_restoring_1", "malbork_pre_restore_1", DEFERRED,
                       connect)
    assert log == [
        ("malbork", CockroachDB.VIEWS_SQL),
        ("malbork", 'DROP MATERIALIZED VIEW IF EXISTS "public"."mv"'),
        ("malbork", 'DROP VIEW IF EXISTS "public"."vx"'),
        ("defaultdb", 'ALTER DATABASE "malbork" RENAME TO "malbork_pre_restore_1"'),
        ("malbork_pre_restore_1", 'CREATE VIEW public.vx ("?column?") AS SELECT 1'),
        ("malbork_pre_restore_1", "CREATE MATERIALIZED VIEW public.mv (x) AS SELECT x FROM public.parent"),
        ("defaultdb", 'ALTER DATABASE "malbork_restoring_1" RENAME TO "malbork"'),
        ("malbork", DEFERRED[0]),
        ("malbork", DEFERRED[1]),
    ]


def test_first_restore_has_no_previous_database_to_keep():
    main, connect, log = recorded()
    swap_keeping_views(main, CockroachDB(), "malbork", "malbork_restoring_1", None, DEFERRED, connect)
    assert log == [("defaultdb", 'ALTER DATABASE "malbork_restoring_1" RENAME TO "malbork"'),
                   ("malbork", DEFERRED[0]), ("malbork", DEFERRED[1])]


def test_a_failing_restored_view_undoes_every_step():
    fail = {("malbork", DEFERRED[1]): psycopg.errors.UndefinedTable('relation "public.parent" does not exist')}
    main, connect, log = recorded(fail)
    with pytest.raises(DatabaseError, match=r"CREATE MATERIALIZED VIEW.*does not exist.*'malbork' is unchanged"):
        swap_keeping_views(main, CockroachDB(), "malbork", "malbork_restoring_1", "malbork_pre_restore_1",
                           DEFERRED, connect)
    undo = log[log.index(("malbork", DEFERRED[1])) + 1:]
    # The recorded server lists the same two views in "malbork" whichever database has the name.
    assert undo == [
        ("malbork", CockroachDB.VIEWS_SQL),  # the restored views made so far, dropped newest first
        ("malbork", 'DROP MATERIALIZED VIEW IF EXISTS "public"."mv"'),
        ("malbork", 'DROP VIEW IF EXISTS "public"."vx"'),
        ("defaultdb", 'ALTER DATABASE "malbork" RENAME TO "malbork_restoring_1"'),
        ("malbork_pre_restore_1", CockroachDB.VIEWS_SQL),  # the rebuilt views of the kept copy (none recorded)
        ("defaultdb", 'ALTER DATABASE "malbork_pre_restore_1" RENAME TO "malbork"'),
        ("malbork", CockroachDB.VIEWS_SQL),  # which of the live views are missing, to create them again
    ]


def test_a_failed_undo_is_reported_not_hidden():
    fail = {("malbork", DEFERRED[1]): psycopg.errors.UndefinedTable("no parent"),
            ("defaultdb", 'ALTER DATABASE "malbork" RENAME TO "malbork_restoring_1"'):
                psycopg.errors.InsufficientPrivilege("denied")}
    main, connect, log = recorded(fail)
    with pytest.raises(DatabaseError, match=r"undoing the swap failed too \(undoing renaming .*denied.*by hand"):
        swap_keeping_views(main, CockroachDB(), "malbork", "malbork_restoring_1", "malbork_pre_restore_1",
                           DEFERRED, connect)


# --- the same sequence, live on PostgreSQL ----------------------------------------------------

class PgViews(CockroachDB):
    """CockroachDB's swap SQL, with PostgreSQL's catalog answering the view listing."""

    def views(self, conn, database):
        rows = conn.execute(
            "SELECT n.nspname, c.relname, c.relkind = 'm', pg_get_viewdef(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm') "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY c.oid").fetchall()
        return [View(s, n, m, f"CREATE {'MATERIALIZED VIEW' if m else 'VIEW'} {s}.{n} AS {d}")
                for s, n, m, d in rows]


LIVE_SQL = ["CREATE TABLE parent (x int8)", "INSERT INTO parent VALUES (1), (2)",
            "CREATE VIEW vx AS SELECT x FROM parent", "CREATE VIEW vy AS SELECT x * 10 AS y FROM vx",
            "CREATE MATERIALIZED VIEW mv AS SELECT sum(x) AS s FROM parent"]
RESTORED_DEFERRED = ["CREATE VIEW public.vx AS SELECT x FROM public.parent",
                     "CREATE VIEW public.vy AS SELECT x * 10 AS y FROM public.vx",
                     "CREATE MATERIALIZED VIEW public.mv AS SELECT sum(x) AS s FROM public.parent"]


@pytest.fixture
def databases(pg, dbname):
    live, scratch, previous = dbname, f"{dbname}_restoring_1", f"{dbname}_pre_restore_1"
    with pg.connect(live) as conn:
        for statement in LIVE_SQL:
            conn.execute(statement)
    pg.create_database(scratch)
    with pg.connect(scratch) as conn:
        conn.execute("CREATE TABLE parent (x int8)")
        conn.execute("INSERT INTO parent VALUES (40), (50), (60)")
    return live, scratch, previous


def state(pg, database: str) -> tuple:
    with pg.connect(database) as conn:
        views = [r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relkind IN ('v', 'm') "
                                            "AND relnamespace = 'public'::regnamespace ORDER BY relname").fetchall()]
        if not views:
            return (views, None, None)
        return (views, conn.execute("SELECT sum(y) FROM vy").fetchone()[0], conn.execute("SELECT s FROM mv").fetchone()[0])


def test_live_swap_carries_the_views_of_both_databases(pg, databases):
    live, scratch, previous = databases
    with pg.connect() as main:
        swap_keeping_views(main, PgViews(), live, scratch, previous, RESTORED_DEFERRED, pg.connect)
    assert state(pg, live) == (["mv", "vx", "vy"], 1500, 150)  # the restored data, through its views
    assert state(pg, previous) == (["mv", "vx", "vy"], 30, 3)  # the kept copy, views rebuilt on its tables
    assert scratch not in pg.databases()


def test_live_swap_failure_leaves_the_live_database_as_it_was(pg, databases):
    live, scratch, previous = databases
    bad = RESTORED_DEFERRED[:2] + ["CREATE MATERIALIZED VIEW public.mv AS SELECT sum(x) AS s FROM public.nope"]
    with pg.connect() as main, pytest.raises(DatabaseError, match=r"(?s)nope.*is unchanged"):
        swap_keeping_views(main, PgViews(), live, scratch, previous, bad, pg.connect)
    assert state(pg, live) == (["mv", "vx", "vy"], 30, 3)
    assert state(pg, scratch) == ([], None, None)  # back under its name, for the restore to drop
    assert previous not in pg.databases()


def test_rename_waits_out_a_session_that_is_still_closing(pg, databases, monkeypatch):
    live, scratch, _ = databases
    monkeypatch.setattr(swap_views, "RENAME_RETRY_SECONDS", 0.5)
    holder = pg.connect(scratch)
    try:
        with pg.connect() as main, pytest.raises(psycopg.errors.ObjectInUse):
            swap_views.rename(main, PgViews(), scratch, f"{scratch}_x")
    finally:
        holder.close()


def held_back(script: str) -> tuple[list[str], list[str]]:
    """(statements loaded into the scratch database, statements held back), as restore.load splits them."""
    from enclave_backup.sqlscript import split
    hold = swap_views.HoldBack()
    loaded, held = [], []
    for statement in split([script.encode()]):
        (held if hold(statement.sql) else loaded).append(statement.sql)
    return loaded, held


def test_the_tail_of_a_dump_is_held_back_from_its_first_statement_on():
    # From 22.2 a function that reads a table blocks the rename too: cockroachdb/cockroach
    # PR #87203 (merged 2022-08-31 for 22.2, "check udf dependencies before renaming a db"),
    # and newer pkg/sql/rename_database.go names the dependent function in its error
    # (getQualifiedDependentObjectName takes table and function descriptors). So routines,
    # triggers (on tables, running routines), views, and the grants and owners of objects
    # not created yet all wait; a routine a table DEFAULT calls reads no table and stays.
    from tests.unit.test_dump_cockroach import dump, server, with_table_calling_f1
    script, _, _ = dump(with_table_calling_f1(server("25.3")))
    loaded, held = held_back(script)
    assert loaded[0].startswith("CREATE SCHEMA IF NOT EXISTS public")
    assert any(s.startswith("CREATE FUNCTION public.f1()") for s in loaded)
    assert any(s.startswith("CREATE TABLE public.t1 (") for s in loaded)
    assert loaded[-1] == "ALTER TABLE public.full_test VALIDATE CONSTRAINT test_fk"
    assert [s.split("(")[0].split(" ON ")[0] for s in held[:6]] == [
        "CREATE FUNCTION public.f", "CREATE PROCEDURE public.double_triple", "CREATE FUNCTION public.trigger_func",
        "CREATE TRIGGER t1_trigger AFTER INSERT", "CREATE VIEW public.vx ", "CREATE MATERIALIZED VIEW public.mv "]
    assert held[-1] == 'ALTER FUNCTION public.trigger_func OWNER TO "root"'
    assert not any(s.startswith(("INSERT", "CREATE TABLE", "SELECT setval")) for s in held)
    assert all(s.startswith(("GRANT", "ALTER")) for s in held[6:])


@pytest.mark.parametrize(("version", "first"), [("21.2", "CREATE VIEW public.vx"), ("24.1", "CREATE FUNCTION public.f1()")])
def test_the_first_tail_statement_starts_the_hold_views_when_the_server_has_no_routines(version, first):
    from tests.unit.test_dump_cockroach import dump, server
    script, _, _ = dump(server(version))
    _, held = held_back(script)
    assert held[0].startswith(first)
    assert all(not s.startswith(("INSERT", "CREATE TABLE")) for s in held)


def test_statements_that_only_look_like_the_tail_hold_nothing_back():
    loaded, held = held_back("CREATE TABLE public.grants (x INT8);\n"
                             "INSERT INTO \"public\".\"grants\" (\"x\") VALUES ('1'::INT8);\n"
                             "ALTER TABLE public.grants ADD CONSTRAINT \"owner to\" CHECK (x > 0);\n")
    assert held == [] and len(loaded) == 3
    # Routines before any table (those the tables call) stay in the scratch database.
    loaded, held = held_back("CREATE FUNCTION public.f1() RETURNS INT8 LANGUAGE SQL AS $$ SELECT 1; $$;\n"
                             "CREATE TABLE public.t1 (a INT8 DEFAULT public.f1());\n"
                             "GRANT SELECT ON TABLE public.t1 TO PUBLIC;\nINSERT INTO t1 VALUES (1);\n")
    assert [s.split()[0] for s in loaded] == ["CREATE", "CREATE"] and held[0].startswith("GRANT")
    assert held[-1].startswith("INSERT")  # everything after the tail starts is held, in order
