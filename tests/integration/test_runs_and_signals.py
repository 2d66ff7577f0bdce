"""Two runs never destroy each other's backup; SIGTERM ends a stalled backup or restore inside the grace period."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import time
from datetime import datetime, timezone

import pytest

from devkit.corpus import add_bulk, fingerprint
from devkit.environ import is_program_setting
from devkit.paths import REPO
from devkit.proxy import Proxy
from enclave_backup import backup, config as config_mod, log
from enclave_backup.errors import StorageError
from enclave_backup.manifest import decode_metadata, installation_tag, object_key, parse_header
from tests.conftest import run_cli, spawn_cli
from tests.integration.test_backup_failures import Running, uploaded_some_parts


def _objects(moto, bucket) -> dict[str, str]:
    """key -> ETag of everything in the bucket."""
    return {o["Key"]: o["ETag"] for o in moto.client().list_objects_v2(Bucket=bucket).get("Contents", [])}


@pytest.fixture
def in_process(cli_env, monkeypatch):
    """run_backup in this process, with the CronJob's environment and one frozen start second."""
    for name in [n for n in list(os.environ) if is_program_setting(n)]:
        monkeypatch.delenv(name)
    for name, value in cli_env.items():
        monkeypatch.setenv(name, value)
    log.configure()
    second = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    monkeypatch.setattr(backup, "utcnow", lambda: second)
    return lambda: backup.run_backup(config_mod.load())


def test_two_runs_in_the_same_second_keep_both_backups(moto, bucket, in_process):
    first, second = in_process(), in_process()
    assert first.key != second.key and first.started_at == second.started_at
    assert set(_objects(moto, bucket)) == {first.key, second.key, first.key + ".manifest.json",
                                           second.key + ".manifest.json"}
    client = moto.client()
    for made in (first, second):  # each object/manifest pair names one run, in metadata and header alike
        head = decode_metadata(client.head_object(Bucket=bucket, Key=made.key)["Metadata"])
        assert head == made.identity() and made.run_id
        text = gzip.decompress(client.get_object(Bucket=bucket, Key=made.key)["Body"].read())
        assert parse_header(text) == made.identity()


def test_a_run_never_overwrites_or_deletes_an_object_it_did_not_write(moto, bucket, in_process, monkeypatch):
    """Were two runs ever to get one key (same second, same run id), the second fails and touches nothing."""
    monkeypatch.setattr(backup.secrets, "token_hex", lambda _n: "01234567")
    first = in_process()
    before = _objects(moto, bucket)
    with pytest.raises(StorageError, match="already exists: another run wrote it"):
        in_process()
    assert _objects(moto, bucket) == before  # same keys, same ETags: nothing replaced, nothing deleted
    assert not moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert json.loads(moto.client().get_object(Bucket=bucket, Key=first.key + ".manifest.json")["Body"].read()
                      )["run_id"] == first.run_id


def test_stale_upload_clean_up_never_touches_another_installations_upload(moto, bucket, cli_env, dbname):
    client = moto.client()
    started = datetime(2026, 1, 1, tzinfo=timezone.utc)
    keys = {who: object_key("nightly/", dbname, started, "gzip", installation_tag(who) + "00000000")
            for who in ("default", "team-b/data-shield")}
    for key in keys.values():
        client.create_multipart_upload(Bucket=bucket, Key=key)
    time.sleep(2)
    result = run_cli({**cli_env, "ENCLAVE_BACKUP_STALE_UPLOAD_SECONDS": "1"}, "backup")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.event("aborted a stale multipart upload")["key"] == keys["default"]
    pending = [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    assert pending == [keys["team-b/data-shield"]]  # its own backup may simply run longer


def test_two_processes_started_together_both_succeed(moto, bucket, cli_env):
    procs = [spawn_cli(cli_env, "backup") for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    listed = json.loads(run_cli(cli_env, "list", "--json").stdout)
    assert len(listed) == 2 and len({b["key"] for b in listed}) == 2


POD_HELPERS = REPO / "charts/data-shield/charts/enclaveos-chart/templates/_pod.tpl"
GRACE = int(re.search(r"terminationGracePeriodSeconds: (\d+)", POD_HELPERS.read_text()).group(1))


def test_sigterm_with_s3_stalled_exits_inside_the_grace_period(moto, bucket, bulk_env):
    proxy = Proxy(moto.port).start()
    # The chart's timeouts: a stalled request would otherwise hold the process for a minute.
    env = {**bulk_env, "AWS_ENDPOINT_URL": proxy.endpoint, "ENCLAVE_BACKUP_S3_READ_TIMEOUT": "60"}
    run = Running(env, "backup")
    run.wait_for(uploaded_some_parts)
    proxy.stall()
    time.sleep(1)  # parts are now in flight into a store that answers nothing
    sent = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    result = run.finish(timeout=60)
    took = time.monotonic() - sent
    proxy.resume()
    grace = GRACE
    print(f"exited {took:.1f}s after SIGTERM with S3 stalled; grace period {grace}s")
    assert took < grace - 5, f"{took:.1f}s"  # well inside: Kubernetes would SIGKILL at {grace}s
    assert result.returncode == 1, result.stdout + result.stderr
    assert "SIGTERM" in result.event("backup failed")["error"]
    # Whatever the stalled store kept is parts of an upload, never an object or a manifest.
    assert not moto.client().list_objects_v2(Bucket=bucket).get("Contents")


def test_sigterm_of_a_restore_reading_from_a_stalled_store(moto, pg, dbname, cli_env):
    with pg.connect(dbname) as conn:
        add_bulk(conn, 60_000, width=400)
    env = {**cli_env, "ENCLAVE_BACKUP_COMPRESSION": "none"}  # more bytes than socket buffers hold
    made = run_cli(env, "backup")
    assert made.returncode == 0, made.stdout + made.stderr
    with pg.connect(dbname) as conn:
        conn.execute("DELETE FROM public.bulk WHERE id > 100")
        live = fingerprint(conn)

    proxy = Proxy(moto.port).start()
    run = Running({**env, "AWS_ENDPOINT_URL": proxy.endpoint, "ENCLAVE_BACKUP_PROGRESS_SECONDS": "0.05"},
                  "restore", "--object", made.event("backup complete")["key"])
    run.wait_for(lambda e: e.get("event") == "restore progress" and e.get("rows", 0) > 0)
    proxy.stall()
    time.sleep(1)
    sent = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    result = run.finish(timeout=60)
    took = time.monotonic() - sent
    proxy.resume()
    print(f"restore exited {took:.1f}s after SIGTERM with S3 stalled")
    assert took < GRACE - 5, f"{took:.1f}s"
    assert result.returncode == 1 and "SIGTERM" in result.event("restore failed")["error"]
    with pg.connect(dbname) as conn:
        assert fingerprint(conn) == live
    with pg.connect() as conn:  # the scratch database went with it
        assert not conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                (dbname + "_restoring%",)).fetchall()
