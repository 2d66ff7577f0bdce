"""`enclave-backup restore` against a real PostgreSQL server and moto S3 in auth mode."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import signal
import subprocess
import time

import pytest

from devkit.corpus import add_bulk, build_corpus, fingerprint, schema_dump
from devkit.pgserver import pg_bin
from devkit.signingkeys import signed
from enclave_backup.manifest import encode_metadata, header_line
from tests.conftest import SIGNING_KEYS, backup as _backup, run_cli, spawn_cli


def _fp(pg, database: str) -> dict:
    with pg.connect(database) as conn:
        return fingerprint(conn)


def _restore_dbs(pg, dbname: str) -> tuple[list[str], list[str]]:
    """(scratch databases, kept previous databases) of `dbname`."""
    names = sorted(pg.databases())
    return ([n for n in names if n.startswith(dbname + "_restoring_")],
            [n for n in names if n.startswith(dbname + "_pre_restore_")])


def _get(moto, bucket: str, key: str) -> bytes:
    return moto.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def _put(moto, bucket: str, key: str, body: bytes, metadata: dict | None = None) -> None:
    moto.client().put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata or {})


def _no_secrets(result, pg, moto) -> None:
    for secret in (pg.password, moto.secret_key):
        assert secret not in result.stdout and secret not in result.stderr


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_round_trip_restores_rows_and_schema_and_keeps_the_previous_database(pg, moto, dbname, cli_env,
                                                                            compression):
    with pg.connect(dbname) as conn:
        build_corpus(conn)
        add_bulk(conn, 3000)
    env_pg = {**os.environ, **pg.env(dbname)}
    at_backup, schema_at_backup = _fp(pg, dbname), schema_dump(env_pg, dbname)
    key = _backup({**cli_env, "ENCLAVE_BACKUP_COMPRESSION": compression})

    with pg.connect(dbname) as conn:  # changes after the backup, which the restore must undo
        conn.execute("DELETE FROM public.counters WHERE id < 50")
        conn.execute("DROP MATERIALIZED VIEW public.mood_counts")
        conn.execute("CREATE TABLE public.added_later (x int)")
    changed = _fp(pg, dbname)

    result = run_cli(cli_env, "restore", "--object", key)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _fp(pg, dbname) == at_backup
    assert schema_dump(env_pg, dbname) == schema_at_backup

    summary = result.event("restore complete")
    manifest = json.loads(_get(moto, cli_env["ENCLAVE_BACKUP_BUCKET"], key + ".manifest.json"))
    assert summary["key"] == key and summary["stored_bytes"] == manifest["stored_size"]
    assert summary["sql_bytes"] == manifest["uncompressed_size"]
    assert summary["tables"] == len(manifest["tables"])
    assert summary["rows"] == sum(manifest["tables"].values())
    scratch, previous = _restore_dbs(pg, dbname)
    assert scratch == [] and previous == [summary["previous_database"]]
    assert _fp(pg, previous[0]) == changed  # the data from before the restore is kept, renamed
    assert f'ALTER DATABASE "{previous[0]}" RENAME TO "{dbname}"' in summary["rollback"]
    _no_secrets(result, pg, moto)


def _upload_script(moto, bucket: str, dbname: str, script: bytes, compressed: bool = True,
                   stored: bytes | None = None) -> str:
    """A hand-made backup: `script` (gzip'ed) with its manifest; `stored` replaces the object's bytes.

    It carries the identity our backups carry (header line, metadata, manifest), as this
    installation ("default", the program's default) would have written it.
    """
    identity = {"database": dbname, "engine": "postgresql", "installation": "default", "run_id": "feedc0de" * 2}
    script = header_line(identity) + script
    if stored is not None and not compressed:
        stored = header_line(identity) + stored
    good = gzip.compress(script) if compressed else script
    key = f"nightly/{dbname}-20250102T030405Z.sql" + (".gz" if compressed else "")
    manifest = {"key": key, "database": dbname, "engine": "postgresql", "server_version": "15",
                "started_at": "2025-01-02T03:04:05Z", "finished_at": "2025-01-02T03:04:06Z",
                "compression": "gzip" if compressed else "none", "stored_size": len(good), "sha256": hashlib.sha256(good).hexdigest(),
                "uncompressed_size": len(script), "tables": {}, "format_version": 1,
                "installation": identity["installation"], "run_id": identity["run_id"]}
    _put(moto, bucket, key, good if stored is None else stored, encode_metadata(identity))
    _put(moto, bucket, key + ".manifest.json", signed(manifest, SIGNING_KEYS))
    return key


def test_plain_pg_dump_output_replays(pg, moto, bucket, dbname, cli_env):
    """pg_dump's own plain output (with \\restrict) restores like our backups."""
    with pg.connect(dbname) as conn:
        build_corpus(conn)
    before = _fp(pg, dbname)
    env_pg = {**os.environ, **pg.env(dbname)}
    script = subprocess.run([pg_bin("pg_dump"), "-d", dbname], env=env_pg, check=True,
                            capture_output=True).stdout
    assert b"\\restrict " in script
    key = _upload_script(moto, bucket, dbname, script)
    with pg.connect(dbname) as conn:
        conn.execute("TRUNCATE public.audited")

    result = run_cli(cli_env, "restore", "--object", key)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _fp(pg, dbname) == before


BROKEN = b"-- header\nCREATE TABLE a (x int);\n\nINSERT INTO a VALUES (1);\nINSERT INTO nowhere VALUES (2);\n" + \
    b"CREATE TABLE b (y int);\n" + b"".join(b"-- padding line %d\n" % i for i in range(3000))


def test_the_first_failing_statement_is_named_and_nothing_changes(pg, moto, bucket, dbname, cli_env):
    with pg.connect(dbname) as conn:
        conn.execute("CREATE TABLE live (v text)")
    live = _fp(pg, dbname)
    key = _upload_script(moto, bucket, dbname, BROKEN)
    result = run_cli(cli_env, "restore", "--object", key)
    assert result.returncode == 3, result.stdout + result.stderr
    error = result.event("restore failed")["error"]
    assert "the statement at line 6 failed" in error and 'relation "nowhere" does not exist' in error
    assert "it begins: INSERT INTO nowhere VALUES (2)" in error
    assert _fp(pg, dbname) == live and _restore_dbs(pg, dbname) == ([], [])


def test_a_damaged_object_is_refused_before_any_statement_runs(pg, moto, bucket, dbname, cli_env):
    """Damage after the first statements: the whole object is checked before the first one runs."""
    script = BROKEN.replace(b"INTO nowhere", b"INTO a")
    damaged = script.replace(b"INSERT INTO a VALUES (2)", b"INSERT INTO a VALUEZ (2)")
    key = _upload_script(moto, bucket, dbname, script, compressed=False, stored=damaged)
    with pg.connect(dbname) as conn:
        conn.execute("CREATE TABLE live (v text)")
    live = _fp(pg, dbname)
    result = run_cli(cli_env, "restore", "--object", key)
    assert result.returncode == 5, result.stdout + result.stderr
    error = result.event("restore failed")["error"]
    assert "does not match its manifest" in error and "nothing was run or changed" in error
    assert result.event("restore failed") and not [e for e in result.events if e["event"] == "scratch database created"]
    assert _fp(pg, dbname) == live and _restore_dbs(pg, dbname) == ([], [])


def test_latest_picks_the_newest_complete_backup(pg, moto, bucket, dbname, cli_env):
    with pg.connect(dbname) as conn:
        conn.execute("CREATE TABLE t (v text)")
        conn.execute("INSERT INTO t VALUES ('first')")
    first = _backup(cli_env)
    time.sleep(1.1)  # keys carry whole seconds
    with pg.connect(dbname) as conn:
        conn.execute("INSERT INTO t VALUES ('second')")
    at_second = _fp(pg, dbname)
    second = _backup(cli_env)
    assert second > first
    # Newer-looking objects without a manifest are not backups and must be passed over.
    _put(moto, bucket, f"nightly/{dbname}-29991231T235959Z.sql.gz", gzip.compress(b"DROP TABLE t;\n"))
    with pg.connect(dbname) as conn:
        conn.execute("INSERT INTO t VALUES ('after both')")

    result = run_cli(cli_env, "restore", "--object", "latest")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.event("restore complete")["key"] == second
    assert _fp(pg, dbname) == at_second


def _metadata(moto, bucket, key) -> dict:
    return moto.client().head_object(Bucket=bucket, Key=key)["Metadata"]


def _corrupt_flip(moto, bucket, key):
    """Damage at rest: the bytes change, the object's metadata stays."""
    data = bytearray(_get(moto, bucket, key))
    data[len(data) // 2] ^= 0x20
    _put(moto, bucket, key, bytes(data), _metadata(moto, bucket, key))


def _corrupt_truncate(moto, bucket, key):
    _put(moto, bucket, key, _get(moto, bucket, key)[: -100], _metadata(moto, bucket, key))


def _corrupt_no_manifest(moto, bucket, key):
    moto.client().delete_object(Bucket=bucket, Key=key + ".manifest.json")


@pytest.mark.parametrize("damage, compression, exit_code, says", [
    (_corrupt_flip, "gzip", 5, r"gzip stream is corrupt|does not match its manifest"),
    (_corrupt_flip, "none", 5, r"does not match its manifest \(\d+ bytes with sha256"),
    (_corrupt_truncate, "gzip", 5, r"truncated"),
    (_corrupt_no_manifest, "gzip", 5, r"has no manifest"),
    (lambda moto, bucket, key: moto.client().delete_object(Bucket=bucket, Key=key), "gzip", 4, r"no such object"),
], ids=["byte-flipped-gzip", "byte-flipped-plain", "truncated", "manifest-deleted", "object-deleted"])
def test_a_damaged_backup_fails_and_leaves_the_live_database_alone(pg, moto, bucket, dbname, cli_env,
                                                                   damage, compression, exit_code, says):
    with pg.connect(dbname) as conn:
        build_corpus(conn)
        add_bulk(conn, 2000)
    key = _backup({**cli_env, "ENCLAVE_BACKUP_COMPRESSION": compression})
    with pg.connect(dbname) as conn:
        conn.execute("INSERT INTO public.child VALUES (40, 2)")
    live = _fp(pg, dbname)
    damage(moto, bucket, key)

    result = run_cli(cli_env, "restore", "--object", key)
    assert result.returncode == exit_code, result.stdout + result.stderr
    failed = result.event("restore failed")
    assert failed["exit_code"] == exit_code and re.search(says, failed["error"]), failed
    assert _fp(pg, dbname) == live
    assert _restore_dbs(pg, dbname) == ([], [])
    _no_secrets(result, pg, moto)


def test_another_databases_backup_is_refused(pg, moto, bucket, dbname, cli_env):
    other = dbname + "_other"
    pg.create_database(other)
    key = _backup({**cli_env, **pg.env(other)})
    with pg.connect(dbname) as conn:
        conn.execute("CREATE TABLE mine (x int)")
    live = _fp(pg, dbname)

    result = run_cli(cli_env, "restore", "--object", key)
    assert result.returncode == 5, result.stdout + result.stderr
    assert f"backup of database '{other}'" in result.event("restore failed")["error"]
    assert _fp(pg, dbname) == live and _restore_dbs(pg, dbname) == ([], [])


def test_sigkill_mid_stream_then_the_next_run_cleans_up_and_succeeds(pg, dbname, cli_env):
    with pg.connect(dbname) as conn:
        add_bulk(conn, 60_000, width=400)
    at_backup = _fp(pg, dbname)
    key = _backup(cli_env)
    with pg.connect(dbname) as conn:
        conn.execute("DELETE FROM public.bulk WHERE id > 100")
    live = _fp(pg, dbname)

    env = {**cli_env, "ENCLAVE_BACKUP_PROGRESS_SECONDS": "0.05", "PYTHONUNBUFFERED": "1"}
    proc = spawn_cli(env, "restore", "--object", key)
    try:
        for line in proc.stdout:  # kill once rows are flowing into the scratch database
            if '"restore progress"' in line and json.loads(line)["rows"] > 0:
                break
        else:
            pytest.fail("the restore ended before it could be killed: " + proc.stderr.read())
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert _fp(pg, dbname) == live
    scratch, _ = _restore_dbs(pg, dbname)
    assert len(scratch) == 1  # what a killed run leaves

    result = run_cli(cli_env, "restore", "--object", key)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.event("dropped the scratch database of an interrupted restore")["scratch"] == scratch[0]
    assert _fp(pg, dbname) == at_backup
    assert _restore_dbs(pg, dbname)[0] == []


def test_the_same_restore_twice_is_a_no_op_unless_forced(pg, dbname, cli_env):
    with pg.connect(dbname) as conn:
        conn.execute("CREATE TABLE t (v text)")
        conn.execute("INSERT INTO t VALUES ('backed up')")
    at_backup = _fp(pg, dbname)
    key = _backup(cli_env)

    first = run_cli(cli_env, "restore", "--object", key)
    assert first.returncode == 0, first.stdout + first.stderr
    with pg.connect(dbname) as conn:
        conn.execute("INSERT INTO t VALUES ('written after the restore')")
    after_writes = _fp(pg, dbname)

    again = run_cli(cli_env, "restore", "--object", key)  # e.g. helm upgrade --reuse-values
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.event("restore skipped: the database already holds this backup")["key"] == key
    assert _fp(pg, dbname) == after_writes
    assert len(_restore_dbs(pg, dbname)[1]) == 1

    forced = run_cli(cli_env, "restore", "--object", key, "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert _fp(pg, dbname) == at_backup
    scratch, previous = _restore_dbs(pg, dbname)
    # restore.keepPrevious defaults to 1: the older previous database was dropped.
    assert scratch == [] and previous == [forced.event("restore complete")["previous_database"]]
    assert _fp(pg, previous[0]) == after_writes
    assert forced.event("restore complete")["dropped_previous"] == [first.event("restore complete")["previous_database"]]


def _wait_for_line(proc, text: str) -> None:
    for line in proc.stdout:
        if text in line:
            return
    pytest.fail(f"no {text!r} in the output: {proc.stderr.read()}")


def test_restore_waits_for_a_client_and_proceeds_when_it_leaves(pg, dbname, cli_env):
    with pg.connect(dbname) as conn:
        conn.execute("CREATE TABLE t (v text)")
    key = _backup(cli_env)
    client = pg.connect(dbname)
    env = {**cli_env, "ENCLAVE_BACKUP_RESTORE_WAIT_FOR_CLIENTS_SECONDS": "30", "PYTHONUNBUFFERED": "1"}
    proc = spawn_cli(env, "restore", "--object", key)
    try:
        _wait_for_line(proc, "waiting for clients to leave the live database")
        time.sleep(0.5)
        assert proc.poll() is None  # still waiting while the client is there
        client.close()
        out, err = proc.communicate(timeout=60)
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    assert '"restore complete"' in out
    assert len(_restore_dbs(pg, dbname)[1]) == 1


def test_restore_fails_clearly_when_a_client_stays(pg, dbname, cli_env):
    with pg.connect(dbname) as conn:
        conn.execute("CREATE TABLE t (v text)")
    key = _backup(cli_env)
    with pg.connect(dbname) as client:
        client.execute("INSERT INTO t VALUES ('live')")
        live = fingerprint(client)
        env = {**cli_env, "ENCLAVE_BACKUP_RESTORE_WAIT_FOR_CLIENTS_SECONDS": "1"}
        result = run_cli(env, "restore", "--object", key)
        assert result.returncode == 3, result.stdout + result.stderr
        error = result.event("restore failed")["error"]
        assert "still connected" in error and "restore.terminateClients" in error
        assert fingerprint(client) == live  # the client's connection was never disturbed
    assert _restore_dbs(pg, dbname) == ([], [])


def test_restore_can_end_the_sessions_of_clients(pg, dbname, cli_env):
    with pg.connect(dbname) as conn:
        conn.execute("CREATE TABLE t (v text)")
    key = _backup(cli_env)
    client = pg.connect(dbname)
    try:
        env = {**cli_env, "ENCLAVE_BACKUP_RESTORE_WAIT_FOR_CLIENTS_SECONDS": "0.5",
               "ENCLAVE_BACKUP_RESTORE_TERMINATE_CLIENTS": "true"}
        result = run_cli(env, "restore", "--object", key)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.event("ended the sessions of clients of the live database")["clients"] == 1
        with pytest.raises(Exception):
            client.execute("SELECT 1")
    finally:
        client.close()


def test_an_autovacuum_worker_in_the_live_database_is_not_waited_for(pg, dbname, cli_env):
    """Right after a restore autovacuum visits the new tables; its worker is no client, and the
    server ends it itself to rename the database."""
    with pg.connect(dbname) as conn:
        # Dead rows to vacuum, and a vacuum that crawls (one page per 100 ms): the worker stays.
        conn.execute("CREATE TABLE slow (v text) WITH (autovacuum_vacuum_threshold = 0, "
                     "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_cost_delay = 100, "
                     "autovacuum_vacuum_cost_limit = 1)")
        conn.execute("INSERT INTO slow SELECT repeat('x', 200) FROM generate_series(1, 50000)")
    key = _backup(cli_env)
    with pg.connect(dbname) as conn:
        conn.execute("DELETE FROM slow")
    with pg.connect() as admin:
        admin.execute("ALTER SYSTEM SET autovacuum_naptime = 1")
        admin.execute("SELECT pg_reload_conf()")
        try:
            deadline = time.monotonic() + 60
            while not admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                                    "AND backend_type = 'autovacuum worker'", (dbname,)).fetchone()[0]:
                assert time.monotonic() < deadline, "no autovacuum worker came to the database"
                time.sleep(0.2)
            env = {**cli_env, "ENCLAVE_BACKUP_RESTORE_WAIT_FOR_CLIENTS_SECONDS": "3"}
            result = run_cli(env, "restore", "--object", key)
        finally:
            admin.execute("ALTER SYSTEM RESET autovacuum_naptime")
            admin.execute("SELECT pg_reload_conf()")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [e for e in result.events if e.get("event") == "waiting for clients to leave the live database"]
    with pg.connect(dbname) as conn:
        assert conn.execute("SELECT count(*) FROM slow").fetchone()[0] == 50000


def test_a_damaged_segment_stops_the_replay_before_its_bytes_run(pg, moto, bucket, dbname, cli_env):
    """Read once: each 16 MiB segment is checked against the signed manifest before it is replayed."""
    with pg.connect(dbname) as conn:
        conn.execute("CREATE TABLE big (n integer, v text)")
        conn.execute("INSERT INTO big SELECT i, repeat(md5(i::text), 16) FROM generate_series(1, 40000) i")
    key = _backup({**cli_env, "ENCLAVE_BACKUP_COMPRESSION": "none"})
    manifest = json.loads(_get(moto, bucket, key + ".manifest.json"))
    assert manifest["segments"]["size"] == 16 << 20 and len(manifest["segments"]["sha256"]) == 2

    result = run_cli(cli_env, "restore", "--object", key, "--force")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.event("the object's segments are checked as it is replayed, each before any of its bytes runs")
    assert not [e for e in result.events if e["event"] == "object matches its manifest"]  # no second read

    with pg.connect(dbname) as conn:
        conn.execute("INSERT INTO big VALUES (0, 'written since')")
    live = _fp(pg, dbname)
    data = bytearray(_get(moto, bucket, key))
    data[(16 << 20) + 1000] ^= 0x01  # in a row of the second segment
    _put(moto, bucket, key, bytes(data), _metadata(moto, bucket, key))
    result = run_cli(cli_env, "restore", "--object", key, "--force")
    assert result.returncode == 5, result.stdout + result.stderr
    error = result.event("restore failed")["error"]
    assert "segment 2 of 2" in error and "none of these bytes was run" in error, error
    assert _fp(pg, dbname) == live
    assert _restore_dbs(pg, dbname)[0] == []  # the scratch database is gone
