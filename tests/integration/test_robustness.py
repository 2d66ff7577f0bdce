"""One odd object, clock or retry never deletes a good backup or stops every command.

Real PostgreSQL and moto S3 (auth mode) throughout. Where a fault cannot be caused for real
(a response lost after the store acted on the request, a store that stalls) a loopback proxy
in front of moto causes it; each such test says so.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from devkit.seeding import copy_backup_at, key_at, keys
from enclave_backup.manifest import installation_tag
from tests.conftest import backup, run_cli


def _listed(result) -> list[dict]:
    """The JSON array `list --json` prints after any log lines."""
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    return json.loads("\n".join(lines[lines.index("["):]) if "[" in lines else result.stdout)


def _events(result, name: str) -> list[dict]:
    return [e for e in result.events if e.get("event") == name]


def _copy_as(s3, bucket: str, source: str, key: str, **manifest_fields) -> str:
    """The real backup's bytes and manifest under another key (a foreign or hand-made object)."""
    s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": source})
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=source + ".manifest.json")["Body"].read())
    manifest.update(key=key, **manifest_fields)
    s3.put_object(Bucket=bucket, Key=key + ".manifest.json", Body=json.dumps(manifest).encode())
    return key


# --- 5. a key with an impossible date is foreign, not a crash -------------------------------------

def test_a_key_with_an_impossible_date_is_skipped_by_every_command(moto, bucket, cli_env, dbname):
    real = backup(cli_env)
    s3 = moto.client()
    odd = _copy_as(s3, bucket, real, f"nightly/{dbname}-20261399T999999Z-0123456789abcdef.sql.gz")
    # A pending upload under that name: the next backup's stale-upload clean-up lists it.
    s3.create_multipart_upload(Bucket=bucket, Key=odd)
    s3.create_multipart_upload(Bucket=bucket, Key=odd + ".part.sql.gz")  # no backup's shape at all

    result = run_cli(cli_env, "list")
    assert result.returncode == 0, result.stdout + result.stderr
    assert real in result.stdout
    assert [e["key"] for e in _events(result, "skipped an object whose key is no backup's (its time cannot be "
                                                "read): not this tool's, left untouched")] == [odd]
    assert [b["key"] for b in _listed(run_cli(cli_env, "list", "--json"))] == [real]
    status = run_cli(cli_env, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    restored = run_cli(cli_env, "restore", "--object", "latest")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert restored.event("restore complete")["key"] == real

    time.sleep(1.5)
    made = run_cli({**cli_env, "ENCLAVE_BACKUP_STALE_UPLOAD_SECONDS": "1"}, "backup")
    assert made.returncode == 0, made.stdout + made.stderr
    left = {u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}
    assert left == {odd, odd + ".part.sql.gz"}  # foreign: never aborted
    assert odd in keys(s3, bucket)  # and the object itself untouched


# --- 3. the stale-upload clean-up stays inside its own database -------------------------------------

def test_stale_upload_clean_up_leaves_a_database_whose_name_extends_ours_alone(moto, bucket, cli_env, dbname):
    s3 = moto.client()
    old = datetime.now(timezone.utc) - timedelta(days=3)
    run = installation_tag("default") + "0badc0de"  # this installation's runs: only the database differs
    ours = key_at("nightly/", dbname, old, run_id=run)
    theirs = key_at("nightly/", dbname + "-x", old, run_id=run)  # database `<ours>-x`: same key prefix
    for key in (ours, theirs):
        s3.create_multipart_upload(Bucket=bucket, Key=key)
    time.sleep(1.5)
    made = run_cli({**cli_env, "ENCLAVE_BACKUP_STALE_UPLOAD_SECONDS": "1"}, "backup")
    assert made.returncode == 0, made.stdout + made.stderr
    assert [e["key"] for e in _events(made, "aborted a stale multipart upload")] == [ours]
    left = [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    assert left == [theirs]
