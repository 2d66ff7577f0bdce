"""`enclave-backup prune` and `backup --prune` against real PostgreSQL and moto S3 (auth mode)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest

from devkit.motoserver import MotoServer
from devkit.seeding import copy_backup_at, key_at, keys
from enclave_backup.manifest import parse_key
from enclave_backup.retention import Rules, decide
from tests.conftest import SIGNING_KEYS, backup as _backup, run_cli, spawn_cli

NOW = datetime.now(timezone.utc)


def _seed(moto, env: dict, ages_hours: list[float]) -> tuple[str, list[str]]:
    """A real backup (the newest) plus copies of it started `ages_hours` ago, newest first."""
    real = _backup(env)
    s3 = moto.client()
    copies = [copy_backup_at(s3, env["ENCLAVE_BACKUP_BUCKET"], real, NOW - timedelta(hours=h)) for h in ages_hours]
    return real, copies


def _complete(moto, bucket: str) -> list[str]:
    """Backups `list` shows, newest first."""
    stored = keys(moto.client(), bucket)
    return [k for k in sorted(stored, reverse=True) if k.endswith(".sql.gz") and k + ".manifest.json" in stored]


AGES = sorted([1 + 24 * d for d in range(0, 75, 6)] + [13 + 24 * d for d in range(4)])  # hours, newest first


@pytest.mark.parametrize("rules, expect", [
    ({"KEEP_LAST": "3"}, lambda real, c: [real, c[0], c[1]]),
    ({"KEEP_DAYS": "4"}, lambda real, c: [real, *(k for k, h in zip(c, AGES) if h < 96)]),
    ({"KEEP_DAILY": "3"}, None),
    ({"KEEP_WEEKLY": "2", "KEEP_MONTHLY": "3"}, None),
    ({"KEEP_LAST": "5", "KEEP_DAYS": "2"}, lambda real, c: [real, *c[:4]]),  # KeepDays adds none: 3 copies < 48h
], ids=["last", "days", "daily", "weekly+monthly", "last+days"])
def test_prune_keeps_exactly_what_each_rule_says(moto, bucket, cli_env, rules, expect):
    real, copies = _seed(moto, cli_env, AGES)
    env = {**cli_env, **{f"ENCLAVE_BACKUP_{k}": v for k, v in rules.items()}}
    result = run_cli(env, "prune")
    assert result.returncode == 0, result.stdout + result.stderr

    if expect is None:  # calendar rules: the decision over the same (key, time) pairs
        class B:
            def __init__(self, key, started):
                self.key, self.started = key, started
        real_started = parse_key(real, real[:real.rindex("/") + 1] if "/" in real else "")[1]
        seeded = [B(real, real_started)] + [B(k, NOW - timedelta(hours=h)) for k, h in zip(copies, AGES)]
        r = Rules(**{f"keep_{k.lower().split('_')[1]}": int(v) for k, v in rules.items()})
        wanted = [d.key for d in decide(seeded, r, datetime.now(timezone.utc)) if d.keep]
        assert 1 < len(wanted) < len(seeded)
    else:
        wanted = expect(real, copies)
    assert _complete(moto, bucket) == sorted(wanted, reverse=True)
    deleted = [e for e in result.events if e.get("event") == "prune: deleted"]
    assert len(deleted) == len(copies) + 1 - len(wanted)
    assert all(e["rule"] for e in deleted)
    # Deleted backups leave nothing behind: no object, manifest or verification record.
    left = keys(moto.client(), bucket)
    for e in deleted:
        assert not {k for k in left if k.startswith(e["key"])}
    assert result.event("prune complete")["deleted"] == len(deleted)


def test_foreign_incomplete_and_newest_objects_survive(pg, moto, bucket, cli_env, dbname):
    real, copies = _seed(moto, cli_env, [48, 72])
    s3 = moto.client()
    old = NOW - timedelta(days=30)
    other_db = copy_backup_at(s3, bucket, real, old, database=dbname + "x")  # another database, same prefix
    other_prefix = copy_backup_at(s3, bucket, real, old, prefix="nightly/archive/")  # a folder below
    elsewhere = copy_backup_at(s3, bucket, real, old, prefix="weekly/")  # another prefix
    no_manifest = key_at("nightly/", dbname, old)
    s3.put_object(Bucket=bucket, Key=no_manifest, Body=b"half an upload")  # not a complete backup
    not_ours = key_at("nightly/", dbname, old, ".sql.bz2")
    s3.put_object(Bucket=bucket, Key=not_ours, Body=b"x")
    s3.put_object(Bucket=bucket, Key=not_ours + ".manifest.json", Body=b"{}")
    s3.put_object(Bucket=bucket, Key="nightly/README.txt", Body=b"hello")
    before = keys(s3, bucket)

    result = run_cli({**cli_env, "ENCLAVE_BACKUP_KEEP_LAST": "1"}, "prune")
    assert result.returncode == 0, result.stdout + result.stderr
    after = keys(s3, bucket)
    gone = before - after
    assert gone == {k for c in copies for k in (c, c + ".manifest.json")}
    assert real in after and real + ".manifest.json" in after
    for survivor in (other_db, other_prefix, elsewhere, no_manifest, not_ours, "nightly/README.txt"):
        assert survivor in after


def test_dry_run_lists_what_would_go_and_deletes_nothing(moto, bucket, cli_env):
    real, copies = _seed(moto, cli_env, [30, 60])
    before = keys(moto.client(), bucket)
    result = run_cli({**cli_env, "ENCLAVE_BACKUP_KEEP_LAST": "2"}, "prune", "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert keys(moto.client(), bucket) == before
    would = [e for e in result.events if e.get("event") == "prune: would delete"]
    assert [e["key"] for e in would] == [copies[1]]
    assert would[0]["rule"] == "not among the newest 2 (KeepLast)"
    assert result.event("prune complete")["would_delete"] == [copies[1]]


def test_no_rule_keeps_everything(moto, bucket, cli_env):
    _seed(moto, cli_env, [300])
    before = keys(moto.client(), bucket)
    result = run_cli(cli_env, "prune")
    assert result.returncode == 0 and keys(moto.client(), bucket) == before
    assert result.event("prune: no retention rule set, every backup is kept")


def test_backup_prunes_after_success_only(pg, moto, bucket, cli_env, dbname):
    real, copies = _seed(moto, cli_env, [24, 48])
    env = {**cli_env, "ENCLAVE_BACKUP_KEEP_LAST": "1"}
    # A failed backup (the database refuses connections) must not prune.
    with pg.connect() as conn:
        conn.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
    try:
        failed = run_cli({**env, "ENCLAVE_BACKUP_RETRY_SECONDS": "0"}, "backup", "--prune")
    finally:
        with pg.connect() as conn:
            conn.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
    assert failed.returncode == 3, failed.stdout + failed.stderr
    assert not [e for e in failed.events if e.get("event", "").startswith("prune")]
    assert _complete(moto, bucket) == [real, *copies]

    ok = run_cli(env, "backup", "--prune")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    newest = ok.event("backup complete")["key"]
    assert _complete(moto, bucket) == [newest]
    assert ok.event("prune complete")["deleted"] == 3


# -- interrupted prune: a real refusal by the S3 server half-way through ----------------------

DENY_MANIFEST_DELETE = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
    {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "arn:aws:s3:::*.manifest.json"}]})


class TwoUserMoto(MotoServer):
    """moto in auth mode with a second user who may delete anything but manifests."""

    bootstrap_calls = 6

    def users(self, iam) -> None:
        super().users(iam)
        self.pruner = self.add_user(iam, "pruner", DENY_MANIFEST_DELETE)


@pytest.fixture
def two_user_moto():
    server = TwoUserMoto().start()
    yield server
    server.stop()


def test_prune_interrupted_half_way_leaves_no_complete_looking_object_without_data(two_user_moto, cli_env):
    moto = two_user_moto
    env = {**cli_env, **moto.env()}
    bucket = env["ENCLAVE_BACKUP_BUCKET"]
    moto.client().create_bucket(Bucket=bucket)
    real, copies = _seed(moto, env, [24, 48, 72])
    pruner = {**env, "AWS_ACCESS_KEY_ID": moto.pruner["AccessKeyId"],
              "AWS_SECRET_ACCESS_KEY": moto.pruner["SecretAccessKey"], "ENCLAVE_BACKUP_KEEP_LAST": "1",
              "ENCLAVE_BACKUP_S3_MAX_ATTEMPTS": "1"}

    result = run_cli(pruner, "prune")
    assert result.returncode == 4, result.stdout + result.stderr  # stopped by the refused manifest delete
    assert "AccessDenied" in result.event("prune failed")["error"]
    left = keys(moto.client(), bucket)
    # The oldest candidate lost its object first; its manifest stayed, so it is no backup any more.
    assert copies[0] not in left and copies[0] + ".manifest.json" in left
    listed = run_cli(env, "list", "--json")
    assert [b["key"] for b in json.loads(listed.stdout)] == [real, copies[1], copies[2]]
    # Every backup that still looks complete has all its data.
    s3 = moto.client()
    for key in (real, copies[1], copies[2]):
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=key + ".manifest.json")["Body"].read())
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == manifest["sha256"] and len(body) == manifest["stored_size"]
    assert run_cli(env, "restore", "--object", copies[0]).returncode == 4  # "no such object", nothing half-done

    # With full rights the next prune finishes the job.
    again = run_cli({**env, "ENCLAVE_BACKUP_KEEP_LAST": "1"}, "prune")
    assert again.returncode == 0, again.stdout + again.stderr
    assert [b["key"] for b in json.loads(run_cli(env, "list", "--json").stdout)] == [real]


# -- readers ---------------------------------------------------------------------------------

def _storage(env: dict, monkeypatch):
    """The program's own Storage, in this process, with the environment a pod would have."""
    from enclave_backup import config
    from enclave_backup.s3 import Storage
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Storage(config.load(env))


def test_a_backup_with_a_live_reader_marker_is_kept_and_an_expired_one_is_not(moto, bucket, cli_env, monkeypatch):
    from enclave_backup import readers
    real, copies = _seed(moto, cli_env, [24, 48])
    storage = _storage(cli_env, monkeypatch)
    env = {**cli_env, "ENCLAVE_BACKUP_KEEP_LAST": "1"}
    with readers.hold(storage, copies[1]) as marker:
        assert marker in keys(moto.client(), bucket)
        result = run_cli(env, "prune")
        assert result.returncode == 0, result.stdout + result.stderr
        assert _complete(moto, bucket) == [real, copies[1]]
        assert result.event("prune complete")["kept"] == 2
        # The same marker, once older than the reader window, no longer protects.
        time.sleep(2.1)
        expired = run_cli({**env, "ENCLAVE_BACKUP_READER_MARKER_SECONDS": "1"}, "prune")
        assert expired.returncode == 0, expired.stdout + expired.stderr
        assert _complete(moto, bucket) == [real]
        assert not {k for k in keys(moto.client(), bucket) if k.startswith(copies[1])}
    assert marker not in keys(moto.client(), bucket)


def test_a_running_verify_keeps_its_backup_from_prune(moto, bucket, bulk_env):
    """A verify of a large backup is reading while prune runs: prune keeps it, verify passes."""
    real = _backup(bulk_env)
    old = copy_backup_at(moto.client(), bucket, real, NOW - timedelta(days=3), sign_with=SIGNING_KEYS)
    proc = spawn_cli(bulk_env, "verify", "--object", old)
    try:
        deadline = time.monotonic() + 120
        while not any(k.startswith(old + ".reader-") for k in keys(moto.client(), bucket)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the verify never wrote its reader marker"
            time.sleep(0.05)
        # Held still while prune runs, so it is reading however fast it would finish.
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            pruned = run_cli({**bulk_env, "ENCLAVE_BACKUP_KEEP_LAST": "1"}, "prune")
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert pruned.returncode == 0, pruned.stdout + pruned.stderr
        assert old in keys(moto.client(), bucket)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    assert not any(".reader-" in k for k in keys(moto.client(), bucket))
    # Reading done: now the old copy goes.
    assert run_cli({**bulk_env, "ENCLAVE_BACKUP_KEEP_LAST": "1"}, "prune").returncode == 0
    assert old not in keys(moto.client(), bucket)
