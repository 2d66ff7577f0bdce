"""The restore swap that carries views, routines and triggers across the renames CockroachDB refuses while they exist.

CockroachDB: `ALTER DATABASE ... RENAME` fails while a view depends on one of the
database's tables (pkg/sql/rename_database.go @ 548e61c8d9e38d46531c0d9f0b3e885d8a8245c9,
isAllowedDependentDescInRenameDatabase allows only sequences; logic test rename_database @
0b7d912af71c059a3ed56346f58e87bb18a7704a). Views are listed from
crdb_internal.create_statements ("CREATE and ALTER statements for all tables accessible
by current user in current database", descriptor_type 'view', schema_name;
pkg/sql/crdb_internal.go @ adc84745e4e107a73a1fd4b596c724a08165c34e).

From 22.2 a routine that reads a table blocks the rename too (cockroachdb/cockroach PR
#87203, "check udf dependencies before renaming a db"), so the swap also carries the live
database's routines and triggers, read with the dump's own queries (sources in
tests/unit/crdb_recorded/routines_grants.py), and drops them by name: `DROP TRIGGER name ON
table` (cockroachdb/docs src/current/v25.3/drop-trigger.md @
b3169d39d1b5839fcb0825f9a73b18a8d67bcbf8), `DROP PROCEDURE name` (src/current/v23.2/drop-procedure.md
@ 1fa07eb8d4247879aabc7706472af8081847c4ed, an optional parameter list), `DROP FUNCTION f`
(logic test triggers @ 54924c4f8f906a17d64d2c1325806f83cd1c807d).

The statement sequence is checked against recorded answers, and the same sequence runs
live on PostgreSQL with PostgreSQL catalog queries standing in for the listings.
"""

from __future__ import annotations

import re

import psycopg
import pytest

from enclave_backup.engines.cockroachdb import dump as dc
from enclave_backup.engines.cockroachdb import swap as swap_views
from enclave_backup.errors import DatabaseError
from enclave_backup.engines.cockroachdb.engine import CockroachDB
from enclave_backup.engines.cockroachdb.swap import View, is_view_statement, swap_keeping_views
from tests.unit.test_dump_cockroach import CATALOG, DATA, ROUTINES

# crdb_internal.create_statements rows of the live database (schema_name, descriptor_name,
# create_statement): view queries come back qualified with the database's name, as
# SHOW CREATE prints them (see tests/unit/crdb_recorded/catalog.py for the sources).
LIVE_VIEWS = [
    ("public", "vx", 'CREATE VIEW public.vx ("?column?") AS SELECT 1'),
    ("public", "mv", "CREATE MATERIALIZED VIEW public.mv (x) AS SELECT x FROM malbork.public.parent"),
]
DEFERRED = ['CREATE VIEW public.vx ("?column?") AS SELECT 1',
            "CREATE MATERIALIZED VIEW public.mv (x) AS SELECT x FROM public.parent WHERE x > 0",
            'GRANT SELECT ON TABLE "public"."vx" TO "app_reader";']


class Conn:
    """A recorded connection: logs (database, statement) into a shared list.

    Answers keyed (database, statement) are that database's; answers keyed by the statement
    alone are every database's (the recorded server lists the same objects whichever
    database has the name, qualified with that name)."""

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
        rows = self.answers.get((self.database, sql), self.answers.get(sql, []))
        # SHOW CREATE qualifies names with the database it runs in.
        return _Rows([tuple(v.replace("malbork.", f"{self.database}.") if isinstance(v, str) else v for v in row)
                      for row in rows])


class _Rows:
    def __init__(self, rows):
        self.rows = rows

    def fetchall(self):
        return list(self.rows)

    def fetchone(self):
        return self.rows[0] if self.rows else None


def server_answers(version: str) -> dict:
    """A live `malbork` on a server of `version`, answering the dump's catalog queries from the
    recorded routines, triggers, grants and owners (tests/unit/crdb_recorded/routines_grants.py)
    and SHOW CREATE ALL TABLES with a table whose DEFAULT calls f1."""
    return {
        dc.VERSION_SQL: [(DATA["VERSIONS"][version],)],
        CockroachDB.VIEWS_SQL: LIVE_VIEWS,
        dc.SHOW_TABLES_SQL: [(ROUTINES["TABLE_CALLING_F1"],)] + [(s,) for s in CATALOG["SHOW_CREATE_ALL_TABLES"]],
        dc.RELATIONS_SQL: CATALOG["RELATIONS"],
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
        CockroachDB.ROLES_SQL: ROLES,
    }


def recorded(fail: dict | None = None, answers: dict | None = None, version: str = "24.1"):
    log: list = []
    answers = {**server_answers(version), **(answers or {})}
    fail = fail or {}
    return Conn("defaultdb", log, answers, fail), (lambda name: Conn(name, log, answers, fail)), log


def changes(log: list) -> list:
    """The statements that change something (the catalog reads left out)."""
    return [(database, sql) for database, sql in log if not sql.startswith(("SELECT ", "SHOW "))]


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


F = ROUTINES["F_READS_TABLE"].replace("malbork.public.", "public.")
PROCEDURE, TRIGGER_FUNC = ROUTINES["PROCEDURE"], ROUTINES["TRIGGER_FUNC"]
TRIGGER = ROUTINES["TRIGGER_STATEMENTS"][0][0].replace("malbork.public.", "public.")
VIEW_CREATES = [LIVE_VIEWS[0][2], LIVE_VIEWS[1][2].replace("malbork.public.", "public.")]
# The grants and owners of the carried views and routines, as the dump writes them.
CARRIED_PRIVILEGES = [
    'GRANT SELECT ON TABLE "public"."vx" TO "app_reader";',
    'GRANT EXECUTE ON PROCEDURE public.double_triple TO "app_writer";',
    'GRANT EXECUTE ON FUNCTION public.f TO "app_reader";',
    "GRANT EXECUTE ON FUNCTION public.f TO PUBLIC;",
    'ALTER MATERIALIZED VIEW "public"."mv" OWNER TO "root";',
    'ALTER VIEW "public"."vx" OWNER TO "root";',
    'ALTER FUNCTION public.f OWNER TO "app_owner";',
    'ALTER PROCEDURE public.double_triple OWNER TO "root";',
    'ALTER FUNCTION public.trigger_func OWNER TO "root";',
]
DROPS_25_3 = [
    "DROP TRIGGER t1_trigger ON public.parent",
    'DROP MATERIALIZED VIEW IF EXISTS "public"."mv"',
    'DROP VIEW IF EXISTS "public"."vx"',
    "DROP FUNCTION public.trigger_func",
    "DROP PROCEDURE public.double_triple",
    "DROP FUNCTION public.f",
]
CREATES_25_3 = [F, PROCEDURE, TRIGGER_FUNC, TRIGGER, *VIEW_CREATES, *CARRIED_PRIVILEGES]


@pytest.mark.parametrize(("version", "reads"), [
    ("21.2", []), ("22.2", [dc.FUNCTIONS_SQL]), ("24.1", [dc.FUNCTIONS_SQL, dc.PROCEDURES_SQL]),
    ("25.3", [dc.FUNCTIONS_SQL, dc.PROCEDURES_SQL, dc.TRIGGERS_SQL]),
])
def test_cockroachdb_dependents_are_read_with_the_dumps_queries_and_version_gates(version, reads):
    # Functions 22.2+, procedures 23.2+, triggers 25.3+ (see test_dump_cockroach); f1, which
    # the table t1's DEFAULT calls, stays: the table needs it and it reads no table.
    main, connect, log = recorded(version=version)
    with connect("malbork") as conn:
        found = CockroachDB().dependents(conn, "malbork")
    sent = [sql for _, sql in log]
    assert [sql for sql in (dc.FUNCTIONS_SQL, dc.PROCEDURES_SQL, dc.TRIGGERS_SQL) if sql in sent] == reads
    assert (dc.SHOW_TABLES_SQL in sent) == bool(reads)  # which routines the tables call
    routines = {"21.2": [], "22.2": [F, TRIGGER_FUNC], "24.1": [F, PROCEDURE, TRIGGER_FUNC],
                "25.3": [F, PROCEDURE, TRIGGER_FUNC]}[version]
    assert [d.create for d in found.routines] == routines
    assert [d.create for d in found.triggers] == ([TRIGGER] if version == "25.3" else [])
    assert [d.create for d in found.views] == VIEW_CREATES
    assert all(p in CARRIED_PRIVILEGES for p in found.privileges)
    assert 'GRANT SELECT ON TABLE "public"."vx" TO "app_reader";' in found.privileges
    if version == "25.3":
        assert found.drops() == DROPS_25_3 and found.creates() == CREATES_25_3
    # Grants and owners of what is not dropped (tables, schemas, types, f1) stay where they are.
    assert not any('"parent"' in p or "SCHEMA" in p or "TYPE" in p or "f1" in p for p in found.privileges)


def test_cockroachdb_swap_sequence():
    main, connect, log = recorded(version="25.3")
    swap_keeping_views(main, CockroachDB(), "malbork", "malbork_restoring_1", "malbork_pre_restore_1", DEFERRED,
                       connect)
    assert log[0] == ("defaultdb", CockroachDB.ROLES_SQL)  # the tail names roles: checked before anything
    assert changes(log) == [
        *[("malbork", sql) for sql in DROPS_25_3],
        ("defaultdb", 'ALTER DATABASE "malbork" RENAME TO "malbork_pre_restore_1"'),
        *[("malbork_pre_restore_1", sql) for sql in CREATES_25_3],
        ("defaultdb", 'ALTER DATABASE "malbork_restoring_1" RENAME TO "malbork"'),
        *[("malbork", sql) for sql in DEFERRED],
    ]


def test_a_live_database_with_views_only_swaps_as_before():
    main, connect, log = recorded(version="21.2")
    swap_keeping_views(main, CockroachDB(), "malbork", "malbork_restoring_1", "malbork_pre_restore_1",
                       DEFERRED[:2], connect)
    assert changes(log) == [
        ("malbork", 'DROP MATERIALIZED VIEW IF EXISTS "public"."mv"'),
        ("malbork", 'DROP VIEW IF EXISTS "public"."vx"'),
        ("defaultdb", 'ALTER DATABASE "malbork" RENAME TO "malbork_pre_restore_1"'),
        *[("malbork_pre_restore_1", sql) for sql in VIEW_CREATES],
        ('malbork_pre_restore_1', 'GRANT SELECT ON TABLE "public"."vx" TO "app_reader";'),
        ('malbork_pre_restore_1', 'ALTER MATERIALIZED VIEW "public"."mv" OWNER TO "root";'),
        ('malbork_pre_restore_1', 'ALTER VIEW "public"."vx" OWNER TO "root";'),
        ("defaultdb", 'ALTER DATABASE "malbork_restoring_1" RENAME TO "malbork"'),
        ("malbork", DEFERRED[0]), ("malbork", DEFERRED[1]),
    ]


def test_first_restore_has_no_previous_database_to_keep():
    main, connect, log = recorded()
    swap_keeping_views(main, CockroachDB(), "malbork", "malbork_restoring_1", None, DEFERRED[:2], connect)
    assert log == [("defaultdb", 'ALTER DATABASE "malbork_restoring_1" RENAME TO "malbork"'),
                   ("malbork", DEFERRED[0]), ("malbork", DEFERRED[1])]


def test_a_failing_tail_statement_undoes_every_step_routines_included():
    failing = DEFERRED[1]
    fail = {("malbork", failing): psycopg.errors.UndefinedTable('relation "public.parent" does not exist')}
    main, connect, log = recorded(fail, version="25.3")
    with pytest.raises(DatabaseError, match=r"CREATE MATERIALIZED VIEW.*does not exist.*'malbork' is unchanged"):
        swap_keeping_views(main, CockroachDB(), "malbork", "malbork_restoring_1", "malbork_pre_restore_1",
                           DEFERRED, connect)
    undo = changes(log[log.index(("malbork", failing)) + 1:])
    assert undo == [
        # What the tail made so far in the restored database (read again, here the recorded
        # set), triggers, views and routines, so nothing blocks renaming it back.
        *[("malbork", sql) for sql in DROPS_25_3],
        ("defaultdb", 'ALTER DATABASE "malbork" RENAME TO "malbork_restoring_1"'),
        *[("malbork_pre_restore_1", sql) for sql in DROPS_25_3],  # the kept copy's, as re-created
        ("defaultdb", 'ALTER DATABASE "malbork_pre_restore_1" RENAME TO "malbork"'),
        # The recorded server still lists every object in "malbork", so none is missing: the
        # grants and owners run again (they are idempotent).
        *[("malbork", sql) for sql in CARRIED_PRIVILEGES],
    ]


def test_dependents_a_drop_left_behind_are_created_again():
    kept = swap_views.Dependents([swap_views.Dependent("CREATE FUNCTION f", "DROP FUNCTION f")],
                                 [swap_views.Dependent("CREATE TRIGGER t", "DROP TRIGGER t ON x")],
                                 [swap_views.Dependent("CREATE VIEW v", "DROP VIEW v")], ["GRANT g"])
    present = swap_views.Dependents([kept.routines[0]], [], [])
    assert kept.missing_from(present) == ["CREATE TRIGGER t", "CREATE VIEW v", "GRANT g"]


def test_a_failed_undo_stops_there_and_says_what_to_do_by_hand():
    fail = {("malbork", DEFERRED[1]): psycopg.errors.UndefinedTable("no parent"),
            ("defaultdb", 'ALTER DATABASE "malbork" RENAME TO "malbork_restoring_1"'):
                psycopg.errors.InsufficientPrivilege("denied")}
    main, connect, log = recorded(fail, version="25.3")
    with pytest.raises(DatabaseError) as err:
        swap_keeping_views(main, CockroachDB(), "malbork", "malbork_restoring_1", "malbork_pre_restore_1",
                           DEFERRED, connect)
    text = str(err.value)
    assert "undoing the swap failed too (undoing renaming 'malbork_restoring_1' to 'malbork': denied)" in text
    steps = [text.index(f"({i}) ") for i in range(1, 5)]
    assert steps == sorted(steps)
    assert '(1) ALTER DATABASE "malbork" RENAME TO "malbork_restoring_1";' in text
    assert "(2) in 'malbork_pre_restore_1', drop its triggers, views and functions or procedures" in text
    assert '(3) ALTER DATABASE "malbork_pre_restore_1" RENAME TO "malbork";' in text
    assert "(4) in 'malbork', run those of the statements logged as" in text
    # Nothing after the failed undo ran: the name 'malbork' still belongs to the restored database.
    assert log[-1] == ("defaultdb", 'ALTER DATABASE "malbork" RENAME TO "malbork_restoring_1"')


# SHOW ROLES as logic test `role` shows it (username, options, member_of; `public` is no row
# of it): cockroachdb/cockroach pkg/sql/logictest/testdata/logic_test/role @
# c7455e4e05711164e0cad76c6e01275359b01845, which also shows a GRANT to a missing role failing
# ("role/user unknownuser does not exist"); SHOW ROLES reads system.users
# (pkg/sql/delegate/show_roles.go @ 29958d8db920745e30901805ed1e91ab6a58fc6f).
ROLES = [("admin",), ("app_owner",), ("app_reader",), ("app_writer",), ("root",)]


def test_a_tail_naming_a_missing_role_is_refused_before_any_rename():
    tail = DEFERRED + ['GRANT SELECT ON TABLE "public"."parent" TO "ghost";', 'ALTER TABLE "public"."t" OWNER TO Other;']
    main, connect, log = recorded(version="25.3")
    with pytest.raises(DatabaseError, match=r"roles this cluster does not have: ghost, other; create them.*"
                                            r"'malbork' is unchanged"):
        swap_keeping_views(main, CockroachDB(), "malbork", "malbork_restoring_1", "malbork_pre_restore_1",
                           tail, connect)
    assert log == [("defaultdb", CockroachDB.ROLES_SQL)]


def test_roles_that_cannot_be_listed_leave_the_check_to_the_tail(capsys):
    fail = {("defaultdb", CockroachDB.ROLES_SQL): psycopg.errors.InsufficientPrivilege("no SELECT on system.users")}
    main, connect, log = recorded(fail, version="21.2")
    swap_keeping_views(main, CockroachDB(), "malbork", "malbork_restoring_1", None, DEFERRED, connect)
    assert "cannot list the cluster's roles" in capsys.readouterr().out
    assert changes(log)[-1] == ("malbork", DEFERRED[-1])


def test_a_grant_to_a_missing_role_that_slipped_past_the_check_is_undone_routines_first():
    # The restore user may not read system.users; then the GRANT itself fails after the rename
    # ("role/user ghost does not exist", logic test role above) and the routines and trigger the
    # tail created are dropped before the restored database is renamed back.
    grant = 'GRANT SELECT ON TABLE "public"."parent" TO "ghost";'
    tail = [F, TRIGGER_FUNC, TRIGGER, grant]
    fail = {("defaultdb", CockroachDB.ROLES_SQL): psycopg.errors.InsufficientPrivilege("no SELECT on system.users"),
            ("malbork", grant): psycopg.errors.UndefinedObject("role/user ghost does not exist")}
    main, connect, log = recorded(fail, version="25.3")
    with pytest.raises(DatabaseError, match=r"ghost does not exist.*'malbork' is unchanged"):
        swap_keeping_views(main, CockroachDB(), "malbork", "malbork_restoring_1", "malbork_pre_restore_1", tail, connect)
    undo = changes(log[log.index(("malbork", grant)) + 1:])
    assert undo[:len(DROPS_25_3) + 1] == [*[("malbork", sql) for sql in DROPS_25_3],
                                          ("defaultdb", 'ALTER DATABASE "malbork" RENAME TO "malbork_restoring_1"')]
    assert undo[-len(CARRIED_PRIVILEGES) - 1] == ("defaultdb", 'ALTER DATABASE "malbork_pre_restore_1" RENAME TO "malbork"')


def test_roles_named_by_grants_and_owners():
    assert swap_views.named_roles([
        'GRANT SELECT ON TABLE "public"."t" TO "app_reader";', "GRANT USAGE ON SCHEMA \"public\" TO PUBLIC;",
        'ALTER FUNCTION public.f OWNER TO "Odd ""x""";', "ALTER TABLE t OWNER TO Mixed;",
        "GRANT EXECUTE ON FUNCTION public.f TO public", "CREATE VIEW v AS SELECT 'GRANT x TO y'",
    ]) == {"app_reader", 'Odd "x"', "mixed"}


def test_triggers_and_overloaded_routines_are_dropped_by_their_own_names():
    assert swap_views.trigger_dependent(TRIGGER).drop == "DROP TRIGGER t1_trigger ON public.parent"
    odd = ('CREATE TRIGGER "On Update" BEFORE UPDATE OF a, "on" ON sc1."Odd ""Name"" x" FOR EACH ROW '
           "EXECUTE FUNCTION sc1.f()")
    assert swap_views.trigger_dependent(odd).drop == 'DROP TRIGGER "On Update" ON sc1."Odd ""Name"" x"'
    with pytest.raises(DatabaseError, match="unexpected trigger definition"):
        swap_views.trigger_dependent("CREATE TRIGGER")
    f = dc.parse_routine(100121, F)
    g = dc.parse_routine(100125, "CREATE FUNCTION public.f(IN a INT8, IN b STRING DEFAULT ')')\n RETURNS INT8")
    one = dc.parse_routine(100122, PROCEDURE)
    assert [d.drop for d in swap_views.routine_dependents([f, g, one], [f, g, one])] == [
        "DROP FUNCTION public.f(IN a public.mood)",
        "DROP FUNCTION public.f(IN a INT8, IN b STRING DEFAULT ')')",
        "DROP PROCEDURE public.double_triple",
    ]


# --- the same sequence, live on PostgreSQL ----------------------------------------------------

ROLE = "swap_test_reader"


class PgDependents(CockroachDB):
    """CockroachDB's swap SQL, with PostgreSQL's catalog answering the listings; the objects
    are built by the same code (routine parsing, trigger names, drop statements, grant text)."""

    def views(self, conn, database):
        rows = conn.execute(
            "SELECT n.nspname, c.relname, c.relkind = 'm', pg_get_viewdef(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm') "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY c.oid").fetchall()
        return [View(s, n, m, f"CREATE {'MATERIALIZED VIEW' if m else 'VIEW'} {s}.{n} AS {d}")
                for s, n, m, d in rows]

    def dependents(self, conn, database):
        rows = conn.execute("SELECT p.oid::int8, pg_get_functiondef(p.oid) FROM pg_proc p "
                            "WHERE p.pronamespace = 'public'::regnamespace ORDER BY p.oid").fetchall()
        routines = [dc.parse_routine(oid, create) for oid, create in rows]
        triggers = [r[0] for r in conn.execute("SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal "
                                               "ORDER BY oid").fetchall()]
        targets = dc.routine_targets(routines)
        grants = conn.execute("SELECT specific_name, grantee, privilege_type FROM information_schema.routine_privileges "
                              "WHERE routine_schema = 'public' AND grantee = %s ORDER BY 1", (ROLE,)).fetchall()
        # Overloaded names have no target: their grants stay behind, as in a backup.
        privileges = [dc.grant_sql(targets[oid], grantee, privilege) for specific, grantee, privilege in grants
                      if (oid := int(specific.rsplit("_", 1)[1])) in targets]
        return swap_views.Dependents(swap_views.routine_dependents(routines, routines),
                                     [swap_views.trigger_dependent(t) for t in triggers],
                                     [swap_views.view_dependent(self, v) for v in self.views(conn, database)], privileges)

    def roles(self, conn):
        return {r[0] for r in conn.execute("SELECT rolname FROM pg_roles").fetchall()}


# A function and a procedure that read the table, a trigger running a function, views on both.
ROUTINES_SQL = [
    "CREATE FUNCTION total() RETURNS int8 LANGUAGE sql BEGIN ATOMIC SELECT sum(x) FROM parent; END",
    "CREATE FUNCTION total(factor int8) RETURNS int8 LANGUAGE sql BEGIN ATOMIC SELECT sum(x) * factor FROM parent; END",
    "CREATE PROCEDURE add_one() LANGUAGE sql BEGIN ATOMIC INSERT INTO parent VALUES (1); END",
    "CREATE FUNCTION count_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "UPDATE inserts SET n = n + 1; RETURN NEW; END $$",
    "CREATE TRIGGER parent_counted AFTER INSERT ON parent FOR EACH ROW EXECUTE FUNCTION count_insert()",
]
LIVE_SQL = ["CREATE TABLE parent (x int8)", "INSERT INTO parent VALUES (1), (2)",
            "CREATE TABLE inserts (n int8)", "INSERT INTO inserts VALUES (0)", *ROUTINES_SQL,
            "CREATE VIEW vx AS SELECT x FROM parent", "CREATE VIEW vy AS SELECT x * 10 AS y FROM vx",
            "CREATE MATERIALIZED VIEW mv AS SELECT total() AS s",
            f"GRANT EXECUTE ON PROCEDURE add_one() TO {ROLE}"]
# The restored database's tail, as a backup holds it back.
RESTORED_DEFERRED = [*[re.sub(r"(?<![\w.])parent\b", "public.parent", s) for s in ROUTINES_SQL],
                     "CREATE VIEW public.vx AS SELECT x FROM public.parent",
                     "CREATE VIEW public.vy AS SELECT x * 10 AS y FROM public.vx",
                     "CREATE MATERIALIZED VIEW public.mv AS SELECT public.total() AS s",
                     f'GRANT EXECUTE ON PROCEDURE public.add_one TO "{ROLE}";']


@pytest.fixture
def databases(pg, dbname):
    live, scratch, previous = dbname, f"{dbname}_restoring_1", f"{dbname}_pre_restore_1"
    with pg.connect() as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone():
            conn.execute(f"CREATE ROLE {ROLE}")
    with pg.connect(live) as conn:
        for statement in LIVE_SQL:
            conn.execute(statement)
    pg.create_database(scratch)
    with pg.connect(scratch) as conn:
        conn.execute("CREATE TABLE parent (x int8)")
        conn.execute("INSERT INTO parent VALUES (40), (50), (60)")
        conn.execute("CREATE TABLE inserts (n int8)")
        conn.execute("INSERT INTO inserts VALUES (100)")
    yield live, scratch, previous
    for database in (live, scratch, previous):
        if database in pg.databases():
            with pg.connect(database) as conn:
                conn.execute(f"DROP OWNED BY {ROLE}")
    with pg.connect() as conn:
        conn.execute(f"DROP ROLE IF EXISTS {ROLE}")


def state(pg, database: str) -> dict:
    """What the database's views, routines and trigger answer, and who may run what."""
    with pg.connect(database) as conn:
        views = [r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relkind IN ('v', 'm') "
                                            "AND relnamespace = 'public'::regnamespace ORDER BY relname").fetchall()]
        routines = [r[0] for r in conn.execute("SELECT p.oid::regprocedure::text FROM pg_proc p "
                                               "WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1").fetchall()]
        if not routines:
            return {"views": views, "routines": routines}
        conn.execute("CALL add_one()")  # inserts a row; the trigger counts it
        return {"views": views, "routines": routines,
                "answers": conn.execute("SELECT (SELECT sum(y) FROM vy), (SELECT s FROM mv), total(), total(2), "
                                        "(SELECT n FROM inserts)").fetchone(),
                # Granted to the role itself (PUBLIC may run any new routine in PostgreSQL).
                "granted": conn.execute("SELECT count(*) = 1 FROM information_schema.routine_privileges "
                                        "WHERE grantee = %s AND routine_name = 'add_one'", (ROLE,)).fetchone()[0]}


ROUTINE_NAMES = ["add_one()", "count_insert()", "total()", "total(bigint)"]


def test_live_swap_carries_views_routines_triggers_and_grants_of_both_databases(pg, databases):
    live, scratch, previous = databases
    with pg.connect() as main:
        swap_keeping_views(main, PgDependents(), live, scratch, previous, RESTORED_DEFERRED, pg.connect)
    # The restored data, through its views and routines (add_one() added a 1 first; the trigger counted it).
    restored = state(pg, live)
    assert restored["views"] == ["mv", "vx", "vy"] and restored["routines"] == ROUTINE_NAMES
    assert restored["answers"] == (1510, 150, 151, 302, 101)
    # The kept copy: routines, trigger, views and the routine's grant rebuilt on its own tables.
    kept = state(pg, previous)
    assert kept["views"] == ["mv", "vx", "vy"] and kept["routines"] == ROUTINE_NAMES
    assert kept["answers"] == (40, 3, 4, 8, 1)
    assert kept["granted"] is True and restored["granted"] is True
    assert scratch not in pg.databases()


def test_live_swap_failure_leaves_the_live_database_as_it_was(pg, databases):
    live, scratch, previous = databases
    bad = RESTORED_DEFERRED[:-2] + ["CREATE MATERIALIZED VIEW public.mv AS SELECT sum(x) AS s FROM public.nope"]
    with pg.connect() as main, pytest.raises(DatabaseError, match=r"(?s)nope.*is unchanged"):
        swap_keeping_views(main, PgDependents(), live, scratch, previous, bad, pg.connect)
    before = state(pg, live)
    assert before["views"] == ["mv", "vx", "vy"] and before["routines"] == ROUTINE_NAMES
    assert before["answers"] == (40, 3, 4, 8, 1)  # its own data, its trigger firing again
    assert before["granted"] is True  # the grant came back with the procedure
    # The restored database is back under its name, with none of the tail, for the restore to drop.
    assert state(pg, scratch) == {"views": [], "routines": []}
    assert previous not in pg.databases()


def test_live_swap_refuses_a_tail_naming_a_missing_role_before_renaming(pg, databases):
    live, scratch, previous = databases
    tail = RESTORED_DEFERRED + ['GRANT SELECT ON TABLE "public"."parent" TO "swap_test_nobody";']
    with pg.connect() as main, pytest.raises(DatabaseError, match=r"does not have: swap_test_nobody.*is unchanged"):
        swap_keeping_views(main, PgDependents(), live, scratch, previous, tail, pg.connect)
    assert state(pg, live)["answers"] == (40, 3, 4, 8, 1)
    assert scratch in pg.databases() and previous not in pg.databases()


def test_rename_waits_out_a_session_that_is_still_closing(pg, databases, monkeypatch):
    live, scratch, _ = databases
    monkeypatch.setattr(swap_views, "RENAME_RETRY_SECONDS", 0.5)
    holder = pg.connect(scratch)
    try:
        with pg.connect() as main, pytest.raises(psycopg.errors.ObjectInUse):
            swap_views.rename(main, PgDependents(), scratch, f"{scratch}_x")
    finally:
        holder.close()


def held_back(script: str) -> tuple[list[str], list[str]]:
    """(statements loaded into the scratch database, statements held back), as replay.load splits them."""
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
