"""Native restore, verify and the native `check` with the real CLI, a real S3 server (moto) and a
server that answers as CockroachDB does (devkit.wireserver with the recorded cluster of
tests/unit/crdb_recorded/native.py: its databases, comments, renames, BACKUP and RESTORE jobs; no
CockroachDB can run here). The cluster's nodes write their files into the bucket with the keys in
the collection's URL, as real nodes do; what the program sent is read back from the server.
"""

from __future__ import annotations

import json
import re
import runpy
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import pytest

from devkit.environ import scrubbed
from devkit.wireserver import WireServer
from enclave_backup import config as config_mod
from enclave_backup import signing
from enclave_backup.manifest import manifest_key
from enclave_backup.native_backup import collection_folder, publish
from enclave_backup.s3 import Storage
from enclave_backup.verification import record_key

from ..conftest import run_cli

RECORDED = runpy.run_path(str(Path(__file__).parents[1] / "unit" / "crdb_recorded" / "native.py"))
DB = "malbork"
PREFIX = "nightly/"
STAMP = r"\d{14}"
JOB_STATES = [("running", 0.5, "", "restoring ranges"), ("succeeded", 1.0)]
NEWER = "CockroachDB CCL v24.3.1 (x86_64-pc-linux-gnu, built 2024/12/10 00:00:00, go1.22.8)"


def clock_ns() -> int:
    """The cluster's time, with nanoseconds below the microsecond as a real HLC has them."""
    return time.time_ns() // 1000 * 1000 + 789


class Writes(list):
    """What the cluster's nodes wrote, as (url, path), also written to the store."""

    def __init__(self):
        super().__init__()
        self.s3 = RECORDED["s3_writer"]()

    def __call__(self, url: str, path: str, body: bytes) -> None:
        self.append((url, path))
        self.s3(url, path, body)


@contextmanager
def crdb(**options):
    writes = Writes()
    rules = RECORDED["cockroach_rules"](DB, job_states=JOB_STATES, clock=clock_ns, writer=writes, **options)
    with WireServer(rules, crdb_version=rules.version) as server:
        yield server, rules, writes


@pytest.fixture
def make_env(moto, bucket, signing_keys):
    def make(server, **extra) -> dict:
        return {**scrubbed(), **moto.env(), **server.env(DB), **signing_keys.env(),
                "ENCLAVE_BACKUP_BUCKET": bucket, "ENCLAVE_BACKUP_PREFIX": PREFIX,
                "ENCLAVE_BACKUP_METHOD": "native", "ENCLAVE_BACKUP_NATIVE_POLL_SECONDS": "0.05",
                "ENCLAVE_BACKUP_PROGRESS_SECONDS": "1", **extra}
    return make


def sent(server, prefix: str) -> list[str]:
    return [s.sql for s in server.statements if s.sql.startswith(prefix)]


def user_databases(cluster) -> set[str]:
    return set(cluster.databases) - set(RECORDED["SYSTEM_DATABASES"])


def secret_forms(moto) -> set[str]:
    return {moto.secret_key, quote(moto.secret_key, safe=""), quote(moto.secret_key)}


def assert_no_secret(moto, bucket, *results) -> None:
    """The AWS secret key, in any form, in no line a run printed and no object in the bucket."""
    forms = secret_forms(moto)
    for result in results:
        leaked = [line for line in (result.stdout + result.stderr).splitlines() if any(f in line for f in forms)]
        assert not leaked, leaked
    s3 = moto.client()
    for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode(errors="replace")
        assert not any(f in body for f in forms), obj["Key"]


def backup(env) -> tuple[dict, object]:
    """A native backup that must succeed: (its manifest, the run)."""
    result = run_cli(env, "backup")
    assert result.returncode == 0, result.stdout + result.stderr
    key = result.event("backup complete")["key"]
    return key, result


def manifest_of(moto, bucket, key: str) -> dict:
    return json.loads(moto.client().get_object(Bucket=bucket, Key=manifest_key(key))["Body"].read())


def restore_pattern(folder: str, as_of: str, scratch_kind: str = "restoring") -> re.Pattern:
    return re.compile(rf"RESTORE DATABASE \"{DB}\" FROM '{re.escape(folder)}' IN 'external://enclave_backup_"
                      rf"[0-9a-f]{{16}}' AS OF SYSTEM TIME {re.escape(as_of)} WITH detached, "
                      rf"new_db_name = '{DB}_{scratch_kind}_({STAMP})'")


def test_restore_latest_renames_the_restored_database_in_and_skips_a_second_run(moto, bucket, make_env):
    with crdb() as (server, cluster, writes):
        env = make_env(server)
        key, made = backup(env)
        native = manifest_of(moto, bucket, key)["native"]
        assert any(path == f"{native['folder']}/BACKUP_MANIFEST" for _, path in writes)

        before = len(server.statements)
        first = run_cli(env, "restore", "--object", "latest")
        assert first.returncode == 0, first.stdout + first.stderr
        run = [s.sql for s in server.statements[before:]]
        restores = [s for s in run if s.startswith("RESTORE ")]
        assert len(restores) == 1
        match = restore_pattern(native["folder"], native["end_hlc"]).fullmatch(restores[0])
        assert match, restores[0]
        stamp = match.group(1)
        scratch, previous = f"{DB}_restoring_{stamp}", f"{DB}_pre_restore_{stamp}"
        comments = [s for s in run if s.startswith("COMMENT ON DATABASE ")]
        assert len(comments) == 1 and comments[0].startswith(f'COMMENT ON DATABASE "{scratch}" IS ')
        renames = [s for s in run if s.startswith("ALTER DATABASE ")]
        assert renames == [f'ALTER DATABASE "{DB}" RENAME TO "{previous}"',
                           f'ALTER DATABASE "{scratch}" RENAME TO "{DB}"']
        assert run.index(restores[0]) < run.index(comments[0]) < run.index(renames[0])
        assert user_databases(cluster) == {DB, previous}
        mark = json.loads(cluster.databases[DB]["comment"])
        assert (mark["key"], mark["sha256"]) == (key, manifest_of(moto, bucket, key)["sha256"])
        assert cluster.connections == {}
        assert first.event("restore complete")["previous_database"] == previous

        # The same restore again (helm upgrade --reuse-values runs the hook again): nothing is done.
        before = len(server.statements)
        again = run_cli(env, "restore", "--object", "latest")
        assert again.returncode == 0, again.stdout + again.stderr
        again.event("restore skipped: the database already holds this backup")
        assert not [s for s in server.statements[before:] if s.sql.startswith(("RESTORE ", "ALTER DATABASE "))]
        assert user_databases(cluster) == {DB, previous}

        # --force restores it once more; one previous database is kept (restore.keepPrevious=1).
        before = len(server.statements)
        forced = run_cli(env, "restore", "--object", "latest", "--force")
        assert forced.returncode == 0, forced.stdout + forced.stderr
        restores = [s.sql for s in server.statements[before:] if s.sql.startswith("RESTORE ")]
        assert len(restores) == 1
        newer = restore_pattern(native["folder"], native["end_hlc"]).fullmatch(restores[0]).group(1)
        assert newer > stamp
        assert user_databases(cluster) == {DB, f"{DB}_pre_restore_{newer}"}
        assert_no_secret(moto, bucket, made, first, again, forced)


def test_as_of_needs_revision_history_and_must_lie_in_the_backup(moto, bucket, make_env):
    with crdb() as (server, cluster, _):
        plain_env = make_env(server, ENCLAVE_BACKUP_NATIVE_REVISION_HISTORY="false")
        key, made = backup(plain_env)
        native = manifest_of(moto, bucket, key)["native"]
        assert native["revision_history"] is False
        end = datetime.fromisoformat(native["end_time"])
        runs = [made]
        for as_of in (end - timedelta(seconds=30), end + timedelta(hours=1)):
            result = run_cli({**plain_env, "ENCLAVE_BACKUP_RESTORE_AS_OF": as_of.isoformat().replace("+00:00", "Z")},
                             "restore", "--object", key)
            assert result.returncode == 2, result.stdout + result.stderr
            assert "nothing was changed" in result.event("restore failed")["error"]
            runs.append(result)
        assert sent(server, "RESTORE ") == [] and user_databases(cluster) == {DB}

        env = make_env(server)
        key, made = backup(env)
        native = manifest_of(moto, bucket, key)["native"]
        assert native["revision_history"] is True
        wanted = datetime.fromisoformat(native["end_time"]) - timedelta(seconds=30)
        text = wanted.isoformat().replace("+00:00", "Z")
        result = run_cli({**env, "ENCLAVE_BACKUP_RESTORE_AS_OF": text}, "restore", "--object", key)
        assert result.returncode == 0, result.stdout + result.stderr
        literal = f"'{wanted:%Y-%m-%d %H:%M:%S.%f}+00:00'"
        restores = sent(server, "RESTORE ")
        assert len(restores) == 1 and restore_pattern(native["folder"], literal).fullmatch(restores[0]), restores
        assert json.loads(cluster.databases[DB]["comment"])["as_of"] == text
        assert_no_secret(moto, bucket, *runs, made, result)


def test_as_of_at_the_end_of_a_backup_without_revision_history_restores_it(moto, bucket, make_env):
    """restore.asOf set to the backup's own end_time (what `list` shows, to the microsecond): the one time
    a backup without revision history restores to. The cluster's end time is an HLC in nanoseconds, and
    RESTORE needs it exactly (ValidateEndTimeAndTruncate), so the statement must carry end_hlc."""
    with crdb() as (server, cluster, _):
        env = make_env(server, ENCLAVE_BACKUP_NATIVE_REVISION_HISTORY="false")
        key, made = backup(env)
        native = manifest_of(moto, bucket, key)["native"]
        assert int(native["end_hlc"].split(".")[0]) % 1000 != 0  # below the microsecond: not in end_time
        result = run_cli({**env, "ENCLAVE_BACKUP_RESTORE_AS_OF": native["end_time"]}, "restore", "--object", key)
        restores = sent(server, "RESTORE ")
        assert len(restores) == 1 and restore_pattern(native["folder"], native["end_hlc"]).fullmatch(restores[0]), \
            restores
        assert result.returncode == 0, result.stdout + result.stderr
        assert_no_secret(moto, bucket, made, result)


def test_a_failed_restore_job_leaves_the_live_database_alone(moto, bucket, make_env):
    def failing_error() -> str:
        # What a failed job's error may carry: the collection's URL as the job was given it.
        url = f"s3://{bucket}/x?AWS_ACCESS_KEY_ID={moto.access_key}&AWS_SECRET_ACCESS_KEY=" \
              f"{quote(moto.secret_key, safe='')}&AWS_REGION=us-east-1"
        return f"reading backup manifest from {url}: AccessDenied: raw key {moto.secret_key}"

    states = [("running", 0.3, "", "restoring ranges"), ("failed", 0.3, failing_error())]
    with crdb(restore_job_states=states) as (server, cluster, _):
        env = make_env(server)
        key, made = backup(env)
        result = run_cli(env, "restore", "--object", "latest")
        assert result.returncode == 3, result.stdout + result.stderr
        error = result.event("restore failed")["error"]
        assert "failed" in error and "AccessDenied" in error
        restores = sent(server, "RESTORE ")
        assert len(restores) == 1
        stamp = re.search(rf"new_db_name = '{DB}_restoring_({STAMP})'", restores[0]).group(1)
        assert sent(server, "ALTER DATABASE ") == [] and sent(server, "COMMENT ON DATABASE ") == []
        assert f'DROP DATABASE IF EXISTS "{DB}_restoring_{stamp}" CASCADE' in sent(server, "DROP DATABASE ")
        assert user_databases(cluster) == {DB} and cluster.databases[DB]["comment"] is None
        assert cluster.connections == {}
        assert_no_secret(moto, bucket, made, result)


def test_a_backup_of_a_newer_release_is_refused_before_any_restore(moto, bucket, make_env, monkeypatch):
    with crdb() as (server, cluster, _):
        env = make_env(server)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        config = config_mod.load(env)
        storage = Storage(config)
        started = datetime.now(timezone.utc) - timedelta(hours=1)
        end_hlc = f"{int(started.timestamp()) * 10**9 + 123456789}.0000000000"
        folder = RECORDED["folder_of"](end_hlc)
        collection = collection_folder(config)
        cluster.seed_chain(f"s3://{bucket}/{collection}", folder, [end_hlc], version=NEWER)
        details = {"collection": collection, "folder": folder, "type": "full", "end_hlc": end_hlc,
                   "end_time": RECORDED["wall_time"](end_hlc).isoformat(), "revision_history": False,
                   "job_id": 1, "size_bytes": 4096, "rows": 283}
        manifest = publish(storage, config, signing.load_private_key(config.signing_key_file), NEWER, started,
                           uuid.uuid4().hex[:16], details, {"public.users": 281, "public.vehicles": 2},
                           f"s3://{bucket}/{collection}?AWS_REGION=us-east-1")
        result = run_cli(env, "restore", "--object", manifest.key)
        assert result.returncode == 3, result.stdout + result.stderr
        error = result.event("restore failed")["error"]
        assert "v24.3" in error and "v24.1" in error and "nothing was changed" in error
        assert sent(server, "RESTORE ") == [] and sent(server, "CREATE EXTERNAL CONNECTION ") == []
        assert user_databases(cluster) == {DB}
        assert_no_secret(moto, bucket, result)


def test_verify_restores_into_a_scratch_database_and_drops_it(moto, bucket, make_env):
    with crdb() as (server, cluster, _):
        env = make_env(server)
        key, made = backup(env)
        native = manifest_of(moto, bucket, key)["native"]
        result = run_cli(env, "verify", "--object", "latest")
        assert result.returncode == 0, result.stdout + result.stderr
        restores = sent(server, "RESTORE ")
        assert len(restores) == 1
        match = restore_pattern(native["folder"], native["end_hlc"], "verify").fullmatch(restores[0])
        assert match, restores[0]
        scratch = f"{DB}_verify_{match.group(1)}"
        statements = [s.sql for s in server.statements]
        drop = f'DROP DATABASE IF EXISTS "{scratch}" CASCADE'
        assert drop in statements
        counts = [s for s in statements if s.startswith("SELECT count(*) FROM ")]
        assert counts and statements.index(restores[0]) < statements.index(counts[0]) < statements.index(drop)
        assert sent(server, "ALTER DATABASE ") == [] and sent(server, "COMMENT ON DATABASE ") == []
        assert user_databases(cluster) == {DB}
        record = json.loads(moto.client().get_object(Bucket=bucket, Key=record_key(key))["Body"].read())
        assert record["passed"] is True and record["rows"] == 283
        assert result.event("verify complete")["rows"] == 283
        assert_no_secret(moto, bucket, made, result)


def test_check_backs_up_a_probe_database_and_removes_it(moto, bucket, make_env):
    with crdb() as (server, cluster, writes):
        env = make_env(server)
        result = run_cli(env, "check")
        assert result.returncode == 0, result.stdout + result.stderr
        created = sent(server, "CREATE DATABASE ")
        assert len(created) == 1
        name = re.fullmatch(r'CREATE DATABASE "(enclave_backup_probe_[0-9a-f]{16})"', created[0]).group(1)
        backups = sent(server, "BACKUP ")
        assert len(backups) == 1
        now = cluster.timestamps[-1]
        assert re.fullmatch(rf"BACKUP DATABASE \"{name}\" INTO 'external://enclave_backup_[0-9a-f]{{16}}' "
                            rf"AS OF SYSTEM TIME {re.escape(now)} WITH detached", backups[0]), backups[0]
        statements = [s.sql for s in server.statements]
        drop = f'DROP DATABASE IF EXISTS "{name}" CASCADE'
        assert statements.index(created[0]) < statements.index(backups[0]) < statements.index(drop)
        assert user_databases(cluster) == {DB} and cluster.connections == {}
        # The nodes wrote the probe backup into the store; the run removed all of it.
        probe_paths = [url for url, _ in writes if "/native/probe-" in url]
        assert probe_paths, writes
        left = moto.client().list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}native/probe-").get("Contents", [])
        assert left == []
        assert result.event("the CockroachDB nodes reach the store: a probe backup was written and removed")
        assert_no_secret(moto, bucket, result)


def test_an_incremental_after_a_restore_starts_a_new_chain(moto, bucket, make_env):
    """A restored database is a new one to CockroachDB (new descriptor ids): the old chain cannot be extended."""
    with crdb() as (server, cluster, writes):
        env = make_env(server)
        first, _ = backup(env)
        before = len(server.statements)
        extended = run_cli(env, "backup", "--incremental")
        assert extended.returncode == 0, extended.stdout + extended.stderr
        folder = manifest_of(moto, bucket, first)["native"]["folder"]
        assert [s for s in sent(server, "BACKUP ")[-1:] if f"INTO '{folder}' IN " in s]
        assert len(server.statements) > before

        restored = run_cli(env, "restore", "--object", first)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        clock_reads = len(sent(server, "SELECT cluster_logical_timestamp()::STRING"))
        after = run_cli(env, "backup", "--incremental")
        assert after.returncode == 0, after.stdout + after.stderr
        # As of now, not 10 s back: then the name still meant the database the restore replaced.
        assert len(sent(server, "SELECT cluster_logical_timestamp()::STRING")) == clock_reads + 1
        assert after.event("the database was restored after the newest chain's full backup: taking a full "
                           "backup, which starts a new chain")
        latest = sent(server, "BACKUP ")[-1]
        assert " IN '" not in latest.split(" AS OF SYSTEM TIME ")[0], latest
        new = manifest_of(moto, bucket, after.event("backup complete")["key"])["native"]
        assert new["type"] == "full" and new["folder"] != folder
