"""A PostgreSQL backup equals the database at one snapshot: concurrent DDL, database settings,
large objects, encodings and database-level state never change or lose a value."""

from __future__ import annotations

import gzip
import json
import threading
import time

import psycopg
import pytest

from devkit.corpus import add_bulk
from tests.conftest import run_cli
from tests.integration.test_backup_failures import Running, assert_nothing_left

# Fixed output settings for comparing values, whatever the database's own defaults say.
NEUTRAL = "-c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=3 -c statement_timeout=0"


def connect(pg, database: str, autocommit: bool = True) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=pg.port, user=pg.user, password=pg.password, dbname=database,
                           autocommit=autocommit, options=NEUTRAL)


def rows(pg, database: str, query: str, params: tuple | None = None) -> list[tuple]:
    with connect(pg, database) as conn:
        return conn.execute(query, params).fetchall()


def backup(env: dict) -> tuple[str, dict]:
    result = run_cli(env, "backup")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.event("backup complete")["key"], result


def manifest(moto, bucket: str, key: str) -> dict:
    return json.loads(moto.client().get_object(Bucket=bucket, Key=key + ".manifest.json")["Body"].read())


def script(moto, bucket: str, key: str) -> bytes:
    return moto.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def restore(env: dict, *args: str):
    result = run_cli(env, "restore", "--object", "latest", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _lock_waiter(pg, database: str, table: str) -> bool:
    """True once pg_dump's session waits to lock `table`."""
    return bool(rows(pg, database, f"""
        SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE NOT l.granted AND l.relation = '{table}'::regclass
          AND a.application_name LIKE 'enclave-backup-pg_dump-%'"""))


def _wait(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


@pytest.mark.parametrize("ddl", ["TRUNCATE public.victim",
                                 "ALTER TABLE public.victim ALTER COLUMN n TYPE bigint"])
def test_concurrent_ddl_waits_for_the_backup_instead_of_emptying_a_table(pg, moto, bucket, dbname, cli_env, ddl):
    with connect(pg, dbname) as conn:
        conn.execute("CREATE TABLE public.victim (n integer)")
        conn.execute("INSERT INTO public.victim SELECT generate_series(1, 1000)")
        conn.execute("CREATE TABLE public.zz_hold (n integer)")
    # zz_hold is locked last (pg_dump locks in catalog order): while its lock is held here,
    # pg_dump has its snapshot and holds victim's lock, but has read no row yet.
    holder = connect(pg, dbname, autocommit=False)
    holder.execute("LOCK TABLE public.zz_hold IN ACCESS EXCLUSIVE MODE")
    run = Running({**cli_env, "ENCLAVE_BACKUP_PROGRESS_SECONDS": "0.2"}, "backup")
    _wait(lambda: _lock_waiter(pg, dbname, "public.zz_hold"))

    done = threading.Event()

    def concurrent_ddl():
        with connect(pg, dbname) as conn:
            conn.execute(ddl)
        done.set()

    worker = threading.Thread(target=concurrent_ddl)
    worker.start()
    _wait(lambda: rows(pg, dbname, "SELECT count(*) FROM pg_locks WHERE NOT granted "
                                   "AND relation = 'public.victim'::regclass")[0][0] > 0)
    run.wait_for(lambda e: e.get("event") == "waiting for a lock before dumping")
    assert not done.is_set()  # the DDL waits for the backup
    holder.commit()
    holder.close()
    result = run.finish()
    worker.join(60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert done.is_set()
    waits = [json.loads(line) for line in run.stdout if "waiting for a lock" in line]
    assert waits[0]["table"] == "public.zz_hold", result.stdout
    key = result.event("backup complete")["key"]
    assert manifest(moto, bucket, key)["tables"]["public.victim"] == 1000

    restore(cli_env)
    assert rows(pg, dbname, "SELECT count(*), sum(n) FROM public.victim") == [(1000, 500500)]


def test_a_lock_held_by_an_idle_transaction_is_logged_then_fails_naming_table_and_session(pg, moto, bucket, dbname,
                                                                                          cli_env):
    with connect(pg, dbname) as conn:
        conn.execute("CREATE TABLE public.busy (n integer)")
    holder = connect(pg, dbname, autocommit=False)
    holder.execute("SET application_name = 'forgotten-migration'")
    holder.execute("ALTER TABLE public.busy ADD COLUMN m integer")  # ACCESS EXCLUSIVE, then idle
    holder_pid = holder.info.backend_pid
    try:
        started = time.monotonic()
        result = run_cli({**cli_env, "ENCLAVE_BACKUP_LOCK_TIMEOUT_SECONDS": "3",
                          "ENCLAVE_BACKUP_PROGRESS_SECONDS": "0.5"}, "backup")
        elapsed = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode == 3, result.stdout + result.stderr
    waits = [e for e in result.events if e["event"] == "waiting for a lock before dumping"]
    assert waits, result.stdout
    assert waits[-1]["table"] == "public.busy" and f"pid {holder_pid}" in waits[-1]["blocked_by"][0]
    assert "forgotten-migration" in waits[-1]["blocked_by"][0]
    error = result.event("backup failed")["error"]
    assert "public.busy" in error and f"pid {holder_pid}" in error and "ENCLAVE_BACKUP_LOCK_TIMEOUT_SECONDS" in error
    assert elapsed < 60
    assert_nothing_left(moto, bucket)


SETTINGS_SQL = r"""
CREATE TABLE public.target (id integer PRIMARY KEY);
CREATE SEQUENCE public.ticket;
CREATE TABLE public.values_ (
    d date, ts timestamp, tz timestamptz, iv interval, f8 double precision, f4 real, r regclass,
    n bigint DEFAULT nextval('public.ticket'));
INSERT INTO public.values_ (d, ts, tz, iv, f8, f4, r) VALUES
  ('2024-04-05', '2024-04-05 13:14:15.5', '2024-04-05 13:14:15.5+02', '-1 days +02:03:04', 0.1 + 0.2,
   0.1::real * 3, 'public.target'),
  ('1999-12-31', '0001-01-01 00:00:00', '2000-02-29 23:59:59.999999+00', '1 year -2 mons +3 days -04:05:06.7',
   1.7976931348623157e308, 1.17549435e-38, 'public.values_');
"""


def test_database_settings_never_change_a_value(pg, moto, bucket, dbname, cli_env):
    with connect(pg, dbname) as conn:
        conn.execute(SETTINGS_SQL)
        add_bulk(conn, 120_000, width=400)  # long enough to outlast the timeouts below
        for setting in ("DateStyle = 'SQL, DMY'", "IntervalStyle = 'sql_standard'", "extra_float_digits = 0",
                        "statement_timeout = '300ms'", "idle_in_transaction_session_timeout = '300ms'",
                        "search_path = public", "lock_timeout = '300ms'"):
            conn.execute(f'ALTER DATABASE "{dbname}" SET {setting}')
    query = "SELECT d::text, ts::text, tz::text, iv::text, f8::text, f4::text, r::text, n FROM public.values_ ORDER BY n"
    before = rows(pg, dbname, query)

    key, _ = backup(cli_env)
    sql = gzip.decompress(script(moto, bucket, key))
    assert b"SET client_encoding = 'UTF8';" in sql and b"set_config('search_path', '', false)" in sql

    target = dbname + "_byhand"
    pg.create_database(target)
    replay = pg.psql(target, "-v", "ON_ERROR_STOP=1", input=sql, check=False)
    assert replay.returncode == 0, replay.stderr.decode()
    assert rows(pg, target, query) == before

    result = restore(cli_env, "--force")
    assert rows(pg, dbname, query) == before
    carried = result.event("database-level state carried over")
    assert {"DateStyle", "IntervalStyle", "extra_float_digits", "statement_timeout"} <= set(carried["settings"])


def test_large_objects_keep_their_content_owner_and_privileges(pg, moto, bucket, dbname, cli_env):
    content = bytes(range(256)) * 1200 + b"\x00tail"
    with connect(pg, dbname) as conn:
        conn.execute("DO $$BEGIN CREATE ROLE lo_reader; EXCEPTION WHEN duplicate_object THEN NULL; END$$")
        oid = conn.execute("SELECT lo_from_bytea(0, %s)", (content,)).fetchone()[0]
        empty = conn.execute("SELECT lo_from_bytea(0, '')").fetchone()[0]
        conn.execute(f"ALTER LARGE OBJECT {oid} OWNER TO lo_reader")
        conn.execute(f"GRANT SELECT ON LARGE OBJECT {empty} TO lo_reader")
        conn.execute(f"COMMENT ON LARGE OBJECT {oid} IS 'a scanned contract'")
    query = ("SELECT m.oid::bigint, pg_get_userbyid(m.lomowner), m.lomacl::text, obj_description(m.oid, "
             "'pg_largeobject'), md5(lo_get(m.oid)), length(lo_get(m.oid)) FROM pg_largeobject_metadata m ORDER BY 1")
    before = rows(pg, dbname, query)
    assert before[0][5] == len(content)

    key, _ = backup(cli_env)
    target = dbname + "_byhand"
    pg.create_database(target)
    replay = pg.psql(target, "-v", "ON_ERROR_STOP=1", input=gzip.decompress(script(moto, bucket, key)),
                     check=False)
    assert replay.returncode == 0, replay.stderr.decode()
    assert rows(pg, target, query) == before

    with connect(pg, dbname) as conn:
        conn.execute(f"SELECT lo_unlink({oid})")
    restore(cli_env)
    assert rows(pg, dbname, query) == before


def _psql_value(pg, database: str, sql: bytes) -> bytes:
    out = pg.psql(database, "-A", "-t", "-v", "ON_ERROR_STOP=1", input=sql, check=False)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return out.stdout.strip()


# Written by a client that declares the database's own encoding: raw bytes, not UTF-8.
ENCODED = {
    "LATIN1": b"SET client_encoding = 'LATIN1';\n"
              b"CREATE TABLE \"caf\xe9\" (\"na\xefve\" text, n integer);\n"
              b"COMMENT ON TABLE \"caf\xe9\" IS 'cr\xe8me br\xfbl\xe9e';\n"
              b"INSERT INTO \"caf\xe9\" VALUES ('Z\xfcrich \xff \xa9', 1), (NULL, 2), ('', 3);\n",
    "SQL_ASCII": b"SET client_encoding = 'SQL_ASCII';\n"
                 b"CREATE TABLE \"caf\xc3\xa9\" (\"na\xefve\" text, n integer);\n"
                 b"COMMENT ON TABLE \"caf\xc3\xa9\" IS 'mixed \xe9 and \xe6\x9d\xb1 and \xff';\n"
                 b"INSERT INTO \"caf\xc3\xa9\" VALUES ('Z\xfcrich \xff', 1), ('\xe6\x9d\xb1\xe4\xba\xac', 2), (NULL, 3);\n",
}
# More server encodings, written by a UTF-8 client the server converts for.
for _encoding, _text in {"LATIN2": "Łódź żółć", "WIN1251": "Привет, мир", "EUC_JP": "東京 ｶﾀｶﾅ",
                         "LATIN9": "€ œ Ÿ", "UTF8": "Zürich 東京 🙂"}.items():
    ENCODED[_encoding] = ("SET client_encoding = 'UTF8';\n"
                          f"CREATE TABLE \"t {_text}\" (\"c {_text}\" text, n integer);\n"
                          f"COMMENT ON TABLE \"t {_text}\" IS '{_text}';\n"
                          f"INSERT INTO \"t {_text}\" VALUES ('{_text}', 1), (NULL, 2);\n").encode()

CHECK = {
    "LATIN1": b"SET client_encoding = 'LATIN1';\nSELECT md5(string_agg(t::text, '|' ORDER BY n)) || "
              b"md5(obj_description('\"caf\xe9\"'::regclass, 'pg_class')) FROM \"caf\xe9\" t;\n",
    "SQL_ASCII": b"SET client_encoding = 'SQL_ASCII';\nSELECT md5(string_agg(t::text, '|' ORDER BY n)) || "
                 b"md5(obj_description('\"caf\xc3\xa9\"'::regclass, 'pg_class')) FROM \"caf\xc3\xa9\" t;\n",
}
for _encoding, _query in ENCODED.items():
    _table = _query.split(b"CREATE TABLE ", 1)[1].split(b" (", 1)[0]
    if _encoding not in CHECK:
        CHECK[_encoding] = (b"SET client_encoding = 'UTF8';\nSELECT md5(string_agg(t::text, '|' ORDER BY n)) || md5("
                            b"obj_description('" + _table + b"'::regclass, 'pg_class')) FROM " + _table + b" t;\n")
    # A materialized view named in the database's encoding: restore refreshes it by that name.
    _view = b'"v ' + _table[1:]
    ENCODED[_encoding] += b"CREATE MATERIALIZED VIEW " + _view + b" AS SELECT count(*) AS n FROM " + _table + b";\n"
    CHECK[_encoding] += CHECK[_encoding].split(b"\n", 1)[0] + b"\nSELECT n FROM " + _view + b";\n"


@pytest.mark.parametrize("encoding", sorted(ENCODED))
def test_non_utf8_databases_round_trip_by_hand_and_by_restore(pg, moto, bucket, dbname, cli_env, encoding):
    with pg.connect() as conn:
        conn.execute(f'DROP DATABASE "{dbname}"')
        conn.execute(f"CREATE DATABASE \"{dbname}\" TEMPLATE template0 ENCODING '{encoding}' LOCALE 'C'")
    _psql_value(pg, dbname, ENCODED[encoding])
    before = _psql_value(pg, dbname, CHECK[encoding])

    key, _ = backup(cli_env)
    sql = gzip.decompress(script(moto, bucket, key))
    assert f"SET client_encoding = '{encoding}';".encode() in sql
    assert sql.split(b"\n", 1)[0].isascii()  # our header never contradicts the declared encoding

    target = dbname + "_byhand"
    with pg.connect() as conn:
        conn.execute(f"CREATE DATABASE \"{target}\" TEMPLATE template0 ENCODING '{encoding}' LOCALE 'C'")
    replay = pg.psql(target, "-v", "ON_ERROR_STOP=1", input=sql, check=False)
    assert replay.returncode == 0, replay.stderr.decode(errors="replace")
    assert _psql_value(pg, target, CHECK[encoding]) == before

    restored = restore(cli_env, "--force")
    assert _psql_value(pg, dbname, CHECK[encoding]) == before
    assert restored.event("materialized views refreshed under the database's name")["views"] == 1
    assert rows(pg, "postgres", f"SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = '{dbname}'") \
        == [(encoding,)]

    # A fresh server side (no live database): the backup says which encoding to create.
    with pg.connect() as conn:
        conn.execute(f'DROP DATABASE "{dbname}" WITH (FORCE)')
    restore(cli_env)
    assert _psql_value(pg, dbname, CHECK[encoding]) == before


DATABASE_STATE = """
SELECT (SELECT array_agg(format('%%s:%%s:%%s', coalesce(pg_get_userbyid(NULLIF(a.grantee, 0)), 'PUBLIC'),
                                a.privilege_type, a.is_grantable))
        FROM aclexplode(d.datacl) a),
       d.datconnlimit, shobj_description(d.oid, 'pg_database'),
       (SELECT array_agg(coalesce(pg_get_userbyid(NULLIF(s.setrole, 0)), '-') || ' ' || c)
        FROM pg_db_role_setting s, unnest(s.setconfig) c
        WHERE s.setdatabase = d.oid AND c NOT LIKE 'enclave_backup.%%')
FROM pg_database d WHERE d.datname = %s
"""


def database_state(pg, dbname: str) -> tuple:
    acl, limit, comment, settings = rows(pg, "postgres", DATABASE_STATE, (dbname,))[0]
    return sorted(acl or []), limit, comment, sorted(settings or [])


def test_database_privileges_settings_limit_and_comment_survive_the_swap(pg, moto, bucket, dbname, cli_env):
    with connect(pg, "postgres") as conn:
        conn.execute("DO $$BEGIN CREATE ROLE manager_app; EXCEPTION WHEN duplicate_object THEN NULL; END$$")
        for statement in (f'REVOKE ALL ON DATABASE "{dbname}" FROM PUBLIC',
                          f'GRANT CONNECT, TEMPORARY ON DATABASE "{dbname}" TO manager_app',
                          f'GRANT CREATE ON DATABASE "{dbname}" TO manager_app WITH GRANT OPTION',
                          f'ALTER DATABASE "{dbname}" SET work_mem = \'7MB\'',
                          f'ALTER DATABASE "{dbname}" SET search_path = "$user", app, "Odd, name"',
                          f'ALTER ROLE manager_app IN DATABASE "{dbname}" SET statement_timeout = \'5s\'',
                          f'ALTER DATABASE "{dbname}" CONNECTION LIMIT 42',
                          f"COMMENT ON DATABASE \"{dbname}\" IS 'the Manager''s data'"):
            conn.execute(statement)
    state = database_state(pg, dbname)
    assert "manager_app:CREATE:t" in state[0] and state[1] == 42 and len(state[3]) == 3

    backup(cli_env)
    result = restore(cli_env, "--force")
    assert database_state(pg, dbname) == state
    carried = result.event("database-level state carried over")
    assert carried["source"] == "live database" and carried["comment"] is True and carried["grants"] >= 3

    # No live database (a new cluster): the backup's manifest carries the same state.
    pg.drop_databases(dbname)
    result = restore(cli_env)
    assert result.event("database-level state carried over")["source"] == "backup"
    assert database_state(pg, dbname) == state


LOCALE = """
SELECT datlocprovider::text, {locale}, datcollate, datctype, pg_encoding_to_char(encoding)
FROM pg_database WHERE datname = %s
"""


@pytest.mark.parametrize("major, options", [
    (None, "LOCALE_PROVIDER icu ICU_LOCALE 'de-u-co-phonebk' LOCALE 'C.UTF-8'"),  # Debian's 15 has ICU
    (18, "LOCALE_PROVIDER builtin BUILTIN_LOCALE 'C.UTF-8' LOCALE 'C.UTF-8'"),
])
def test_the_locale_provider_survives_the_swap_and_a_new_database(pg, moto, bucket, cli_env, major, options,
                                                                  request):
    server = pg if major is None else request.getfixturevalue("servers")(major)
    name = f"locale_{major or 15}"
    with server.connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING UTF8 {options}')
    locale = "datlocale" if (major or 15) >= 17 else "daticulocale"
    with server.connect() as conn:
        before = conn.execute(LOCALE.format(locale=locale), (name,)).fetchall()
    env = {**cli_env, **server.env(name)}
    backup(env)
    restore(env, "--force")
    with server.connect() as conn:
        assert conn.execute(LOCALE.format(locale=locale), (name,)).fetchall() == before
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    restore(env)
    with server.connect() as conn:
        assert conn.execute(LOCALE.format(locale=locale), (name,)).fetchall() == before
