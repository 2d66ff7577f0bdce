"""Every failure path of a backup ends with no object, no manifest and no pending upload."""

from __future__ import annotations

import queue
import signal
import threading
import time
import uuid

import psutil
import pytest

from devkit.corpus import add_bulk
from devkit.pgserver import start_server
from devkit.proxy import Proxy
from tests.conftest import CliResult, run_cli, spawn_cli
from tests.integration.conftest import BULK_ROWS



def assert_nothing_left(moto, bucket):
    client = moto.client()
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")


class Running:
    """A backup process whose JSON log lines are read as they come."""

    def __init__(self, env: dict, *args: str):
        self.proc = spawn_cli(env, *args)
        self.lines: queue.Queue = queue.Queue()
        self.stdout: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.stdout.append(line)
            self.lines.put(line)

    def wait_for(self, predicate, timeout: float = 60) -> None:
        import json
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                assert self.proc.poll() is None, "backup ended early:\n" + "".join(self.stdout)
                continue
            if line.startswith("{") and predicate(json.loads(line)):
                return
        raise AssertionError("condition not reached:\n" + "".join(self.stdout))

    def finish(self, timeout: float = 120) -> CliResult:
        self.proc.wait(timeout)
        time.sleep(0.1)  # let the reader drain
        return CliResult(self.proc.returncode, "".join(self.stdout), self.proc.stderr.read())


def uploaded_some_parts(event: dict) -> bool:
    return event.get("event") == "backup progress" and event.get("stored_bytes", 0) > 12 << 20


def dumping_rows(event: dict) -> bool:
    return event.get("event") == "backup progress" and event.get("rows", 0) > 0


def test_database_server_stopped_mid_dump(moto, bucket, cli_env):
    server = start_server()  # its own server: this test stops it
    try:
        server.create_database("malbork")
        with server.connect("malbork") as conn:
            add_bulk(conn, BULK_ROWS, width=400)
        env = {**cli_env, **server.env("malbork"), "ENCLAVE_BACKUP_PROGRESS_SECONDS": "0.05",
               "ENCLAVE_BACKUP_PART_SIZE_MIB": "5", "ENCLAVE_BACKUP_RETRY_SECONDS": "1"}
        run = Running(env, "backup")
        run.wait_for(dumping_rows)
        # Holding pg_dump still keeps the dump mid-table however fast it streams,
        # so the server surely stops mid-dump.
        dumper = next(p for p in psutil.Process(run.proc.pid).children(recursive=True) if p.name() == "pg_dump")
        dumper.suspend()
        server.stop("immediate")
        dumper.resume()
        result = run.finish()
    finally:
        server.remove("immediate")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "dumping the database" in result.event("backup failed")["error"]
    assert_nothing_left(moto, bucket)


def test_s3_unreachable_mid_upload_aborts_once_back(moto, bucket, bulk_env):
    proxy = Proxy(moto.port).start()
    env = {**bulk_env, "AWS_ENDPOINT_URL": proxy.endpoint, "ENCLAVE_BACKUP_S3_MAX_ATTEMPTS": "2"}
    run = Running(env, "backup")
    run.wait_for(uploaded_some_parts)
    proxy.cut()
    # The outage outlasts the upload's retries but not the abort's longer budget.
    time.sleep(4)
    proxy.restore()
    result = run.finish()
    assert result.returncode == 4, result.stdout + result.stderr
    assert "uploading part" in result.event("backup failed")["error"]
    result.event("multipart upload aborted: no object was written")
    assert_nothing_left(moto, bucket)


def test_sigterm_mid_backup(moto, bucket, bulk_env):
    run = Running(bulk_env, "backup")
    run.wait_for(uploaded_some_parts)
    run.proc.send_signal(signal.SIGTERM)
    result = run.finish()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "SIGTERM" in result.event("backup failed")["error"]
    assert_nothing_left(moto, bucket)


def test_sigkill_leftovers_are_removed_by_the_next_run(moto, bucket, bulk_env):
    run = Running(bulk_env, "backup")
    run.wait_for(uploaded_some_parts)
    run.proc.kill()
    run.finish()
    client = moto.client()
    assert len(client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1
    time.sleep(2)
    result = run_cli({**bulk_env, "ENCLAVE_BACKUP_STALE_UPLOAD_SECONDS": "1"}, "backup")
    assert result.returncode == 0, result.stdout
    result.event("aborted a stale multipart upload")
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert client.list_objects_v2(Bucket=bucket)["KeyCount"] == 2  # the new backup and its manifest


def test_wrong_s3_secret(moto, bucket, cli_env):
    wrong = "wrong-secret-" + uuid.uuid4().hex
    result = run_cli({**cli_env, "AWS_SECRET_ACCESS_KEY": wrong}, "backup")
    assert result.returncode == 4
    error = result.event("backup failed")["error"]
    assert "rejected the credentials" in error and "HmacSecretName" in error
    assert wrong not in result.stdout + result.stderr
    assert_nothing_left(moto, bucket)


def test_missing_bucket(moto, cli_env):
    result = run_cli({**cli_env, "ENCLAVE_BACKUP_BUCKET": "no-such-bucket-here"}, "backup")
    assert result.returncode == 4
    assert "bucket does not exist" in result.event("backup failed")["error"]


def test_wrong_database_password(moto, bucket, cli_env, pg):
    wrong = "wrong-password-" + uuid.uuid4().hex
    started = time.monotonic()
    result = run_cli({**cli_env, "PGPASSWORD": wrong}, "backup")
    assert result.returncode == 3
    assert time.monotonic() - started < 20  # permanent errors are not retried
    assert "rejected the login" in result.event("backup failed")["error"]
    assert wrong not in result.stdout + result.stderr
    assert_nothing_left(moto, bucket)


def test_unknown_database(moto, bucket, cli_env):
    result = run_cli({**cli_env, "PGDATABASE": "no_such_db"}, "backup")
    assert result.returncode == 3
    assert "does not exist" in result.event("backup failed")["error"]
    assert_nothing_left(moto, bucket)


@pytest.mark.parametrize("name, value, words", [
    ("ENCLAVE_BACKUP_BUCKET", "", "ENCLAVE_BACKUP_BUCKET is not set"),
    ("ENCLAVE_BACKUP_COMPRESSION", "brotli", "is not one of gzip, zstd, none"),
    ("ENCLAVE_BACKUP_PART_SIZE_MIB", "1", "must be between 5 and 512"),
    ("ENCLAVE_BACKUP_ENGINE", "mysql", "ENCLAVE_BACKUP_ENGINE"),
])
def test_configuration_errors_exit_2(cli_env, name, value, words):
    result = run_cli({**cli_env, name: value}, "backup")
    assert result.returncode == 2
    assert words in result.event("backup failed")["error"]


def test_database_unreachable_retries_then_fails(moto, bucket, cli_env):
    from devkit.net import free_port
    result = run_cli({**cli_env, "PGPORT": str(free_port()), "ENCLAVE_BACKUP_RETRY_SECONDS": "2"}, "backup")
    assert result.returncode == 3
    assert [e for e in result.events if e["event"] == "database connection failed, retrying"]
    assert_nothing_left(moto, bucket)
