"""`latest` means this database's newest real backup; a foreign object is refused before anything changes."""

from __future__ import annotations

import json
import time

import pytest

from devkit.corpus import build_corpus, fingerprint
from devkit.signingkeys import signed
from tests.conftest import SIGNING_KEYS, backup as _backup, run_cli


def _fp(pg, database: str) -> dict:
    with pg.connect(database) as conn:
        return fingerprint(conn)


def _listed(env: dict) -> list[dict]:
    result = run_cli(env, "list", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def shared(cli_env, pg, dbname):
    """Two installations writing the same database name into one bucket, default (empty) prefix."""
    with pg.connect(dbname) as conn:
        build_corpus(conn)
    env = {**cli_env, "ENCLAVE_BACKUP_PREFIX": ""}
    return {"a": {**env, "ENCLAVE_BACKUP_INSTALLATION": "team-a/data-shield"},
            "b": {**env, "ENCLAVE_BACKUP_INSTALLATION": "team-b/data-shield"}}


def test_installations_sharing_a_bucket_each_restore_their_own(pg, dbname, shared):
    key_a = _backup(shared["a"])
    data_a = _fp(pg, dbname)
    with pg.connect(dbname) as conn:
        conn.execute("INSERT INTO public.child VALUES (41, 1)")
    data_b = _fp(pg, dbname)
    key_b = _backup(shared["b"])  # newer, and of a database with the same name

    assert [b["key"] for b in _listed(shared["a"])] == [key_a]
    assert [b["key"] for b in _listed(shared["b"])] == [key_b]
    result = run_cli(shared["a"], "restore", "--object", "latest")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.event("restore complete")["key"] == key_a and _fp(pg, dbname) == data_a

    refused = run_cli(shared["a"], "restore", "--object", key_b)
    assert refused.returncode == 5
    error = refused.event("restore failed")["error"]
    assert "team-b/data-shield" in error and "ENCLAVE_BACKUP_RESTORE_SOURCE_INSTALLATION" in error
    assert _fp(pg, dbname) == data_a

    # Disaster recovery: restoring the other installation's backup is an explicit choice.
    chosen = run_cli({**shared["a"], "ENCLAVE_BACKUP_RESTORE_SOURCE_INSTALLATION": "team-b/data-shield"},
                     "restore", "--object", "latest")
    assert chosen.returncode == 0, chosen.stdout + chosen.stderr
    assert chosen.event("restore complete")["key"] == key_b and _fp(pg, dbname) == data_b


@pytest.mark.parametrize("forge_metadata", [False, True], ids=["metadata-kept", "metadata-forged"])
def test_a_renamed_backup_of_another_database_is_refused(moto, bucket, pg, dbname, cli_env, forge_metadata):
    other = f"{dbname}_other"
    pg.create_database(other)
    with pg.connect(other) as conn:
        conn.execute("CREATE TABLE intruder (v text)")
        conn.execute("INSERT INTO intruder VALUES ('not this database')")
    foreign = _backup({**cli_env, "PGDATABASE": other})
    with pg.connect(dbname) as conn:
        conn.execute("CREATE TABLE live (v text)")
        conn.execute("INSERT INTO live VALUES ('keep me')")
    before = _fp(pg, dbname)

    client = moto.client()
    key = foreign.replace(other, dbname)
    copy = {"Bucket": bucket, "Key": key, "CopySource": {"Bucket": bucket, "Key": foreign}}
    if forge_metadata:
        head = client.head_object(Bucket=bucket, Key=foreign)["Metadata"]
        copy.update(MetadataDirective="REPLACE", Metadata={**head, "database": dbname})
    client.copy_object(**copy)
    manifest = json.loads(client.get_object(Bucket=bucket, Key=foreign + ".manifest.json")["Body"].read())
    manifest.update(key=key, database=dbname)
    # Signed as if by the backup Job itself: the header must still give the rename away.
    client.put_object(Bucket=bucket, Key=key + ".manifest.json", Body=signed(manifest, SIGNING_KEYS))

    for target in (key, "latest"):
        result = run_cli(cli_env, "restore", "--object", target)
        assert result.returncode == 5, result.stdout + result.stderr
        error = result.event("restore failed")["error"]
        assert "its header disagrees with its manifest" in error, error  # the script's own first line
        assert other in error and "nothing was changed" in error
    assert _fp(pg, dbname) == before
    with pg.connect() as conn:  # no scratch database was even created
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                            (dbname + "_restoring%",))]
    assert names == []


def test_a_key_or_manifest_dated_in_the_future_does_not_stay_latest(moto, bucket, pg, dbname, cli_env):
    with pg.connect(dbname) as conn:
        build_corpus(conn)
    first = _backup(cli_env)
    # The store stamps objects in whole seconds: keep each step in a second of its own.
    time.sleep(1.1)
    client = moto.client()
    forged = first.replace(first.split("-")[-2], "20991231T235959Z")
    client.copy_object(Bucket=bucket, Key=forged, CopySource={"Bucket": bucket, "Key": first})
    manifest = json.loads(client.get_object(Bucket=bucket, Key=first + ".manifest.json")["Body"].read())
    manifest.update(key=forged, started_at="2099-12-31T23:59:59Z", finished_at="2099-12-31T23:59:59Z")
    client.put_object(Bucket=bucket, Key=forged + ".manifest.json", Body=json.dumps(manifest).encode())
    client.put_object(Bucket=bucket, Key=forged + ".verify.json", Body=b"{}")  # results beside a backup
    time.sleep(1.1)
    newest = _backup(cli_env)

    listed = _listed(cli_env)
    assert [b["key"] for b in listed] == [newest, forged, first]  # the real newest comes first
    assert [b["clocks_disagree"] for b in listed] == [False, True, False]
    text = run_cli(cli_env, "list").stdout
    assert "in the future" in text.splitlines()[2] and forged in text.splitlines()[2]
    result = run_cli(cli_env, "restore", "--object", "latest")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.event("restore complete")["key"] == newest
