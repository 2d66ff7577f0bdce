"""Run figures pushed to a real Prometheus Pushgateway (Debian's prometheus-pushgateway)."""

from __future__ import annotations

import pytest

from devkit.corpus import add_bulk
from devkit.net import free_port
from devkit.pushgateway import Pushgateway
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def gateway():
    server = Pushgateway().start()
    yield server
    server.stop()


def _of(samples: dict, database: str, command: str) -> dict[str, float]:
    labels = {("job", "enclave-backup"), ("command", command), ("database", database), ("instance", "")}
    return {name: value for (name, got), value in samples.items() if set(got) == labels}


def test_backup_and_verify_push_their_figures_and_a_failure_keeps_the_last_success(pg, gateway, dbname, cli_env):
    with pg.connect(dbname) as conn:
        add_bulk(conn, 1500)
    env = {**cli_env, "ENCLAVE_BACKUP_PUSHGATEWAY_URL": gateway.url}
    backup = run_cli(env, "backup")
    assert backup.returncode == 0, backup.stdout + backup.stderr
    done = backup.event("backup complete")
    got = _of(gateway.samples(), dbname, "backup")
    assert got["enclave_backup_last_exit_code"] == 0
    assert got["enclave_backup_last_stored_bytes"] == done["stored_bytes"]
    assert got["enclave_backup_last_sql_bytes"] == done["sql_bytes"]
    assert got["enclave_backup_last_rows"] == done["rows"] == 1500
    assert got["enclave_backup_last_tables"] == 1
    assert got["enclave_backup_last_duration_seconds"] > 0
    success = got["enclave_backup_last_success_timestamp_seconds"]
    assert success == got["enclave_backup_last_run_timestamp_seconds"]

    # A failed run (the bucket does not exist) updates the exit code, keeps the last success.
    failed = run_cli({**env, "ENCLAVE_BACKUP_BUCKET": "no-such-bucket-here"}, "backup")
    assert failed.returncode == 4
    got = _of(gateway.samples(), dbname, "backup")
    assert got["enclave_backup_last_exit_code"] == 4
    assert got["enclave_backup_last_success_timestamp_seconds"] == success
    assert got["enclave_backup_last_run_timestamp_seconds"] > success

    verify = run_cli(env, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    got = _of(gateway.samples(), dbname, "verify")
    assert got["enclave_backup_last_exit_code"] == 0 and got["enclave_backup_last_rows"] == 1500

    second = run_cli({**env, "ENCLAVE_BACKUP_KEEP_LAST": "1"}, "backup", "--prune")
    assert second.returncode == 0, second.stdout + second.stderr
    got = _of(gateway.samples(), dbname, "prune")
    assert got["enclave_backup_last_exit_code"] == 0 and got["enclave_backup_last_deleted"] == 1


def test_an_unreachable_pushgateway_never_fails_the_backup(dbname, cli_env):
    env = {**cli_env, "ENCLAVE_BACKUP_PUSHGATEWAY_URL": f"http://127.0.0.1:{free_port()}"}
    result = run_cli(env, "backup")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "could not push metrics" in result.stdout
