"""Native backups in a real S3 server: pointers and manifests beside the dumps, listed, resolved and
pruned like them, and a chain's data deleted only when no backup of it is left.

The backups here are published with the program's own code after a CockroachDB job that cannot
run on this machine (see tests/unit/test_native_cockroach.py and the e2e tier for the SQL side);
the collection's files are stand-ins at the paths CockroachDB writes (pkg/backup/backupbase/constants.go
@ 051090638ee981c80695768e5ac4b7a7ff9fa5d3: `/2006/01/02-150405.00`, `incrementals`).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from enclave_backup import config as config_mod
from enclave_backup import native_restore, signing
from enclave_backup.catalog import complete_backups
from enclave_backup.errors import ConfigError, IntegrityError
from enclave_backup.manifest import Manifest, manifest_key
from enclave_backup.native_backup import collection_folder, publish
from enclave_backup.prune import run_prune
from enclave_backup.s3 import Storage
from enclave_backup.source import resolve

T0 = datetime(2026, 11, 1, 0, 0, tzinfo=timezone.utc)
VERSION = "CockroachDB CCL v24.1.3 (x86_64-pc-linux-gnu, built 2024/07/31 00:00:00, go1.22.5)"


@pytest.fixture
def config(cli_env, monkeypatch):
    for name, value in cli_env.items():
        monkeypatch.setenv(name, value)
    return config_mod.load(cli_env)


def native_backup(storage, config, started: datetime, chain_start: datetime | None = None,
                  revision_history: bool = True, collection: str | None = None) -> Manifest:
    """A full backup (chain_start None) or an incremental of the full backup made at chain_start."""
    end = started + timedelta(minutes=1)
    folder_time = (chain_start or started) + timedelta(minutes=1)
    details = {"collection": collection or collection_folder(config),
               "folder": folder_time.strftime("/%Y/%m/%d-%H%M%S.00"),
               "type": "incremental" if chain_start else "full",
               "end_hlc": f"{int(end.timestamp()) * 10**9}.0000000000", "end_time": end.isoformat(),
               "revision_history": revision_history, "job_id": 1000 + int(started.timestamp()) % 1000,
               "size_bytes": 4096, "rows": 10}
    manifest = publish(storage, config, signing.load_private_key(config.signing_key_file), VERSION, started,
                       f"{int(started.timestamp()):016x}"[-16:], details, {"public.users": 10},
                       "s3://bucket/x?AWS_REGION=us-east-1")
    for path in _data_paths(details):
        storage.put_bytes(path, b"sst", "application/octet-stream")
    return manifest


def _data_paths(details: dict) -> list[str]:
    base, folder = details["collection"], details["folder"]
    if details["type"] == "full":
        return [f"{base}{folder}/BACKUP_MANIFEST", f"{base}{folder}/data/1.sst"]
    end = datetime.fromisoformat(details["end_time"])
    return [f"{base}/incrementals{folder}/{end:%Y%m%d}/{end:%H%M%S}.00/BACKUP_MANIFEST"]


def test_native_backups_are_listed_and_resolved_like_dumps(config):
    storage = Storage(config)
    full = native_backup(storage, config, T0)
    inc = native_backup(storage, config, T0 + timedelta(hours=1), chain_start=T0)
    listed = complete_backups(storage, config.key_prefix, config.database)
    assert [b.key for b in listed] == [inc.key, full.key]
    assert inc.key.endswith(".crdb") and listed[0].size == 4096 and listed[0].native["type"] == "incremental"
    key, manifest = resolve(storage, config, "latest")
    assert (key, manifest.method, manifest.format_version) == (inc.key, "native", 2)
    pointer = storage.get_bytes(key).decode()
    assert "RESTORE DATABASE" in pointer and all(line.startswith("-- ") for line in pointer.splitlines())
    assert config.database in pointer and "AWS_SECRET_ACCESS_KEY" not in pointer.replace(
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", "")


def test_a_changed_pointer_or_manifest_is_refused(config):
    storage = Storage(config)
    full = native_backup(storage, config, T0)
    raw = json.loads(storage.get_bytes(manifest_key(full.key)))
    raw["native"]["collection"] = "elsewhere/other-app"  # signed: a redirect is caught
    storage.put_bytes(manifest_key(full.key), json.dumps(raw).encode(), "application/json")
    with pytest.raises(IntegrityError, match="signature"):
        resolve(storage, config, full.key)
    raw["format_version"] = 1  # a native manifest under the dump format: older tools would replay the pointer
    storage.put_bytes(manifest_key(full.key), json.dumps(raw).encode(), "application/json")
    with pytest.raises(IntegrityError, match="version 2 is for native backups only"):
        resolve(storage, config, full.key)


def test_as_of_must_lie_in_the_backup_and_needs_revision_history(config):
    storage = Storage(config)
    full = native_backup(storage, config, T0, revision_history=False)
    end = full.native["end_time"]
    assert native_restore.as_of_operand(config, full) == full.native["end_hlc"]
    with pytest.raises(ConfigError, match="after"):
        native_restore.check_method(replace(config, restore_as_of="2026-11-02T00:00:00Z"), full)
    with pytest.raises(ConfigError, match="no revision history"):
        native_restore.check_method(replace(config, restore_as_of="2026-11-01T00:00:30Z"), full)
    assert native_restore.as_of_operand(replace(config, restore_as_of=end), full) == full.native["end_hlc"]
    with_history = native_backup(storage, config, T0 + timedelta(days=1))
    assert native_restore.as_of_operand(replace(config, restore_as_of="2026-11-02T00:00:30Z"), with_history) == \
        "'2026-11-02 00:00:30.000000+00:00'"


def _keys(storage, config) -> set[str]:
    return {o.key for o in storage.list("")}


def test_prune_keeps_whole_chains_and_deletes_a_chains_data_only_when_it_is_gone(config):
    storage = Storage(config)
    chain_a = [native_backup(storage, config, T0)] + [
        native_backup(storage, config, T0 + timedelta(hours=h), chain_start=T0) for h in (1, 2)]
    other_prefix = "unrelated/2026/11/01-000100.00/keep.sst"  # not under the collection: never touched
    storage.put_bytes(other_prefix, b"x", "application/octet-stream")

    # KeepLast=1 keeps the newest incremental, so its full and the incremental before it too.
    summary = run_prune(replace(config, keep_last=1))
    assert summary.deleted == [] and len(summary.kept) == 3

    t1 = T0 + timedelta(days=7)
    chain_b = [native_backup(storage, config, t1), native_backup(storage, config, t1 + timedelta(hours=1),
                                                                 chain_start=t1)]
    before = _keys(storage, config)
    summary = run_prune(replace(config, keep_last=1))
    assert {d.key for d in summary.deleted} == {b.key for b in chain_a}
    after = _keys(storage, config)
    gone = before - after
    folder_a = chain_a[0].native["folder"]
    assert all(folder_a in k or k.startswith(tuple(b.key for b in chain_a)) for k in gone)
    collection = chain_a[0].native["collection"]
    assert not any(k.startswith(collection) and folder_a in k for k in after)  # its full backup and incrementals
    assert other_prefix in after
    for b in chain_b:
        assert b.key in after and manifest_key(b.key) in after
        assert all(path in after for path in _data_paths(b.native))


def test_prune_leaves_data_outside_the_collections_folder_alone(config):
    storage = Storage(config)
    stray = native_backup(storage, config, T0, collection=f"{config.key_prefix}elsewhere/app")
    native_backup(storage, config, T0 + timedelta(days=3))
    run_prune(replace(config, keep_last=1))
    remaining = _keys(storage, config)
    assert stray.key not in remaining  # its pointer and manifest go ...
    assert all(p in remaining for p in _data_paths(stray.native))  # ... the data it names does not
