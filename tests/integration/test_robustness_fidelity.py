"""Settings refused at once, and restores and verifies that survive what a real database holds.

Real PostgreSQL servers (14-18) and moto S3 throughout: roles with short timeouts, login
event triggers, subscriptions, per-role database settings, materialized views, odd table
names, extension configuration tables, and a server restarted while a restore loads.
"""

from __future__ import annotations

import pytest

from tests.conftest import run_cli


# --- settings that must fail at once ------------------------------------------------------------

@pytest.mark.parametrize("name, value", [
    ("ENCLAVE_BACKUP_INSTALLATION", ""),
    ("ENCLAVE_BACKUP_INSTALLATION", "  "),
    ("ENCLAVE_BACKUP_PREFIX", "../../etc"),
    ("ENCLAVE_BACKUP_PREFIX", "nightly/../other"),
    ("ENCLAVE_BACKUP_PREFIX", "nightly\\x"),
    ("ENCLAVE_BACKUP_PREFIX", "a//b"),
    ("ENCLAVE_BACKUP_PREFIX", "night\x1bly"),
    ("ENCLAVE_BACKUP_PUSHGATEWAY_URL", "not a url"),
    ("ENCLAVE_BACKUP_PUSHGATEWAY_URL", "pushgateway:9091"),
    ("ENCLAVE_BACKUP_PUSHGATEWAY_URL", "ftp://pushgateway:9091"),
    ("ENCLAVE_BACKUP_PUSHGATEWAY_URL", "http://pushgateway:port"),
])
def test_a_bad_installation_prefix_or_pushgateway_is_exit_2_before_anything_runs(cli_env, moto, bucket, name, value):
    for command in ("backup", "restore", "list", "verify"):
        args = ["restore", "--object", "latest"] if command == "restore" else [command]
        result = run_cli({**cli_env, name: value}, *args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert name in result.event(f"{command} failed")["error"]
    assert not moto.client().list_objects_v2(Bucket=bucket).get("Contents")
    assert not moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_an_unset_installation_and_a_prefix_with_outer_slashes_still_work(cli_env, moto, bucket):
    env = {k: v for k, v in cli_env.items() if k != "ENCLAVE_BACKUP_INSTALLATION"}
    made = run_cli({**env, "ENCLAVE_BACKUP_PREFIX": "/nightly/eu/"}, "backup")
    assert made.returncode == 0, made.stdout + made.stderr
    assert made.event("backup complete")["key"].startswith("nightly/eu/")
