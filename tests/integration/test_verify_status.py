"""`enclave-backup verify` and `status` against real PostgreSQL and moto S3 (auth mode)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from devkit.corpus import add_bulk, build_corpus, fingerprint
from devkit.seeding import copy_backup_at, keys
from devkit.signingkeys import signed
from tests.conftest import SIGNING_KEYS, backup as _backup, run_cli


def _record(moto, bucket: str, key: str) -> dict:
    return json.loads(moto.client().get_object(Bucket=bucket, Key=key + ".verify.json")["Body"].read())


class LiveDatabaseWatch:
    """Proves verify never touches the live database: nobody can connect to it while verify runs,
    a client stays connected throughout, and its contents are the same afterwards."""

    def __init__(self, pg, dbname: str):
        self.pg, self.dbname = pg, dbname

    def __enter__(self):
        with self.pg.connect(self.dbname) as conn:
            self.before = fingerprint(conn)
        self.client = self.pg.connect(self.dbname)
        self.client_pid = self.client.execute("SELECT pg_backend_pid()").fetchone()[0]
        with self.pg.connect() as conn:
            conn.execute(f'ALTER DATABASE "{self.dbname}" ALLOW_CONNECTIONS false')
        return self

    def __exit__(self, *exc):
        with self.pg.connect() as conn:
            conn.execute(f'ALTER DATABASE "{self.dbname}" ALLOW_CONNECTIONS true')
            alive = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND datname = %s",
                                 (self.client_pid, self.dbname)).fetchone()[0]
            leftovers = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                     (self.dbname + "\\_%",)).fetchall()
        assert self.client.execute("SELECT 1").fetchone() == (1,)  # never waited for or ended
        self.client.close()
        assert alive == 1
        assert leftovers == []  # scratch database dropped, nothing renamed
        with self.pg.connect(self.dbname) as conn:
            assert fingerprint(conn) == self.before


@pytest.fixture
def corpus_backup(pg, dbname, cli_env):
    with pg.connect(dbname) as conn:
        build_corpus(conn)
        add_bulk(conn, 2000)
    return _backup(cli_env)


def test_verify_passes_on_a_good_backup_without_touching_the_live_database(pg, moto, bucket, dbname, cli_env,
                                                                         corpus_backup):
    manifest = json.loads(moto.client().get_object(Bucket=bucket, Key=corpus_backup + ".manifest.json")["Body"].read())
    with LiveDatabaseWatch(pg, dbname):
        result = run_cli(cli_env, "verify")
        assert result.returncode == 0, result.stdout + result.stderr
    done = result.event("verify complete")
    assert done["key"] == corpus_backup and done["tables"] == len(manifest["tables"])
    assert done["rows"] == sum(manifest["tables"].values()) > 2000
    record = _record(moto, bucket, corpus_backup)
    assert record["passed"] is True and record["sha256"] == manifest["sha256"] and record["exit_code"] == 0
    assert record["rows"] == done["rows"]

    listed = run_cli(cli_env, "list")
    assert "passed " + record["verified_at"] in listed.stdout
    (entry,) = json.loads(run_cli(cli_env, "list", "--json").stdout)
    assert entry["verified"] is True and entry["verified_at"] == record["verified_at"]


def _flip(moto, bucket, key):
    s3 = moto.client()
    body = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    # Same metadata: the damage is to the bytes alone, not to the object's identity.
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(body), Metadata=s3.head_object(Bucket=bucket, Key=key)["Metadata"])


def _miscount(moto, bucket, key):
    s3 = moto.client()
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=key + ".manifest.json")["Body"].read())
    manifest["tables"]["public.bulk"] += 1
    # Signed, as a faulty backup Job would: the count itself must give it away.
    s3.put_object(Bucket=bucket, Key=key + ".manifest.json", Body=signed(manifest, SIGNING_KEYS))


def _truncate(moto, bucket, key):
    s3 = moto.client()
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=body[: len(body) - 100],
                  Metadata=s3.head_object(Bucket=bucket, Key=key)["Metadata"])


@pytest.mark.parametrize("damage, says", [
    (_flip, r"gzip stream is corrupt|does not match its manifest"),
    (_truncate, r"truncated"),
    (_miscount, r"row counts differ from the manifest in 1 table\(s\): public.bulk has 2000, manifest says 2001"),
], ids=["byte-flipped", "truncated", "row-count"])
def test_verify_fails_with_exit_5_on_a_damaged_backup_without_touching_the_live_database(
        pg, moto, bucket, dbname, cli_env, corpus_backup, damage, says):
    import re
    damage(moto, bucket, corpus_backup)
    with LiveDatabaseWatch(pg, dbname):
        result = run_cli(cli_env, "verify", "--object", corpus_backup)
        assert result.returncode == 5, result.stdout + result.stderr
    assert re.search(says, result.event("verify failed")["error"])
    record = _record(moto, bucket, corpus_backup)
    assert record["passed"] is False and record["exit_code"] == 5 and re.search(says, record["error"])

    status = run_cli(cli_env, "status", "--json")
    assert status.returncode == 0
    last = json.loads(status.stdout)["last_verification"]
    assert last["passed"] is False and last["key"] == corpus_backup
    assert "FAILED" in run_cli(cli_env, "status").stdout


def test_verify_drops_scratch_databases_of_killed_runs_but_not_of_running_ones(pg, dbname, cli_env, corpus_backup):
    from enclave_backup.clock import utcnow
    # Running verify runs hold this second's name and the next few: this run must take another.
    now = utcnow()
    stale = f"{dbname}_verify_20000101000000"
    running = [f"{dbname}_verify_{now + timedelta(seconds=s):%Y%m%d%H%M%S}" for s in range(3)]
    for name in (stale, *running):
        pg.create_database(name)
    result = run_cli({**cli_env, "ENCLAVE_BACKUP_READER_MARKER_SECONDS": "3600"}, "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.event("dropped the scratch database of an interrupted verify")["scratch"] == stale
    assert result.event("verify scratch database created")["scratch"] not in running
    names = set(pg.databases())
    assert stale not in names and set(running) <= names


def test_status_exit_codes_and_fields(pg, moto, bucket, dbname, cli_env):
    none = run_cli(cli_env, "status", "--max-age", "1d")
    assert none.returncode == 1 and "no complete backup exists" in none.stdout
    assert run_cli(cli_env, "status").returncode == 0  # nothing to compare without --max-age

    key = _backup(cli_env)
    fresh = run_cli(cli_env, "status", "--max-age", "1h", "--json")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    data = json.loads(fresh.stdout)
    assert data["ok"] is True and data["newest"]["key"] == key and data["backups"] == 1
    assert data["newest"]["size"] > 0 and 0 <= data["newest"]["age_seconds"] < 3600
    assert data["last_verification"] is None and data["max_age_seconds"] == 3600

    # Only a three-day-old backup left: too old for 2 days, fine for 1w.
    s3 = moto.client()
    old = copy_backup_at(s3, bucket, key, datetime.now(timezone.utc) - timedelta(days=3))
    for k in (key, key + ".manifest.json"):
        s3.delete_object(Bucket=bucket, Key=k)
    stale = run_cli(cli_env, "status", "--max-age", "2d")
    assert stale.returncode == 1 and "more than --max-age 172800s" in stale.stdout and old in stale.stdout
    assert run_cli(cli_env, "status", "--max-age", "1w").returncode == 0

    bad = run_cli(cli_env, "status", "--max-age", "soon")
    assert bad.returncode == 2 and "is not a duration" in bad.event("status failed")["error"]
    assert keys(s3, bucket) == {old, old + ".manifest.json"}  # status only reads
