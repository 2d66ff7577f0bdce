"""Every name the server accepts backs up and restores; bad settings fail at once; logs stay intact."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import run_cli

NAMES = {
    "63-bytes": "n" * 55 + uuid.uuid4().hex[:8],
    "slash": f"team/a/{uuid.uuid4().hex[:8]}",
    "non-ascii": f"данные_ünï_数据_{uuid.uuid4().hex[:8]}",  # 45 bytes of UTF-8
}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@pytest.fixture
def new_databases(pg):
    """Drops every database a test created, whatever its derived names look like."""
    with pg.connect() as conn:
        before = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    yield
    with pg.connect() as conn:
        for (name,) in conn.execute("SELECT datname FROM pg_database").fetchall():
            if name not in before:
                conn.execute(f"DROP DATABASE {_quote(name)} WITH (FORCE)")


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
def test_any_database_name_backs_up_lists_and_restores(pg, cli_env, new_databases, name):
    with pg.connect() as conn:
        conn.execute(f"CREATE DATABASE {_quote(name)}")
    with pg.connect(name) as conn:
        conn.execute("CREATE TABLE t (v text)")
        conn.execute("INSERT INTO t VALUES ('before')")
    env = {**cli_env, "PGDATABASE": name}
    made = run_cli(env, "backup")
    assert made.returncode == 0, made.stdout + made.stderr
    key = made.event("backup complete")["key"]
    assert key.isascii() and "/" not in key[len("nightly/"):]
    listed = json.loads(run_cli(env, "list", "--json").stdout)
    assert [(b["key"], b["database"]) for b in listed] == [(key, name)]

    with pg.connect(name) as conn:
        conn.execute("UPDATE t SET v = 'after'")
    restored = run_cli(env, "restore", "--object", "latest")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    with pg.connect(name) as conn:
        assert conn.execute("SELECT v FROM t").fetchall() == [("before",)]
    kept = restored.event("restore complete")["previous_database"]
    assert kept and len(kept.encode()) <= 63
    with pg.connect(kept) as conn:  # the previous database is kept under a name that fits
        assert conn.execute("SELECT v FROM t").fetchall() == [("after",)]


@pytest.mark.parametrize("name, value", [
    ("PGPORT", "abc"),
    ("PGSSLMODE", "bogus"),
    ("ENCLAVE_BACKUP_BUCKET", "Not_A/Bucket"),
    ("ENCLAVE_BACKUP_RETRY_SECONDS", "nan"),
    ("ENCLAVE_BACKUP_S3_READ_TIMEOUT", "inf"),
    ("ENCLAVE_BACKUP_PART_SIZE_MIB", "1" + "0" * 30),
])
def test_bad_settings_exit_2_at_once_naming_the_variable(cli_env, moto, bucket, name, value):
    for command in ("backup", "restore", "list"):
        args = ["restore", "--object", "latest"] if command == "restore" else [command]
        result = run_cli({**cli_env, name: value}, *args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert name in result.event(f"{command} failed")["error"]
        assert not [e for e in result.events if "retrying" in e["event"]]  # nothing was tried
    assert not moto.client().list_objects_v2(Bucket=bucket).get("Contents")


@pytest.mark.parametrize("password", ["postgres", "DBNAME"], ids=["common", "equals-database-name"])
def test_short_and_common_passwords_never_mangle_the_logs(pg, cli_env, dbname, password):
    password = dbname if password == "DBNAME" else password
    role = f"r_{uuid.uuid4().hex[:8]}"
    with pg.connect() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'")
    try:
        env = {**cli_env, "PGUSER": role, "PGPASSWORD": password}
        made = run_cli(env, "backup")
        assert made.returncode == 0, made.stdout + made.stderr
        started, done = made.event("backup started"), made.event("backup complete")
        assert started["engine"] == done["engine"] == "postgresql"
        assert done["key"].startswith(f"nightly/{dbname}-") and done["key"] == started["key"]
        assert "[redacted]" not in made.stdout
        listed = run_cli(env, "list")
        assert done["key"] in listed.stdout
        # A wrong password is still never echoed back, whatever it looks like.
        wrong = run_cli({**env, "PGPASSWORD": "x"}, "backup")
        assert wrong.returncode == 3 and "rejected the login" in wrong.event("backup failed")["error"]
    finally:
        with pg.connect() as conn:
            conn.execute(f"DROP ROLE {role}")
