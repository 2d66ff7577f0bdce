"""Client-side age encryption against the real servers: the backup holds only public recipients,
restore and verify decrypt with a mounted identity, and Debian's `age` reads the object by hand."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devkit.corpus import build_corpus, fingerprint
from enclave_backup.encryption import fingerprint as recipient_fingerprint
from tests.conftest import run_cli

PLANTED = "planted-secret-row-value-7f3a9c"
EXT = {"gzip": ".sql.gz.age", "zstd": ".sql.zst.age", "none": ".sql.age"}


@dataclass(frozen=True)
class Key:
    recipient: str  # what Backup.Encryption.Recipients holds
    identity: Path  # the file restore.identitySecretName mounts as identity.txt
    secret: str  # what must never reach a log

    def backup_env(self) -> dict[str, str]:
        return {"ENCLAVE_BACKUP_ENCRYPTION_RECIPIENTS": self.recipient}

    def reader_env(self) -> dict[str, str]:
        return {"ENCLAVE_BACKUP_ENCRYPTION_IDENTITY_FILE": str(self.identity)}


def age_key(directory: Path) -> Key:
    """As docs/security.md says: `age-keygen -o identity.txt`, recipient from `age-keygen -y`."""
    path = directory / "identity.txt"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True,
                               text=True).stdout.strip()
    secret = next(line for line in path.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-"))
    return Key(recipient, path, secret)


def ssh_key(directory: Path) -> Key:
    """An OpenSSH ed25519 key pair, as `ssh-keygen -t ed25519 -N ''` writes it."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    path = directory / "id_ed25519"
    path.write_bytes(private)
    path.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    body = b"".join(line for line in private.splitlines() if not line.startswith(b"-----")).decode()
    return Key(public.decode() + " operator@example", path, body[-100:-20])  # the private half's base64


@pytest.fixture
def keys(tmp_path):
    made = {}

    def get(kind: str, name: str = "a") -> Key:
        if (kind, name) not in made:
            directory = tmp_path / f"{kind}-{name}"
            directory.mkdir()
            made[kind, name] = age_key(directory) if kind == "age" else ssh_key(directory)
        return made[kind, name]

    return get


def _seed(pg, dbname: str) -> dict:
    with pg.connect(dbname) as conn:
        build_corpus(conn)
        conn.execute("CREATE TABLE planted (v text)")
        conn.execute("INSERT INTO planted VALUES (%s)", (PLANTED,))
        return fingerprint(conn)


def _fp(pg, dbname: str) -> dict:
    with pg.connect(dbname) as conn:
        return fingerprint(conn)


def _get(moto, bucket: str, key: str) -> bytes:
    return moto.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def _no_secret(key: Key, *results) -> None:
    for result in results:
        assert key.secret not in result.stdout and key.secret not in result.stderr


def _error(result, command: str) -> str:
    return result.event(f"{command} failed")["error"]


def _scratch(pg, dbname: str) -> list[str]:
    return sorted(n for n in pg.databases() if n.startswith(dbname + "_") and n != dbname)


@pytest.mark.parametrize("kind", ["age", "ssh"])
@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_encrypted_backup_verifies_and_restores(pg, moto, bucket, dbname, cli_env, keys, kind, compression):
    before = _seed(pg, dbname)
    key = keys(kind)
    env = {**cli_env, "ENCLAVE_BACKUP_COMPRESSION": compression}
    made = run_cli({**env, **key.backup_env()}, "backup")
    assert made.returncode == 0, made.stdout + made.stderr
    summary = made.event("backup complete")
    object_key = summary["key"]
    assert object_key.endswith(EXT[compression])
    assert made.event("backup started")["encrypted_to"] == [recipient_fingerprint(key.recipient)]

    stored = _get(moto, bucket, object_key)
    manifest = json.loads(_get(moto, bucket, object_key + ".manifest.json"))
    assert stored.startswith(b"age-encryption.org/v1\n")
    assert PLANTED.encode() not in stored and b"CREATE TABLE" not in stored
    assert manifest["encryption"] == {"scheme": "age", "recipients": [recipient_fingerprint(key.recipient)]}
    assert manifest["sha256"] == hashlib.sha256(stored).hexdigest() and manifest["stored_size"] == len(stored)
    head = moto.client().head_object(Bucket=bucket, Key=object_key)
    assert head["ContentType"] == "application/octet-stream"

    reader = {**env, **key.reader_env()}
    verified = run_cli(reader, "verify", "--object", object_key)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.event("verify complete")["rows"] > 0

    with pg.connect(dbname) as conn:
        conn.execute("DELETE FROM planted")
    restored = run_cli(reader, "restore", "--object", object_key)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert _fp(pg, dbname) == before
    _no_secret(key, made, verified, restored)


def test_debian_age_decrypts_by_hand_with_either_identity(pg, moto, bucket, dbname, cli_env, keys):
    """The README's manual path: `age -d -i key.txt < x.sql.gz.age | gunzip | psql ...`, for an
    age identity and an SSH key, both recipients of one backup."""
    before = _seed(pg, dbname)
    age, ssh = keys("age"), keys("ssh")
    env = {**cli_env, "ENCLAVE_BACKUP_ENCRYPTION_RECIPIENTS": f"{age.recipient}\n# the operator's SSH key\n"
                                                              f"{ssh.recipient}\n"}
    made = run_cli(env, "backup")
    assert made.returncode == 0, made.stdout + made.stderr
    object_key = made.event("backup complete")["key"]
    manifest = json.loads(_get(moto, bucket, object_key + ".manifest.json"))
    assert manifest["encryption"]["recipients"] == [recipient_fingerprint(age.recipient),
                                                    recipient_fingerprint(ssh.recipient)]
    stored = Path(os.environ.get("TMPDIR", "/tmp")) / f"{dbname}.sql.gz.age"
    stored.write_bytes(_get(moto, bucket, object_key))
    try:
        for identity in (age, ssh):
            target = f"{dbname}_byhand_{'ssh' if identity is ssh else 'age'}"
            pg.create_database(target)
            pipe = subprocess.run(
                ["bash", "-o", "pipefail", "-c", f"age -d -i {identity.identity} < {stored} | gunzip | "
                 f"psql -v ON_ERROR_STOP=1 -d {target}"],  # as docs/security.md says
                env={**os.environ, **pg.env(target)}, capture_output=True, text=True)
            assert pipe.returncode == 0, pipe.stderr
            assert _fp(pg, target) == before
    finally:
        stored.unlink()


def test_a_wrong_or_missing_identity_is_refused_before_any_work(pg, moto, bucket, dbname, cli_env, keys):
    _seed(pg, dbname)
    right, wrong = keys("age", "right"), keys("age", "wrong")
    made = run_cli({**cli_env, **right.backup_env()}, "backup")
    assert made.returncode == 0, made.stdout + made.stderr
    object_key = made.event("backup complete")["key"]
    with pg.connect(dbname) as conn:
        conn.execute("INSERT INTO planted VALUES ('written after the backup')")
    live = _fp(pg, dbname)
    scratch_before = _scratch(pg, dbname)
    fp = recipient_fingerprint(right.recipient)

    for command in (("restore", "--object", object_key), ("verify", "--object", object_key)):
        refused = run_cli({**cli_env, **wrong.reader_env()}, *command)
        assert refused.returncode == 5, refused.stdout + refused.stderr
        said = _error(refused, command[0])
        assert f"encrypted to recipients {fp}" in said and "ENCLAVE_BACKUP_ENCRYPTION_IDENTITY_FILE" in said
        assert "restore.identitySecretName" in said and "Verify.IdentitySecretName" in said
        _no_secret(wrong, refused)
        _no_secret(right, refused)

        missing = run_cli(cli_env, *command)
        assert missing.returncode == 2, missing.stdout + missing.stderr
        said = _error(missing, command[0])
        assert "is encrypted" in said and fp in said
        assert "no identity is configured: set ENCLAVE_BACKUP_ENCRYPTION_IDENTITY_FILE" in said

    assert _fp(pg, dbname) == live
    assert _scratch(pg, dbname) == scratch_before
    assert not any(e.get("event") in ("scratch database created", "verify scratch database created")
                   for e in refused.events + missing.events)


def test_a_private_key_or_a_bad_line_given_as_recipient_fails_the_backup_unechoed(moto, bucket, cli_env, keys):
    key = keys("age")
    for recipients, says in ((key.secret, "is a private key"),
                             (f"{key.recipient}\nage1notavalidrecipient", "recipient 2 in ENCLAVE_BACKUP_"),
                             ("gpg:0xDEADBEEF", "neither an age X25519 recipient")):
        failed = run_cli({**cli_env, "ENCLAVE_BACKUP_ENCRYPTION_RECIPIENTS": recipients}, "backup")
        assert failed.returncode == 2, failed.stdout + failed.stderr
        said = _error(failed, "backup")
        assert says in said and "Backup.Encryption.Recipients" in said
        _no_secret(key, failed)
    assert "Contents" not in moto.client().list_objects_v2(Bucket=bucket)
    assert not moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_a_plain_backup_still_restores_with_an_identity_configured(pg, dbname, cli_env, keys):
    before = _seed(pg, dbname)
    made = run_cli(cli_env, "backup")
    assert made.returncode == 0, made.stdout + made.stderr
    assert made.event("backup started")["encrypted_to"] is None
    restored = run_cli({**cli_env, **keys("age").reader_env()}, "restore", "--object", "latest")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert _fp(pg, dbname) == before


def test_sigterm_mid_encrypted_backup_leaves_nothing_and_stops_at_once(moto, bucket, bulk_env, keys):
    from tests.integration.test_backup_failures import Running, assert_nothing_left, uploaded_some_parts
    run = Running({**bulk_env, **keys("age").backup_env()}, "backup")
    run.wait_for(uploaded_some_parts)
    signalled = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    result = run.finish()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "SIGTERM" in result.event("backup failed")["error"]
    assert time.monotonic() - signalled < 10
    assert_nothing_left(moto, bucket)
