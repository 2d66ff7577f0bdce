"""Signed manifests: restore and verify replay nothing the backup Job's key did not vouch for.

The attacker here holds the bucket's keys only: they can rewrite objects and manifests
(and recompute every sha256), but not sign. Real PostgreSQL, moto S3 in auth mode.
"""

from __future__ import annotations

import json
import uuid

import pytest

from devkit.corpus import build_corpus, fingerprint
from devkit.signingkeys import make_signing_keys, signed
from enclave_backup.errors import IntegrityError
from enclave_backup.s3 import Storage
from enclave_backup import config as config_mod
from tests.conftest import backup, plant_statement, run_cli


def _get(s3, bucket, key) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def _manifest(s3, bucket, key) -> dict:
    return json.loads(_get(s3, bucket, key + ".manifest.json"))


def _put_manifest(s3, bucket, key, manifest: dict | bytes) -> None:
    body = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    s3.put_object(Bucket=bucket, Key=key + ".manifest.json", Body=body)


@pytest.fixture
def made(pg, moto, bucket, dbname, cli_env):
    """A signed backup of a small corpus, then a change to the live database the backup does not hold."""
    with pg.connect(dbname) as conn:
        build_corpus(conn)
    key = backup(cli_env)
    with pg.connect(dbname) as conn:
        conn.execute("INSERT INTO public.child VALUES (40, 2)")
    return key


def _fp(pg, dbname):
    with pg.connect(dbname) as conn:
        return fingerprint(conn)


def _refused(pg, dbname, env, key, command, says):
    """`command` exits 5 saying `says`, having created no database and changed nothing."""
    before, databases = _fp(pg, dbname), set(pg.databases())
    result = run_cli(env, command, "--object", key)
    assert result.returncode == 5, result.stdout + result.stderr
    error = result.event(f"{command} failed")["error"]
    assert says in error and "nothing was run or changed" in error, error
    assert _fp(pg, dbname) == before and set(pg.databases()) == databases
    return result


@pytest.mark.parametrize("recompute", [True, False], ids=["sha256-recomputed", "manifest-untouched"])
def test_a_program_planted_in_the_object_never_runs(pg, moto, bucket, dbname, cli_env, made, tmp_path, recompute):
    marker = tmp_path / f"owned-{uuid.uuid4().hex[:6]}"
    tmp_path.chmod(0o777)  # the server's OS user could write here: only the refusal keeps the file away
    s3 = moto.client()
    plant_statement(s3, bucket, made, f"COPY (SELECT 1) TO PROGRAM 'touch {marker}';", recompute=recompute)
    says = "its signature does not match its content" if recompute else "its manifest says"
    for command in ("verify", "restore"):
        _refused(pg, dbname, cli_env, made, command, says)
        assert not marker.exists()
    listed = run_cli(cli_env, "list", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = json.loads(listed.stdout[listed.stdout.index("\n[") + 1:] if "\n[" in listed.stdout else listed.stdout)
    assert [row["verified"] for row in rows if row["key"] == made] == [False]  # the failed verify, not a pass


def test_a_tampered_manifest_is_refused(pg, moto, bucket, dbname, cli_env, made):
    s3 = moto.client()
    manifest = _manifest(s3, bucket, made)
    manifest["tables"] = {name: 0 for name in manifest["tables"]}  # claims empty tables: verify would count 0
    _put_manifest(s3, bucket, made, manifest)
    for command in ("verify", "restore"):
        _refused(pg, dbname, cli_env, made, command, "its signature does not match its content")


def test_a_manifest_signed_by_another_key_is_refused(pg, moto, bucket, dbname, cli_env, made, tmp_path):
    s3 = moto.client()
    theirs = make_signing_keys(tmp_path / "attacker")
    _put_manifest(s3, bucket, made, signed(_manifest(s3, bucket, made), theirs))
    for command in ("verify", "restore"):
        result = _refused(pg, dbname, cli_env, made, command, "which is not among the trusted keys")
        assert json.loads(_get(s3, bucket, made + ".manifest.json"))["signature"]["key_id"] in result.stdout


def test_an_unsigned_backup_is_refused_unless_the_override_is_set(pg, moto, bucket, dbname, cli_env):
    with pg.connect(dbname) as conn:
        build_corpus(conn)
    at_backup = _fp(pg, dbname)
    unsigned_env = {k: v for k, v in cli_env.items() if k != "ENCLAVE_BACKUP_SIGNING_KEY_FILE"}
    made = run_cli(unsigned_env, "backup")
    assert made.returncode == 0, made.stdout + made.stderr
    assert "this backup is not signed" in made.stdout
    key = made.event("backup complete")["key"]
    assert _manifest(moto.client(), bucket, key)["signature"] is None
    with pg.connect(dbname) as conn:
        conn.execute("INSERT INTO public.child VALUES (40, 2)")

    for command in ("verify", "restore"):
        _refused(pg, dbname, cli_env, key, command, "it is not signed")
    # No public key at all: refused too, naming what to set.
    no_key = {k: v for k, v in cli_env.items() if not k.startswith("ENCLAVE_BACKUP_SIGNING")}
    _refused(pg, dbname, no_key, key, "restore", "ENCLAVE_BACKUP_SIGNING_PUBLIC_KEY_FILE")

    allowed = run_cli({**cli_env, "ENCLAVE_BACKUP_ALLOW_UNVERIFIED": "true"}, "restore", "--object", key)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    warned = allowed.event("replaying a backup whose signature is not proved, because "
                           "ENCLAVE_BACKUP_ALLOW_UNVERIFIED is set")
    assert warned["level"] == "warning" and warned["reason"] == "it is not signed"
    assert _fp(pg, dbname) == at_backup


def test_a_key_being_rotated_out_still_verifies(pg, moto, bucket, dbname, cli_env, made, tmp_path, signing_keys):
    """public.pem may hold the new key and the old one: backups signed by either restore."""
    new = make_signing_keys(tmp_path / "new")
    both = tmp_path / "both.pem"
    both.write_bytes(new.public.read_bytes() + signing_keys.public.read_bytes())
    result = run_cli({**cli_env, "ENCLAVE_BACKUP_SIGNING_PUBLIC_KEY_FILE": str(both)}, "verify", "--object", made)
    assert result.returncode == 0, result.stdout + result.stderr
    only_new = run_cli({**cli_env, "ENCLAVE_BACKUP_SIGNING_PUBLIC_KEY_FILE": str(new.public)},
                       "verify", "--object", made)
    assert only_new.returncode == 5 and "not among the trusted keys" in only_new.stdout


def test_bad_key_files_fail_before_any_work_without_showing_the_key(moto, bucket, cli_env, signing_keys, tmp_path):
    private = signing_keys.private.read_text()
    not_a_key = tmp_path / "private.pem"
    not_a_key.write_text(private.replace("PRIVATE KEY", "PUBLIC KEY"))
    result = run_cli({**cli_env, "ENCLAVE_BACKUP_SIGNING_KEY_FILE": str(not_a_key)}, "backup")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "holds no unencrypted ed25519 private key" in result.stdout and str(not_a_key) in result.stdout
    assert not list(moto.client().list_objects_v2(Bucket=bucket).get("Contents", []))

    # The private key where restore wants the public one: refused, so no reading pod can sign.
    wrong = run_cli({**cli_env, "ENCLAVE_BACKUP_SIGNING_PUBLIC_KEY_FILE": str(signing_keys.private)},
                    "restore", "--object", "latest")
    assert wrong.returncode == 2 and "holds a private key" in wrong.stdout
    body = private.split("-----")[2].strip()
    for shown in (result, wrong):
        assert body not in shown.stdout + shown.stderr


def test_the_private_key_is_in_no_log_and_no_manifest(pg, moto, bucket, dbname, cli_env, signing_keys):
    result = run_cli(cli_env, "backup")
    assert result.returncode == 0, result.stdout + result.stderr
    key = result.event("backup complete")["key"]
    pem = signing_keys.private.read_text()
    body = pem.split("-----")[2].strip()
    raw = signing_keys.private_key().private_bytes_raw()
    stored = _get(moto.client(), bucket, key + ".manifest.json")
    for text in (result.stdout, result.stderr, stored.decode()):
        assert body not in text and raw.hex() not in text
    assert raw not in stored


def test_a_proved_object_replaced_before_the_replay_is_not_read(moto, bucket, cli_env, monkeypatch):
    """Between the check and the replay the object is read only in the version checked (If-Match)."""
    for name, value in cli_env.items():
        if name.startswith("AWS_"):  # boto3 reads them from the environment, as in the container
            monkeypatch.setenv(name, value)
    s3 = moto.client()
    s3.put_object(Bucket=bucket, Key="x.sql", Body=b"checked")
    storage = Storage(config_mod.load(cli_env))
    with storage.open_read("x.sql") as reader:
        assert reader.read() == b"checked"
    storage.pin("x.sql", reader.etag)
    s3.put_object(Bucket=bucket, Key="x.sql", Body=b"COPY (SELECT 1) TO PROGRAM 'id';")
    with pytest.raises(IntegrityError, match="was replaced after it was checked"):
        storage.open_read("x.sql")
