"""One odd object, clock or retry never deletes a good backup or stops every command.

Real PostgreSQL and moto S3 (auth mode) throughout. Where a fault cannot be caused for real
(a response lost after the store acted on the request, a store that stalls) a loopback proxy
in front of moto causes it; each such test says so.
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest

from devkit.environ import is_program_setting
from devkit.seeding import copy_backup_at, key_at, keys
from enclave_backup.manifest import installation_tag
from devkit.signingkeys import signed
from tests.conftest import SIGNING_KEYS, backup, run_cli


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
    s3.put_object(Bucket=bucket, Key=key + ".manifest.json", Body=signed(manifest, SIGNING_KEYS))
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


# --- 1. clock skew: `latest` and retention take one order, a new backup is never pruned ----------

def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _made_on_a_skewed_clock(s3, bucket: str, source: str, skew: timedelta) -> str:
    """What a writer whose clock is `skew` off writes now: the real backup's bytes under the key and
    manifest times its clock gives (the store stamps the manifest with its own clock)."""
    started = datetime.now(timezone.utc) + skew
    key = key_at("nightly/", json.loads(s3.get_object(Bucket=bucket, Key=source + ".manifest.json")["Body"]
                                        .read())["database"], started, run_id=source.rsplit("-", 1)[1][:16])
    return _copy_as(s3, bucket, source, key, started_at=_iso(started), finished_at=_iso(started))


def _would_delete(env: dict) -> list[str]:
    result = run_cli({**env, "ENCLAVE_BACKUP_KEEP_LAST": "1"}, "prune", "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.event("prune complete")["would_delete"]


def test_a_backup_dated_a_year_ahead_does_not_make_keep_last_delete_each_new_backup(moto, bucket, cli_env):
    s3 = moto.client()
    first = backup(cli_env)
    future = copy_backup_at(s3, bucket, first, datetime.now(timezone.utc) + timedelta(days=365))
    time.sleep(1.1)  # the store stamps in whole seconds
    env = {**cli_env, "ENCLAVE_BACKUP_KEEP_LAST": "1"}
    runs = []
    for _ in range(2):  # the CronJob: `backup --prune`, twice
        made = run_cli(env, "backup", "--prune")
        assert made.returncode == 0, made.stdout + made.stderr
        new = made.event("backup complete")["key"]
        stored = keys(s3, bucket)
        assert new in stored and new + ".manifest.json" in stored  # the backup just made survives its prune
        assert [b["key"] for b in _listed(run_cli(cli_env, "list", "--json"))] == [new]
        runs.append(made)
        time.sleep(1.1)
    assert future not in stored
    said = "prune: the writer's clock and the store's disagreed on this backup; it is ordered by the store's clock"
    assert [(e["key"], e["kept"]) for e in _events(runs[0], said)] == [(future, False)]
    assert not _events(runs[1], said)


def test_the_future_dated_backup_is_ordered_by_the_store_s_clock_and_prune_says_so(moto, bucket, cli_env):
    s3 = moto.client()
    first = backup(cli_env)
    time.sleep(1.1)
    future = _made_on_a_skewed_clock(s3, bucket, first, timedelta(days=365))
    result = run_cli({**cli_env, "ENCLAVE_BACKUP_KEEP_LAST": "1"}, "prune")
    assert result.returncode == 0, result.stdout + result.stderr
    said = result.event("prune: the writer's clock and the store's disagreed on this backup; it is ordered "
                        "by the store's clock")
    # By the store's clock the forged one was written after `first`: it is the newest and kept.
    assert said["key"] == future and said["kept"] is True
    assert [e["key"] for e in _events(result, "prune: deleted")] == [first]


@pytest.mark.parametrize("skew_minutes", [10, -10], ids=["writer-10min-ahead", "writer-10min-behind"])
def test_latest_and_prune_agree_when_one_writer_s_clock_is_off(moto, bucket, cli_env, skew_minutes):
    s3 = moto.client()
    skew = timedelta(minutes=skew_minutes)
    if skew_minutes > 0:  # the earlier backup came from the writer that runs ahead, the new one is true
        earlier = _made_on_a_skewed_clock(s3, bucket, backup(cli_env), skew)
        time.sleep(1.1)
        newest = backup(cli_env)
    else:  # the earlier backup is true, the new one comes from the writer that runs behind
        earlier = backup(cli_env)
        time.sleep(1.1)
        newest = _made_on_a_skewed_clock(s3, bucket, earlier, skew)
    listed = [b["key"] for b in _listed(run_cli(cli_env, "list", "--json"))]
    assert listed[0] == newest
    assert newest not in _would_delete(cli_env) and earlier in _would_delete(cli_env)
    restored = run_cli(cli_env, "restore", "--object", "latest")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert restored.event("restore complete")["key"] == newest


# --- 2. a retried manifest write that meets its own first attempt --------------------------------

class LosingProxy:
    """An HTTP proxy in front of moto that forwards every request but, once, drops the answer to the
    first PUT of a manifest after moto stored it: a response lost on the way back, which no real
    server can be made to do on demand. The client then retries, as botocore does."""

    def __init__(self, target_port: int):
        import http.client
        import http.server
        import socket
        import threading

        owner = self
        self.dropped: list[str] = []
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive and Expect: 100-continue, as botocore uses them

            def log_message(self, *_args):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection("127.0.0.1", target_port, timeout=60)
                upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() != "expect":
                        upstream.putheader(name, value)
                upstream.endheaders(body)
                answer = upstream.getresponse()
                data = answer.read()
                upstream.close()
                path = self.path.split("?", 1)[0]
                with lock:
                    drop = self.command == "PUT" and path.endswith(".manifest.json") and not owner.dropped
                    if drop:
                        owner.dropped.append(path)
                if drop:  # stored upstream; the client never hears of it
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response_only(answer.status, answer.reason)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                length = answer.getheader("Content-Length")
                self.send_header("Content-Length", length if self.command == "HEAD" and length else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_retried_manifest_write_that_finds_its_own_manifest_succeeds(moto, bucket, cli_env):
    proxy = LosingProxy(moto.port)
    try:
        made = run_cli({**cli_env, "AWS_ENDPOINT_URL": proxy.endpoint}, "backup")
    finally:
        proxy.stop()
    assert proxy.dropped, "the proxy dropped no answer"
    assert made.returncode == 0, made.stdout + made.stderr
    key = made.event("backup complete")["key"]
    said = made.event("the manifest was stored by an earlier attempt of this run whose answer was lost; "
                      "the backup is complete")
    assert said["key"] == key and "already exists" in said["retry_answer"]
    assert {key, key + ".manifest.json"} <= keys(moto.client(), bucket)
    restored = run_cli(cli_env, "restore", "--object", "latest")  # a complete backup: it restores
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert restored.event("restore complete")["key"] == key


def test_a_manifest_write_refused_for_another_run_s_manifest_still_fails(moto, bucket, cli_env, monkeypatch):
    """The 412 path stays: a manifest that is not this run's (another run id) is never taken for ours."""
    s3 = moto.client()
    first = backup(cli_env)
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=first + ".manifest.json")["Body"].read())
    # Pre-place a manifest under the key the next run will write, by fixing its start and run id.
    from enclave_backup import backup as backup_mod, config as config_mod, log
    from enclave_backup.errors import StorageError
    for name in [n for n in list(os.environ) if is_program_setting(n)]:
        monkeypatch.delenv(name)
    for name, value in cli_env.items():
        monkeypatch.setenv(name, value)
    log.configure()
    second = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    monkeypatch.setattr(backup_mod, "utcnow", lambda: second)
    monkeypatch.setattr(backup_mod.secrets, "token_hex", lambda _n: "01234567")
    config = config_mod.load()
    run = installation_tag(config.installation) + "01234567"
    key = key_at("nightly/", config.database, second, run_id=run)
    s3.put_object(Bucket=bucket, Key=key + ".manifest.json",
                  Body=json.dumps({**manifest, "key": key, "run_id": run, "sha256": "0" * 64}).encode())
    with pytest.raises(StorageError, match="already exists"):
        backup_mod.run_backup(config)
    assert key not in keys(s3, bucket)  # this run's own object went; the other manifest stayed
    assert key + ".manifest.json" in keys(s3, bucket)


# --- 4. an object copied back by hand without its S3 metadata -----------------------------------

def test_a_backup_whose_object_lost_its_metadata_still_restores(moto, bucket, pg, dbname, cli_env):
    with pg.connect(dbname) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('from the backup')")
    key = backup(cli_env)
    s3 = moto.client()
    data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.delete_object(Bucket=bucket, Key=key)
    s3.put_object(Bucket=bucket, Key=key, Body=data)  # as `aws s3 cp` of a downloaded file puts it back
    assert s3.head_object(Bucket=bucket, Key=key)["Metadata"] == {}
    with pg.connect(dbname) as conn:
        conn.execute("DELETE FROM kept")

    for target in (key, "latest"):
        restored = run_cli(cli_env, "restore", "--object", target, "--force")
        assert restored.returncode == 0, restored.stdout + restored.stderr
        said = restored.event("the object lacks its S3 metadata (copied without it?): its identity is checked "
                              "by its header and its sha256 alone")
        assert set(said["missing"]) == {"database", "engine", "installation", "run_id"}
    with pg.connect(dbname) as conn:
        assert [r[0] for r in conn.execute("SELECT v FROM kept")] == ["from the backup"]

    # The sha256 still decides: the same header over other bytes is refused.
    s3.put_object(Bucket=bucket, Key=key, Body=data[:-8] + bytes(8))
    refused = run_cli(cli_env, "restore", "--object", key, "--force")
    assert refused.returncode == 5, refused.stdout + refused.stderr


# --- 6. a huge manifest or record is refused unread ----------------------------------------------

def _peak_rss(env: dict, *args: str):
    """Run the CLI, sampling its resident memory; (result, peak bytes)."""
    import psutil

    from tests.conftest import CliResult, spawn_cli
    proc = spawn_cli(env, *args)
    watched, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.01)
    out, err = proc.communicate(timeout=120)
    return CliResult(proc.returncode, out, err), peak


HUGE = 48 << 20


def test_a_huge_foreign_manifest_or_record_is_never_read(moto, bucket, cli_env, dbname):
    s3 = moto.client()
    real = backup(cli_env)
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=real + ".manifest.json")["Body"].read())
    time.sleep(1.1)
    huge = key_at("nightly/", dbname, datetime.now(timezone.utc), run_id=real.rsplit("-", 1)[1][:16])
    s3.copy_object(Bucket=bucket, Key=huge, CopySource={"Bucket": bucket, "Key": real})
    # Valid JSON naming its object, so only its size gives it away.
    s3.put_object(Bucket=bucket, Key=huge + ".manifest.json",
                  Body=json.dumps({**manifest, "key": huge, "padding": "x" * HUGE}).encode())
    s3.put_object(Bucket=bucket, Key=real + ".verify.json",
                  Body=json.dumps({"key": real, "verified_at": "2026-01-01T00:00:00Z", "passed": True,
                                   "padding": "x" * HUGE}).encode())

    listed, peak = _peak_rss(cli_env, "list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert huge not in listed.stdout.split("KEY", 1)[1] and real in listed.stdout
    said = listed.event("skipped an object whose manifest is too large to be one of ours")
    assert said["key"] == huge and said["manifest_bytes"] > HUGE
    assert listed.event("ignored a verification record too large to be one of ours")["key"] == real + ".verify.json"
    print(f"list peak RSS {peak / 2**20:.0f} MiB with a {HUGE >> 20} MiB manifest and record beside the backups")
    assert peak < HUGE + (40 << 20)  # neither was read: far less than even one copy of either on top

    status = run_cli(cli_env, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    restored = run_cli(cli_env, "restore", "--object", "latest")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert restored.event("restore complete")["key"] == real
    refused, peak = _peak_rss(cli_env, "restore", "--object", huge)
    assert refused.returncode == 5, refused.stdout + refused.stderr
    assert "more than the 1048576 a manifest of this tool can" in refused.event("restore failed")["error"]


# --- 7. a manifest with a field no backup can have --------------------------------------------

@pytest.mark.parametrize("tables, field", [({"public.t": 10**30}, "tables/public.t"), (["public.t"], "tables")],
                         ids=["huge-row-count", "tables-not-a-mapping"])
def test_verify_and_restore_refuse_a_manifest_with_a_bad_field(moto, bucket, pg, dbname, cli_env, tables, field):
    with pg.connect(dbname) as conn:
        conn.execute("CREATE TABLE t (v int)")
        conn.execute("INSERT INTO t VALUES (1)")
    key = backup(cli_env)
    s3 = moto.client()
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=key + ".manifest.json")["Body"].read())
    s3.put_object(Bucket=bucket, Key=key + ".manifest.json", Body=json.dumps({**manifest, "tables": tables}).encode())
    for command in ("verify", "restore"):
        result = run_cli(cli_env, command, "--object", key)
        assert result.returncode == 5, result.stdout + result.stderr
        error = result.event(f"{command} failed")["error"]
        assert f"field {field!r}" in error, error
    listed = run_cli(cli_env, "list")  # the others go on: the bad one is skipped with a warning
    assert listed.returncode == 0 and key in listed.event("skipped an object whose manifest cannot be read")["key"]


# --- 8. SIGTERM stops a prune between deletions ---------------------------------------------------

def _seed_many(moto, bucket: str, env: dict, count: int) -> tuple[str, list[str]]:
    real = backup(env)
    s3 = moto.client()
    now = datetime.now(timezone.utc)
    return real, [copy_backup_at(s3, bucket, real, now - timedelta(hours=h)) for h in range(1, count + 1)]


def _pairs_intact(moto, bucket: str) -> None:
    """Whatever a stopped prune left: every object still has its manifest (only the reverse may stay)."""
    stored = keys(moto.client(), bucket)
    objects = {k for k in stored if k.endswith(".sql.gz")}
    assert all(k + ".manifest.json" in stored for k in objects)


def test_sigterm_stops_prune_between_deletions(moto, bucket, cli_env):
    from tests.integration.test_backup_failures import Running
    real, copies = _seed_many(moto, bucket, cli_env, 150)
    run = Running({**cli_env, "ENCLAVE_BACKUP_KEEP_LAST": "1"}, "prune")
    run.wait_for(lambda e: e.get("event") == "prune: deleted")
    sent = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    result = run.finish(timeout=30)
    took = time.monotonic() - sent
    assert result.returncode == 1, result.stdout + result.stderr
    assert took < 10, f"prune ran {took:.1f}s after SIGTERM"
    assert "SIGTERM" in result.event("prune failed")["error"]
    deleted = _events(result, "prune: deleted")
    assert 1 <= len(deleted) < len(copies)  # it stopped part-way, not at the end
    _pairs_intact(moto, bucket)
    left = {k for k in keys(moto.client(), bucket) if k.endswith(".sql.gz")}
    assert real in left and len(left) == len(copies) + 1 - len(deleted)


def test_sigterm_ends_prune_within_the_grace_period_with_the_store_stalled(moto, bucket, cli_env):
    """A store that stops answering mid-deletion cannot be had from moto: a loopback proxy stalls it."""
    from devkit.proxy import Proxy
    from tests.integration.test_backup_failures import Running
    _seed_many(moto, bucket, cli_env, 150)
    proxy = Proxy(moto.port).start()
    try:
        run = Running({**cli_env, "AWS_ENDPOINT_URL": proxy.endpoint, "ENCLAVE_BACKUP_KEEP_LAST": "1",
                       "ENCLAVE_BACKUP_S3_READ_TIMEOUT": "60"}, "prune")
        run.wait_for(lambda e: e.get("event") == "prune: deleted")
        proxy.stall()
        time.sleep(0.3)  # the next deletion is now waiting on the store
        sent = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        result = run.finish(timeout=60)
        took = time.monotonic() - sent
    finally:
        proxy.resume()
    print(f"prune exited {took:.1f}s after SIGTERM with S3 stalled")
    assert result.returncode == 1, result.stdout + result.stderr
    assert took < 10
    assert "SIGTERM" in result.event("prune failed")["error"]
    _pairs_intact(moto, bucket)


def test_sigterm_during_backup_prune_is_a_stop_not_a_prune_failure(moto, bucket, cli_env):
    from tests.integration.test_backup_failures import Running
    _seed_many(moto, bucket, cli_env, 150)
    run = Running({**cli_env, "ENCLAVE_BACKUP_KEEP_LAST": "1"}, "backup", "--prune")
    run.wait_for(lambda e: e.get("event") == "prune: deleted")
    run.proc.send_signal(signal.SIGTERM)
    result = run.finish(timeout=30)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "SIGTERM" in result.event("backup failed")["error"]
    new = result.event("backup complete")["key"]
    assert new in keys(moto.client(), bucket)  # the backup itself is stored
    _pairs_intact(moto, bucket)
