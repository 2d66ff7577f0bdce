"""A table's COPY rows loaded over several connections (ENCLAVE_BACKUP_RESTORE_JOBS)."""

from __future__ import annotations

import time

import pytest

from tests.conftest import run_cli, spawn_cli
from tests.integration.test_restore import _fp, _restore_dbs, _upload_script

ROWS = 300_000  # about 3.6 MiB of COPY data: several 1 MiB pieces, so every loader gets rows
LONG = 3 * (1 << 20) + 17  # one value longer than any piece: its row arrives in parts

# Settings the script gives its session decide how COPY reads the rows: a day-first date
# style, then the server's default again, and LATIN1 bytes in a UTF-8 database.
SCRIPT = b"".join([
    b"SET client_encoding = 'LATIN1';\n",
    b"SET datestyle = 'SQL, DMY';\n",
    b"CREATE TABLE dmy (n integer, d date, t text);\n",
    b"CREATE TABLE mdy (n integer, d date);\n",
    b"CREATE TABLE long_rows (n integer, v text);\n",
    b"CREATE TABLE empty (n integer);\n",
    b"COPY public.dmy (n, d, t) FROM stdin;\n",
    b"".join(b"%d\t01/02/2020\tcaf\xe9\n" % i for i in range(ROWS)),
    b"\\.\n",
    b"RESET datestyle;\n",
    b"COPY public.mdy (n, d) FROM stdin;\n",
    b"".join(b"%d\t01/02/2020\n" % i for i in range(ROWS)),
    b"\\.\n",
    b"COPY public.long_rows (n, v) FROM stdin;\n",
    b"1\t" + b"x" * LONG + b"\n2\tshort\n3\t" + b"y" * LONG + b"\n",
    b"\\.\n",
    b"COPY public.empty (n) FROM stdin;\n",
    b"\\.\n",
])

CHECK = """
SELECT (SELECT count(*) FROM dmy WHERE d = '2020-02-01' AND t = 'café'),
       (SELECT count(DISTINCT n) FROM dmy),
       (SELECT count(*) FROM mdy WHERE d = '2020-01-02'),
       (SELECT count(DISTINCT n) FROM mdy),
       (SELECT string_agg(n || ':' || length(v) || ':' || left(v, 1), ',' ORDER BY n) FROM long_rows),
       (SELECT count(*) FROM empty)
"""


@pytest.mark.parametrize("jobs", [1, 3])
def test_rows_load_over_several_connections_with_the_scripts_session_settings(pg, moto, bucket, dbname,
                                                                              cli_env, jobs):
    key = _upload_script(moto, bucket, dbname, SCRIPT)
    result = run_cli({**cli_env, "ENCLAVE_BACKUP_RESTORE_JOBS": str(jobs)}, "restore", "--object", key)
    assert result.returncode == 0, result.stdout + result.stderr
    done = result.event("restore complete")
    assert done["rows"] == 2 * ROWS + 3
    assert done["load_connections"] == jobs
    with pg.connect(dbname) as conn:
        got = conn.execute(CHECK).fetchone()
    assert got == (ROWS, ROWS, ROWS, ROWS, f"1:{LONG}:x,2:5:s,3:{LONG}:y", 0)


def test_a_bad_row_on_one_loading_connection_fails_the_restore_and_changes_nothing(pg, moto, bucket, dbname,
                                                                                  cli_env):
    rows = b"".join(b"%d\t01/02/2020\tok\n" % i for i in range(ROWS))
    bad = rows + b"not a number\t01/02/2020\tbad\n" + rows
    script = SCRIPT.replace(b"".join(b"%d\t01/02/2020\tcaf\xe9\n" % i for i in range(ROWS)), bad)
    key = _upload_script(moto, bucket, dbname, script)
    with pg.connect(dbname) as conn:
        conn.execute("CREATE TABLE live (v text)")
        conn.execute("INSERT INTO live VALUES ('kept')")
    live = _fp(pg, dbname)

    result = run_cli({**cli_env, "ENCLAVE_BACKUP_RESTORE_JOBS": "4"}, "restore", "--object", key)
    assert result.returncode == 3, result.stdout + result.stderr
    error = result.event("restore failed")["error"]
    assert "the statement at line 8 failed" in error, error  # the header line comes first
    assert 'invalid input syntax for type integer: "not a number"' in error
    assert "it begins: COPY public.dmy (n, d, t) FROM stdin" in error
    assert _fp(pg, dbname) == live and _restore_dbs(pg, dbname) == ([], [])
    with pg.connect() as conn:
        left = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname LIKE %s",
                            (dbname + "_restoring_%",)).fetchone()[0]
    assert left == 0


# Post-data as pg_dump writes it: index builds and key constraints, each on one table, then a
# foreign key that needs the primary key before it. `slow` makes each build take a while, so the
# test can see two of them at once; search_path set between them decides which `t2` one means.
POST_DATA = b"".join([
    b"CREATE SCHEMA app;\n",
    b"CREATE FUNCTION public.slow(integer) RETURNS integer LANGUAGE sql IMMUTABLE "
    b"AS $$ SELECT pg_sleep(0.4); SELECT $1 $$;\n",
    b"CREATE TABLE public.t1 (n integer, m integer);\n",
    b"CREATE TABLE public.t2 (n integer);\n",
    b"CREATE TABLE app.t2 (n integer, ref integer);\n",
    b"COPY public.t1 (n, m) FROM stdin;\n1\t1\n2\t2\n3\t3\n\\.\n",
    b"COPY public.t2 (n) FROM stdin;\n1\n2\n3\n\\.\n",
    b"COPY app.t2 (n, ref) FROM stdin;\n1\t1\n2\t3\n\\.\n",
    b"CREATE INDEX t1_slow ON public.t1 USING btree (public.slow(n));\n",
    b"CREATE INDEX t2_slow ON public.t2 USING btree (public.slow(n));\n",
    b"ALTER TABLE ONLY public.t1\n    ADD CONSTRAINT t1_pkey PRIMARY KEY (n);\n",
    b"CREATE UNIQUE INDEX t1_m ON public.t1 USING btree (m);\n",
    b"SET search_path = app;\n",
    b"CREATE INDEX t2_n ON t2 USING btree (n);\n",  # app.t2: the setting of its moment
    b"RESET search_path;\n",
    b"ALTER TABLE ONLY app.t2\n    ADD CONSTRAINT t2_ref FOREIGN KEY (ref) REFERENCES public.t1(n);\n",
])

ACTIVE_BUILDS = ("SELECT count(*) FROM pg_stat_activity WHERE datname LIKE %s AND state = 'active' "
                 "AND query LIKE 'CREATE INDEX%%'")


@pytest.mark.parametrize("jobs", [1, 2])
def test_index_builds_run_side_by_side_with_the_settings_of_their_moment(pg, moto, bucket, dbname, cli_env, jobs):
    key = _upload_script(moto, bucket, dbname, POST_DATA)
    proc = spawn_cli({**cli_env, "ENCLAVE_BACKUP_RESTORE_JOBS": str(jobs)}, "restore", "--object", key)
    most = 0
    with pg.connect() as watcher:
        while proc.poll() is None:
            most = max(most, watcher.execute(ACTIVE_BUILDS, (dbname + "_restoring_%",)).fetchone()[0])
            time.sleep(0.05)
    out, err = proc.communicate()
    assert proc.returncode == 0, out + err
    assert most == (2 if jobs == 2 else 1)
    with pg.connect(dbname) as conn:
        indexes = dict(conn.execute("SELECT indexname, schemaname FROM pg_indexes WHERE schemaname IN "
                                    "('public', 'app')").fetchall())
        constraints = {r[0] for r in conn.execute("SELECT conname FROM pg_constraint WHERE conname LIKE 't%'")}
    assert indexes == {"t1_slow": "public", "t2_slow": "public", "t1_pkey": "public", "t1_m": "public",
                       "t2_n": "app"}
    assert constraints == {"t1_pkey", "t2_ref"}


def test_a_failed_index_build_fails_the_restore_naming_it_and_changes_nothing(pg, moto, bucket, dbname, cli_env):
    script = POST_DATA.replace(b"1\t1\n2\t2\n3\t3\n", b"1\t1\n2\t1\n3\t3\n")  # t1_m is no longer unique
    key = _upload_script(moto, bucket, dbname, script)
    with pg.connect(dbname) as conn:
        conn.execute("CREATE TABLE live (v text)")
    live = _fp(pg, dbname)
    result = run_cli({**cli_env, "ENCLAVE_BACKUP_RESTORE_JOBS": "2"}, "restore", "--object", key)
    assert result.returncode == 3, result.stdout + result.stderr
    error = result.event("restore failed")["error"]
    assert "the statement at line 25 failed" in error and "could not create unique index" in error, error
    assert "it begins: CREATE UNIQUE INDEX t1_m" in error
    assert _fp(pg, dbname) == live and _restore_dbs(pg, dbname) == ([], [])
