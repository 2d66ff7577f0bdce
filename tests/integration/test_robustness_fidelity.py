"""Settings refused at once, and restores and verifies that survive what a real database holds.

Real PostgreSQL servers (14-18) and moto S3 throughout: roles with short timeouts, login
event triggers, subscriptions, per-role database settings, materialized views, odd table
names, extension configuration tables, and a server restarted while a restore loads.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from devkit.signingkeys import signed
from tests.conftest import SIGNING_KEYS, backup, run_cli


def _manifest(moto, bucket: str, key: str) -> dict:
    return json.loads(moto.client().get_object(Bucket=bucket, Key=key + ".manifest.json")["Body"].read())


def _libpq(server, database: str) -> dict:
    return {"host": "127.0.0.1", "port": server.port, "user": server.user, "password": server.password,
            "dbname": database}


def _put_manifest(moto, bucket: str, key: str, manifest: dict) -> None:
    """A changed manifest, signed as the backup Job would: only its content can give it away."""
    moto.client().put_object(Bucket=bucket, Key=key + ".manifest.json", Body=signed(manifest, SIGNING_KEYS))


# --- settings that must fail at once ------------------------------------------------------------

@pytest.mark.parametrize("name, value", [
    ("ENCLAVE_BACKUP_INSTALLATION", ""),
    ("ENCLAVE_BACKUP_INSTALLATION", "  "),
    ("ENCLAVE_BACKUP_PREFIX", "../../etc"),
    ("ENCLAVE_BACKUP_PREFIX", "nightly/../other"),
    ("ENCLAVE_BACKUP_PREFIX", "nightly\\x"),
    ("ENCLAVE_BACKUP_PREFIX", "a//b"),
    ("ENCLAVE_BACKUP_PREFIX", "night\x1bly"),
    ("ENCLAVE_BACKUP_PUSHGATEWAY_URL", "not a url"),
    ("ENCLAVE_BACKUP_PUSHGATEWAY_URL", "pushgateway:9091"),
    ("ENCLAVE_BACKUP_PUSHGATEWAY_URL", "ftp://pushgateway:9091"),
    ("ENCLAVE_BACKUP_PUSHGATEWAY_URL", "http://pushgateway:port"),
])
def test_a_bad_installation_prefix_or_pushgateway_is_exit_2_before_anything_runs(cli_env, moto, bucket, name, value):
    for command in ("backup", "restore", "list", "verify"):
        args = ["restore", "--object", "latest"] if command == "restore" else [command]
        result = run_cli({**cli_env, name: value}, *args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert name in result.event(f"{command} failed")["error"]
    assert not moto.client().list_objects_v2(Bucket=bucket).get("Contents")
    assert not moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_an_unset_installation_and_a_prefix_with_outer_slashes_still_work(cli_env, moto, bucket):
    env = {k: v for k, v in cli_env.items() if k != "ENCLAVE_BACKUP_INSTALLATION"}
    made = run_cli({**env, "ENCLAVE_BACKUP_PREFIX": "/nightly/eu/"}, "backup")
    assert made.returncode == 0, made.stdout + made.stderr
    assert made.event("backup complete")["key"].startswith("nightly/eu/")


# --- manifest row counts keyed by quoted names ---------------------------------------------------

ODD_TABLES = {'a."b.c"': 1, '"a.b".c': 3, 'public."new\nline"': 2, '"Mixed"."Case ""q"""': 4, "public.plain": 5}


def _odd_names(pg, dbname):
    with pg.connect(dbname) as conn:
        conn.execute('CREATE SCHEMA a; CREATE SCHEMA "a.b"; CREATE SCHEMA "Mixed"')
        conn.execute('CREATE TABLE a."b.c" (v int); INSERT INTO a."b.c" VALUES (1)')
        conn.execute('CREATE TABLE "a.b".c (v int); INSERT INTO "a.b".c SELECT generate_series(1, 3)')
        conn.execute('CREATE TABLE public."new\nline" ("col\numn" int); '
                     'INSERT INTO public."new\nline" VALUES (1), (2)')
        conn.execute('CREATE TABLE "Mixed"."Case ""q""" (v int); INSERT INTO "Mixed"."Case ""q""" '
                     'SELECT generate_series(1, 4)')
        conn.execute("CREATE TABLE plain (v int); INSERT INTO plain SELECT generate_series(1, 5)")


def test_dotted_and_newline_table_names_get_their_own_row_counts_and_verify(pg, moto, bucket, dbname, cli_env):
    _odd_names(pg, dbname)
    key = backup(cli_env)
    manifest = _manifest(moto, bucket, key)
    assert manifest["tables"] == ODD_TABLES
    verified = run_cli(cli_env, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.event("verify complete")["rows"] == sum(ODD_TABLES.values())

    # One count off in one of the two dotted tables: verify names that table, not its twin.
    manifest["tables"]['"a.b".c'] = 4
    _put_manifest(moto, bucket, key, manifest)
    failed = run_cli(cli_env, "verify")
    assert failed.returncode == 5, failed.stdout + failed.stderr
    assert failed.event("verify failed")["error"].endswith('row counts differ from the manifest in 1 table(s): '
                                                          '"a.b".c has 3, manifest says 4')


def test_a_manifest_keyed_the_old_way_still_verifies(pg, moto, bucket, dbname, cli_env):
    with pg.connect(dbname) as conn:
        conn.execute('CREATE SCHEMA "Mixed"; CREATE TABLE "Mixed"."Odd t" (v int); '
                     'INSERT INTO "Mixed"."Odd t" VALUES (1), (2); CREATE TABLE plain (v int); '
                     "INSERT INTO plain VALUES (1)")
    key = backup(cli_env)
    manifest = _manifest(moto, bucket, key)
    manifest["tables"] = {"Mixed.Odd t": 2, "public.plain": 1}  # bare names joined by a dot
    _put_manifest(moto, bucket, key, manifest)
    verified = run_cli(cli_env, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    manifest["tables"]["Mixed.Odd t"] = 3
    _put_manifest(moto, bucket, key, manifest)
    failed = run_cli(cli_env, "verify")
    assert failed.returncode == 5 and "Mixed.Odd t has 2, manifest says 3" in failed.event("verify failed")["error"]


# --- restore and verify sessions set their own timeouts ------------------------------------------

def _role(server, name: str, *settings: str, superuser: bool = True) -> dict:
    """A login role with per-role settings; the libpq variables that log in as it."""
    password = "role-secret-Xk42"
    with server.connect() as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{name}"')
        conn.execute(f"""CREATE ROLE "{name}" LOGIN {'SUPERUSER' if superuser else 'CREATEDB'} PASSWORD '{password}'""")
        for setting in settings:
            conn.execute(f'ALTER ROLE "{name}" SET {setting}')
    return {"PGUSER": name, "PGPASSWORD": password}


def _leftovers(server, dbname: str) -> set[str]:
    return {d for d in server.databases() if d.startswith(dbname) and d != dbname and "_pre_restore_" not in d}


@pytest.mark.parametrize("major", [15, 18])
def test_a_role_with_short_timeouts_restores_and_verifies_a_load_longer_than_them(servers, moto, bucket, cli_env,
                                                                                   major):
    server = servers(major)
    dbname = "timeouts"
    server.recreate_database(dbname)
    with server.connect(dbname) as conn:
        # Several seconds of loading: COPY, then an index build on one connection while the others idle.
        conn.execute("CREATE TABLE big AS SELECT g AS id, md5(g::text) || repeat('x', 200) AS v "
                     "FROM generate_series(1, 600000) g")
        conn.execute("CREATE INDEX ON big (v, id)")
    timeouts = ["idle_session_timeout = '1s'", "statement_timeout = '1s'",
                "idle_in_transaction_session_timeout = '1s'", "lock_timeout = '1s'"]
    if major >= 17:
        timeouts.append("transaction_timeout = '1s'")
    env = {**cli_env, **server.env(dbname), **_role(server, "hasty", *timeouts), "ENCLAVE_BACKUP_RESTORE_JOBS": "2"}
    key = backup({**cli_env, **server.env(dbname)})

    restored = run_cli(env, "restore", "--object", key, "--force")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert not _leftovers(server, dbname)
    with server.connect(dbname) as conn:
        assert conn.execute("SELECT count(*) FROM big").fetchone()[0] == 600000
    verified = run_cli(env, "verify", "--object", key)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert not _leftovers(server, dbname)


# --- subscriptions never keep a scratch or previous database from being dropped -------------------

def _subscribe(pg, database: str, name: str = "feed") -> None:
    """A subscription as a replica would hold it; connect = false: no publisher needs to exist."""
    with pg.connect(database) as conn:
        conn.execute(f"CREATE SUBSCRIPTION {name} CONNECTION 'host=127.0.0.1 port=1 dbname=nowhere' "
                     "PUBLICATION pub WITH (connect = false)")


@pytest.fixture
def unsubscribe(pg, dbname):
    """Drops what subscriptions the test's databases still have, so that they can be dropped after it."""
    yield
    for database in (d for d in pg.databases() if d.startswith(dbname)):
        with pg.connect(database) as conn:
            for (name,) in conn.execute("SELECT subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid "
                                        "WHERE d.datname = current_database()").fetchall():
                conn.execute(f"ALTER SUBSCRIPTION {name} DISABLE")
                conn.execute(f"ALTER SUBSCRIPTION {name} SET (slot_name = NONE)")
                conn.execute(f"DROP SUBSCRIPTION {name}")


def test_databases_with_subscriptions_are_dropped_by_verify_restore_and_keep_previous(pg, moto, bucket, dbname,
                                                                                       cli_env, unsubscribe):
    with pg.connect(dbname) as conn:
        conn.execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1), (2)")
    _subscribe(pg, dbname)
    key = backup(cli_env)
    # A scratch database a killed restore left behind, with a subscription of its own.
    pg.create_database(f"{dbname}_restoring_20200101000000")
    _subscribe(pg, f"{dbname}_restoring_20200101000000", "leftover")

    verified = run_cli(cli_env, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert not [d for d in pg.databases() if "_verify_" in d and d.startswith(dbname)]

    env = {**cli_env, "ENCLAVE_BACKUP_RESTORE_KEEP_PREVIOUS": "0"}
    restored = run_cli(env, "restore", "--object", key)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert restored.event("restore complete")["dropped_previous"]  # the old live one, subscription and all
    assert {d for d in pg.databases() if d.startswith(dbname)} == {dbname}
    with pg.connect(dbname) as conn:  # the restored database has the backup's subscription, disabled
        assert conn.execute("SELECT subname, subenabled FROM pg_subscription s JOIN pg_database d "
                            "ON d.oid = s.subdbid WHERE d.datname = current_database()").fetchall() == [("feed", False)]

    # A restore that fails after the load (a client stays) drops its scratch, subscription and all.
    with pg.connect(dbname):
        failed = run_cli({**env, "ENCLAVE_BACKUP_RESTORE_WAIT_FOR_CLIENTS_SECONDS": "0"}, "restore", "--object", key,
                         "--force")
    assert failed.returncode == 3, failed.stdout + failed.stderr
    assert {d for d in pg.databases() if d.startswith(dbname)} == {dbname}


# --- login event triggers never fire on the program's own connections -----------------------------

@pytest.mark.parametrize("major", [17, 18])
def test_a_login_event_trigger_that_writes_a_row_neither_fails_verify_nor_changes_the_restore(servers, moto,
                                                                                             bucket, cli_env, major):
    server = servers(major)
    dbname = "logins"
    server.recreate_database(dbname)
    with server.connect(dbname) as conn:
        conn.execute("CREATE TABLE logins (n serial PRIMARY KEY, who text DEFAULT current_user)")
        conn.execute("CREATE FUNCTION note_login() RETURNS event_trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN INSERT INTO public.logins DEFAULT VALUES; END $$")
        conn.execute("CREATE EVENT TRIGGER on_login ON login EXECUTE FUNCTION note_login()")
    env = {**cli_env, **server.env(dbname), "ENCLAVE_BACKUP_RESTORE_JOBS": "2"}
    key = backup(env)
    manifest = _manifest(moto, bucket, key)

    verified = run_cli(env, "verify", "--object", key)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    restored = run_cli(env, "restore", "--object", key)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    quiet = psycopg.connect(**_libpq(server, dbname), options="-c event_triggers=off")
    with quiet:  # looked at without firing the trigger: the restore added no row of its own
        assert quiet.execute("SELECT count(*) FROM logins").fetchone()[0] == manifest["tables"]["public.logins"]


# --- a database owner who is no superuser restores its own database ------------------------------

def test_a_non_superuser_owner_restores_with_per_role_settings_it_may_not_set(pg, moto, bucket, dbname, cli_env):
    owner = f"owner_{dbname[-8:]}"
    other = f"other_{dbname[-8:]}"
    env = {**cli_env, **_role(pg, owner, superuser=False)}
    with pg.connect() as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{other}"')
        conn.execute(f'CREATE ROLE "{other}"')
        conn.execute(f'ALTER DATABASE "{dbname}" OWNER TO "{owner}"')
        conn.execute(f'ALTER DATABASE "{dbname}" SET work_mem = \'7MB\'')  # the owner may carry this one
        conn.execute(f'ALTER ROLE "{other}" IN DATABASE "{dbname}" SET work_mem = \'9MB\'')  # and not this one
        conn.execute(f'ALTER ROLE "{owner}" IN DATABASE "{dbname}" SET search_path = public')  # its own: may
    with psycopg.connect(**{**_libpq(pg, dbname), "user": owner, "password": env["PGPASSWORD"]},
                         autocommit=True) as conn:
        conn.execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
    key = backup(env)
    with pg.connect(dbname) as conn:
        conn.execute("INSERT INTO t VALUES (2)")  # a change the restore must undo

    restored = run_cli(env, "restore", "--object", key)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    with pg.connect(dbname) as conn:
        assert conn.execute("SELECT v FROM t").fetchall() == [(1,)]
        settings = dict(conn.execute(
            "SELECT coalesce(pg_get_userbyid(nullif(s.setrole, 0)), ''), array_to_string(s.setconfig, ',') "
            "FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
            "WHERE d.datname = current_database()").fetchall())
    assert "work_mem=7MB" in settings[""]
    assert other not in settings  # not carried: the owner may not set another role's settings
    warned = [e for e in restored.events if e["event"].startswith("database-level state not carried over")]
    assert warned and f"work_mem (role {other})" in warned[0]["not_carried"], restored.stdout
    assert "9MB" not in restored.stdout  # setting names in the logs, never their values
    with pg.connect() as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{other}"')


# --- materialized views as the original has them --------------------------------------------------

def test_materialized_views_match_the_original_after_a_restore_on_two_connections(pg, moto, bucket, dbname,
                                                                                   cli_env):
    with pg.connect(dbname) as conn:
        # Floats of wildly different sizes: their sum depends on the order the rows are read in (and so
        # on parallel workers: none here, in the original and, carried over, in the restored database).
        conn.execute(f'ALTER DATABASE "{dbname}" SET max_parallel_workers_per_gather = 0')
        conn.execute("SET max_parallel_workers_per_gather = 0")
        conn.execute("SELECT setseed(0.21)")
        conn.execute("CREATE TABLE readings (id int, x float8)")
        conn.execute("INSERT INTO readings SELECT g, (random() - 0.5) * 10 ^ (random() * 30)::int "
                     "FROM generate_series(1, 300000) g")
        conn.execute("CREATE TABLE parts (id int, x float8) PARTITION BY RANGE (id)")
        conn.execute("CREATE TABLE parts_1 PARTITION OF parts FOR VALUES FROM (0) TO (1000000)")
        conn.execute("INSERT INTO parts SELECT id, x FROM readings")
        conn.execute("CREATE VIEW positive AS SELECT x FROM parts WHERE x > -1e300")
        conn.execute("CREATE MATERIALIZED VIEW totals AS SELECT sum(x)::text AS s, avg(x)::text AS a FROM readings")
        conn.execute("CREATE MATERIALIZED VIEW via_view AS SELECT sum(x)::text AS s FROM positive")
        conn.execute("CREATE MATERIALIZED VIEW whoami AS SELECT current_database() AS db")
        conn.execute("CREATE MATERIALIZED VIEW on_whoami AS SELECT db || '!' AS shout FROM whoami")
        before = [conn.execute(f"SELECT * FROM {v}").fetchall() for v in ("totals", "via_view")]
    key = backup(cli_env)

    restored = run_cli({**cli_env, "ENCLAVE_BACKUP_RESTORE_JOBS": "2"}, "restore", "--object", key)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    with pg.connect(dbname) as conn:
        assert [conn.execute(f"SELECT * FROM {v}").fetchall() for v in ("totals", "via_view")] == before
        assert conn.execute("SELECT db FROM whoami").fetchall() == [(dbname,)]
        assert conn.execute("SELECT shout FROM on_whoami").fetchall() == [(dbname + "!",)]


# --- a server restart during the load -----------------------------------------------------------

def _restart(server) -> None:
    server.stop("fast")  # ends every session, as a failover or an upgrade does
    server.start()


def _loading(event: dict) -> bool:
    return event.get("event") == "restore progress" and event.get("rows", 0) > 0


@pytest.fixture
def restartable():
    """A server of its own: these tests restart it."""
    from devkit.pgserver import start_server
    server = start_server()
    yield server
    server.remove()


def _slow_to_load(server, dbname: str) -> None:
    server.recreate_database(dbname)
    with server.connect(dbname) as conn:
        conn.execute("CREATE TABLE big AS SELECT g AS id, md5(g::text) || repeat('x', 300) AS v "
                     "FROM generate_series(1, 700000) g")


def test_a_server_restart_mid_load_is_survived_by_one_more_attempt(restartable, moto, bucket, cli_env):
    from tests.integration.test_backup_failures import Running
    server, dbname = restartable, "restarts"
    _slow_to_load(server, dbname)
    env = {**cli_env, **server.env(dbname), "ENCLAVE_BACKUP_PROGRESS_SECONDS": "0.2"}
    key = backup(env)
    with server.connect(dbname) as conn:
        conn.execute("DELETE FROM big WHERE id > 10")  # what the restore must undo

    run = Running(env, "restore", "--object", key)
    run.wait_for(_loading)
    _restart(server)
    result = run.finish(timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.event("the connection to the database server was lost during the restore (did it restart?); "
                        "its scratch database was dropped, trying once more")
    assert [e["key"] for e in result.events if e["event"] == "restore complete"] == [key]
    assert not _leftovers(server, dbname) and not [d for d in server.databases() if "_restoring_" in d]
    with server.connect(dbname) as conn:
        assert conn.execute("SELECT count(*) FROM big").fetchone()[0] == 700000


def test_a_second_restart_fails_the_restore_without_leaving_a_scratch_database(restartable, moto, bucket, cli_env):
    from tests.integration.test_backup_failures import Running
    server, dbname = restartable, "restarts"
    _slow_to_load(server, dbname)
    env = {**cli_env, **server.env(dbname), "ENCLAVE_BACKUP_PROGRESS_SECONDS": "0.2"}
    key = backup(env)

    run = Running(env, "restore", "--object", key, "--force")
    run.wait_for(_loading)
    _restart(server)
    run.wait_for(lambda e: e.get("event", "").startswith("the connection to the database server was lost"))
    run.wait_for(_loading)
    _restart(server)
    result = run.finish(timeout=300)
    assert result.returncode == 3, result.stdout + result.stderr
    assert len([e for e in result.events if e["event"] == "scratch database dropped"]) == 2
    assert not [d for d in server.databases() if "_restoring_" in d]
    with server.connect(dbname) as conn:  # the live database untouched
        assert conn.execute("SELECT count(*) FROM big").fetchone()[0] == 700000


# --- extension configuration tables: what the dump wrote against what it restored -----------------

POSTGIS = "/usr/share/postgresql/15/extension/postgis.control"  # Debian's postgresql-15-postgis-3 (setup.sh)


def test_verify_counts_a_postgis_database_s_spatial_ref_sys_like_the_dump_does(pg, moto, bucket, dbname, cli_env):
    import os
    assert os.path.exists(POSTGIS), "PostGIS is missing: run scripts/setup.sh (installs postgresql-15-postgis-3)"
    with pg.connect(dbname) as conn:
        conn.execute("CREATE EXTENSION postgis")
        # One spatial reference system of the user's own: the only row of spatial_ref_sys pg_dump writes.
        conn.execute("INSERT INTO spatial_ref_sys (srid, auth_name, auth_srid, proj4text) "
                     "VALUES (910001, 'local', 1, '+proj=longlat +datum=WGS84 +no_defs')")
        conn.execute("CREATE TABLE places (id int, at geometry(Point, 910001))")
        conn.execute("INSERT INTO places VALUES (1, ST_SetSRID(ST_MakePoint(8.5, 47.4), 910001))")
        shipped = conn.execute("SELECT count(*) FROM spatial_ref_sys").fetchone()[0]
    key = backup(cli_env)
    manifest = _manifest(moto, bucket, key)
    assert manifest["tables"]["public.spatial_ref_sys"] == 1 and manifest["tables"]["public.places"] == 1

    verified = run_cli(cli_env, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    restored = run_cli(cli_env, "restore", "--object", key)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    with pg.connect(dbname) as conn:
        assert conn.execute("SELECT count(*) FROM spatial_ref_sys").fetchone()[0] == shipped
        assert conn.execute("SELECT ST_SRID(at) FROM places").fetchall() == [(910001,)]

    # A user row lost from the configuration table is still found.
    manifest["tables"]["public.spatial_ref_sys"] = 2
    _put_manifest(moto, bucket, key, manifest)
    failed = run_cli(cli_env, "verify")
    assert failed.returncode == 5, failed.stdout + failed.stderr
    assert "public.spatial_ref_sys has 1, manifest says 2" in failed.event("verify failed")["error"]
