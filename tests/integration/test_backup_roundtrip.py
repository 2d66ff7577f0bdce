"""Back up a database with every shape, restore it by hand as the documentation says, compare."""

from __future__ import annotations

import gzip
import json
import os

import pytest
import zstandard

from devkit.corpus import build_corpus, fingerprint, schema_dump
from tests.conftest import run_cli

DECOMPRESS = {"gzip": gzip.decompress, "zstd": lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b),
              "none": lambda b: b}
EXT = {"gzip": ".sql.gz", "zstd": ".sql.zst", "none": ".sql"}


def _objects(moto, bucket):
    return {o["Key"]: o for o in moto.client().list_objects_v2(Bucket=bucket).get("Contents", [])}


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_backup_restores_by_hand_identically(pg, moto, bucket, dbname, cli_env, compression):
    with pg.connect(dbname) as conn:
        build_corpus(conn)
        before = fingerprint(conn)
    env = {**cli_env, "ENCLAVE_BACKUP_COMPRESSION": compression}

    result = run_cli(env, "backup")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.event("backup complete")

    objects = _objects(moto, bucket)
    key = summary["key"]
    assert key.startswith(f"nightly/{dbname}-") and key.endswith(EXT[compression])
    assert set(objects) == {key, key + ".manifest.json"}
    stored = moto.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    manifest = json.loads(moto.client().get_object(Bucket=bucket, Key=key + ".manifest.json")["Body"].read())
    script = DECOMPRESS[compression](stored)
    assert manifest["stored_size"] == len(stored) == summary["stored_bytes"]
    assert manifest["uncompressed_size"] == len(script)
    import hashlib
    assert manifest["sha256"] == hashlib.sha256(stored).hexdigest()
    assert manifest["database"] == dbname and manifest["engine"] == "postgresql"
    assert manifest["tables"]["public.everything"] == 5
    assert manifest["tables"]["public.measurements_2025"] + manifest["tables"]["public.measurements_2026"] == 401
    assert manifest["tables"]["public.no_columns"] == 2
    assert "public.measurements" not in manifest["tables"]  # partitioned parents hold no rows

    # The documented manual restore: decompress, then psql -v ON_ERROR_STOP=1 into an empty database.
    target = dbname + "_byhand"
    pg.create_database(target)
    replay = pg.psql(target, "-v", "ON_ERROR_STOP=1", input=script, check=False)
    assert replay.returncode == 0, replay.stderr.decode()
    with pg.connect(target) as conn:
        after = fingerprint(conn)
    assert after == before
    env_pg = {**os.environ, **pg.env(dbname)}
    assert schema_dump(env_pg, target) == schema_dump(env_pg, dbname)


def test_list_shows_only_complete_backups_newest_first(moto, bucket, dbname, cli_env):
    first = run_cli(cli_env, "backup")
    assert first.returncode == 0, first.stdout
    client = moto.client()
    # An object without manifest (as a crashed older tool might leave) is not a backup.
    client.put_object(Bucket=bucket, Key=f"nightly/{dbname}-29991231T000000Z.sql.gz", Body=b"partial")
    # Another database's backup under the same prefix is not ours.
    client.put_object(Bucket=bucket, Key="nightly/otherdb-20200101T000000Z.sql.gz", Body=b"x")
    client.put_object(Bucket=bucket, Key="nightly/otherdb-20200101T000000Z.sql.gz.manifest.json", Body=b"{}")
    import time
    time.sleep(1.1)  # keys carry whole seconds
    second = run_cli(cli_env, "backup")
    assert second.returncode == 0, second.stdout

    listed = run_cli(cli_env, "list", "--json")
    assert listed.returncode == 0
    keys = [b["key"] for b in json.loads(listed.stdout)]
    assert keys == [second.event("backup complete")["key"], first.event("backup complete")["key"]]

    table = run_cli(cli_env, "list")
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["KEY", "SIZE", "AGE", "VERIFIED"]
    assert [line.split()[0] for line in lines[1:]] == keys


def test_backup_logs_progress_and_never_secrets(pg, dbname, cli_env, moto):
    with pg.connect(dbname) as conn:
        from devkit.corpus import add_bulk
        add_bulk(conn, 60_000, width=400)
    env = {**cli_env, "ENCLAVE_BACKUP_PROGRESS_SECONDS": "0.1", "ENCLAVE_BACKUP_COMPRESSION": "none"}
    result = run_cli(env, "backup")
    assert result.returncode == 0, result.stdout
    progress = [e for e in result.events if e["event"] == "backup progress"]
    assert progress and all({"sql_bytes", "rows", "stored_bytes", "sql_mb_per_s"} <= set(e) for e in progress)
    summary = result.event("backup complete")
    assert summary["rows"] == 60_000 and summary["tables"] == 1
    for secret in (moto.secret_key, pg.password):
        assert secret not in result.stdout and secret not in result.stderr
