"""The corpus round-trips on every supported PostgreSQL major, by hand and with `enclave-backup restore`."""

from __future__ import annotations

import gzip
import os
import subprocess

import pytest

from devkit.corpus import build_corpus, fingerprint
from devkit.pgserver import SUPPORTED_MAJORS, pg_bin
from tests.conftest import run_cli


def _schema(server, database: str) -> list[str]:
    env = {**os.environ, **server.env(database)}
    out = subprocess.run([server.bin("pg_dump"), "--schema-only"], env=env, check=True, capture_output=True,
                         text=True).stdout
    return [line for line in out.splitlines() if not line.startswith(("\\restrict", "\\unrestrict", "-- Dumped"))]


def _state(server, database: str) -> tuple[dict, list[str]]:
    with server.connect(database) as conn:
        return fingerprint(conn), _schema(server, database)


@pytest.mark.parametrize("major", SUPPORTED_MAJORS)
def test_corpus_round_trips_on_every_supported_major(servers, moto, bucket, cli_env, major):
    server = servers(major)
    server.create_database("malbork")
    with server.connect("malbork") as conn:
        build_corpus(conn)
    before = _state(server, "malbork")
    env = {**cli_env, **server.env("malbork")}

    backup = run_cli(env, "backup")
    assert backup.returncode == 0, backup.stdout + backup.stderr
    started = backup.event("pg_dump started")
    assert f"/{major}/" in started["pg_dump"] or (major == 15 and "/15/" in started["pg_dump"])
    key = backup.event("backup complete")["key"]
    script = gzip.decompress(moto.client().get_object(Bucket=bucket, Key=key)["Body"].read())

    # By hand, with that major's own psql, as the README says.
    server.create_database("byhand")
    replay = server.psql("byhand", "-v", "ON_ERROR_STOP=1", input=script, check=False)
    assert replay.returncode == 0, replay.stderr.decode()
    assert _state(server, "byhand") == before

    with server.connect("malbork") as conn:
        conn.execute("DELETE FROM public.counters")  # a change the restore must undo
    restored = run_cli(env, "restore", "--object", key)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert _state(server, "malbork") == before


def test_a_backup_of_a_newer_server_is_refused_before_anything_changes(servers, moto, bucket, cli_env):
    newer, older = servers(17), servers(16)
    for server in (newer, older):
        server.create_database("refuse_me")
        with server.connect("refuse_me") as conn:
            conn.execute("CREATE TABLE t (n integer)")
            conn.execute("INSERT INTO t VALUES (1)" if server is newer else "INSERT INTO t VALUES (2)")
    backup = run_cli({**cli_env, **newer.env("refuse_me")}, "backup")
    assert backup.returncode == 0, backup.stdout + backup.stderr

    result = run_cli({**cli_env, **older.env("refuse_me")}, "restore", "--object", "latest")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "PostgreSQL 17 server; this server runs PostgreSQL 16" in result.event("restore failed")["error"]
    with older.connect("refuse_me") as conn:
        assert conn.execute("SELECT n FROM t").fetchall() == [(2,)]
    assert sorted(d for d in older.databases() if d.startswith("refuse_me")) == ["refuse_me"]


def test_a_script_of_a_newer_pg_dump_restores_into_its_own_server(servers, moto, bucket, cli_env):
    """pg_dump 18 of a PostgreSQL 16 server writes SET transaction_timeout, which 16 lacks: skipped, said."""
    server = servers(16)
    server.create_database("newer_dump")
    with server.connect("newer_dump") as conn:
        conn.execute("CREATE TABLE t (n integer)")
        conn.execute("INSERT INTO t VALUES (1), (2)")
    env = {**cli_env, **server.env("newer_dump"), "ENCLAVE_BACKUP_PG_DUMP": pg_bin("pg_dump", 18)}
    assert run_cli(env, "backup").returncode == 0
    with server.connect("newer_dump") as conn:
        conn.execute("DELETE FROM t")
    result = run_cli(env, "restore", "--object", "latest")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "transaction_timeout" in result.event("skipped a setting this server does not know")["statement"]
    with server.connect("newer_dump") as conn:
        assert conn.execute("SELECT n FROM t ORDER BY n").fetchall() == [(1,), (2,)]
