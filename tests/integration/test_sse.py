"""Server-side encryption against Ceph RGW (a real implementation; moto only echoes the headers).

RGW runs with its `testing` KMS backend (devkit.rgw). Each mode makes a backup that spans
several parts, then restore, verify and list read it back; the store's own record of each
object (radosgw-admin) and its raw RADOS data show what it really encrypted.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import uuid

import pytest

from devkit.corpus import add_bulk, build_corpus, fingerprint
from devkit.rgw import RgwServer
from tests.conftest import backup, run_cli

@pytest.fixture(scope="module")
def rgw():
    server = RgwServer().start()
    yield server
    server.stop()


@pytest.fixture
def planted() -> str:
    """A row value, new for each test, that must not be readable in the stored bytes."""
    return "planted-" + uuid.uuid4().hex


@pytest.fixture
def rgw_env(rgw, cli_env, pg, dbname, planted):
    bucket = f"sse-{uuid.uuid4().hex[:12]}"
    rgw.client().create_bucket(Bucket=bucket)
    with pg.connect(dbname) as conn:
        build_corpus(conn)
        add_bulk(conn, 15000, width=400)  # about 7 MB of SQL: two parts of 5 MiB
        conn.execute("CREATE TABLE public.planted (v text)")
        conn.execute("INSERT INTO public.planted VALUES (%s)", (planted,))
    return {**cli_env, **rgw.env(), "ENCLAVE_BACKUP_BUCKET": bucket, "ENCLAVE_BACKUP_COMPRESSION": "none",
            "ENCLAVE_BACKUP_PART_SIZE_MIB": "5"}


def _key_file(tmp_path, name: str) -> tuple[str, str]:
    """A file as the chart mounts it from the Secret (`openssl rand -base64 32`); the path and the key."""
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    path = tmp_path / name
    path.write_text(key + "\n")
    return str(path), key


def _sse_c(key: str) -> dict:
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": base64.b64decode(key)}


def _stored_attrs(rgw, bucket: str, key: str) -> dict[str, str]:
    """The object's attributes as RGW stores them (crypt.mode is what it really applied)."""
    out = subprocess.run(["radosgw-admin", "-c", os.path.join(rgw.dir, "ceph.conf"), "object", "stat",
                          f"--bucket={bucket}", f"--object={key}"], capture_output=True, check=True, timeout=60)
    return json.loads(out.stdout.decode(errors="replace"))["attrs"]


def _raw_data_holds(rgw, text: str) -> bool:
    """Whether any RADOS object of the data pool holds `text`: what someone with the disks would read."""
    rados = ["rados", "-c", os.path.join(rgw.dir, "ceph.conf"), "-p", "default.rgw.buckets.data"]
    oids = subprocess.run([*rados, "ls"], capture_output=True, text=True, check=True, timeout=60).stdout.split()
    assert oids
    return any(text.encode() in subprocess.run([*rados, "get", oid, "-"], capture_output=True, check=True,
                                               timeout=60).stdout for oid in oids)


def _fp(pg, dbname):
    with pg.connect(dbname) as conn:
        return fingerprint(conn)


def _databases(pg, dbname) -> list[str]:
    with pg.connect() as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1",
                                           (dbname + "%",)).fetchall()]


def _quiet(result, *secrets_: str) -> None:
    for secret in secrets_:
        assert secret not in result.stdout and secret not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("mode", ["AES256", "aws:kms", "SSE-C"])
def test_round_trip_with_each_sse_mode(rgw, rgw_env, planted, pg, dbname, tmp_path, mode):
    env = {**rgw_env, "ENCLAVE_BACKUP_SSE": mode}
    secret = rgw.secret_key
    read_key = {}
    if mode == "aws:kms":
        env["ENCLAVE_BACKUP_SSE_KMS_KEY_ID"] = rgw.kms_key_id
    if mode == "SSE-C":
        env["ENCLAVE_BACKUP_SSE_CUSTOMER_KEY_FILE"], secret = _key_file(tmp_path, "SSE_CUSTOMER_KEY")
        read_key = _sse_c(secret)
    bucket = env["ENCLAVE_BACKUP_BUCKET"]
    at_backup = _fp(pg, dbname)

    made = run_cli(env, "backup")
    assert made.returncode == 0, made.stdout + made.stderr
    key = made.event("backup complete")["key"]
    assert made.event("backup complete")["stored_bytes"] > 5 << 20  # more than one part
    s3 = rgw.client()
    for name in (key, key + ".manifest.json"):
        head = s3.head_object(Bucket=bucket, Key=name, **read_key)
        attrs = _stored_attrs(rgw, bucket, name)
        if mode == "SSE-C":
            assert head["SSECustomerAlgorithm"] == "AES256"
            assert attrs["user.rgw.crypt.mode"] == "SSE-C-AES256"
        elif mode == "aws:kms":
            assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", rgw.kms_key_id)
            assert attrs["user.rgw.crypt.mode"] == "SSE-KMS"
        else:
            # Ceph 16 records the header but encrypts nothing (SSE-S3 came in 17) and says nothing back:
            # the program warns that the store did not confirm it.
            assert attrs["user.rgw.x-amz-server-side-encryption"] == "AES256"
            assert "ServerSideEncryption" not in head and "user.rgw.crypt.mode" not in attrs
    unconfirmed = [e for e in made.events if "does not confirm the server-side encryption" in e.get("event", "")]
    assert len(unconfirmed) == (1 if mode == "AES256" else 0)
    assert _raw_data_holds(rgw, planted) == (mode == "AES256")

    with pg.connect(dbname) as conn:  # a change the restore must undo
        conn.execute("DELETE FROM public.planted")
    restored = run_cli(env, "restore", "--object", key)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert _fp(pg, dbname) == at_backup

    verified = run_cli(env, "verify", "--object", key)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    record = key + ".verify.json"
    if mode != "AES256":
        assert _stored_attrs(rgw, bucket, record)["user.rgw.crypt.mode"] == \
            {"SSE-C": "SSE-C-AES256", "aws:kms": "SSE-KMS"}[mode]
    listed = run_cli(env, "list", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    (entry,) = json.loads(listed.stdout)
    assert entry["key"] == key and entry["verified"] is True

    for result in (made, restored, verified, listed):
        _quiet(result, secret, rgw.secret_key, rgw.kms_key)
        assert "plain http" not in result.stdout  # loopback: no warning


def test_an_sse_c_backup_is_unreadable_without_its_key_and_a_wrong_key_changes_nothing(
        rgw, rgw_env, pg, dbname, tmp_path):
    key_file, key = _key_file(tmp_path, "SSE_CUSTOMER_KEY")
    env = {**rgw_env, "ENCLAVE_BACKUP_SSE": "SSE-C", "ENCLAVE_BACKUP_SSE_CUSTOMER_KEY_FILE": key_file}
    bucket = env["ENCLAVE_BACKUP_BUCKET"]
    made = backup(env)
    s3 = rgw.client()
    for name in (made, made + ".manifest.json"):
        for call in (s3.head_object, s3.get_object):
            with pytest.raises(s3.exceptions.ClientError) as refused:
                call(Bucket=bucket, Key=name)
            assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert s3.get_object(Bucket=bucket, Key=made, **_sse_c(key))["Body"].read(100)

    with pg.connect(dbname) as conn:
        conn.execute("DELETE FROM public.planted")
    live, dbs = _fp(pg, dbname), _databases(pg, dbname)
    wrong_file, wrong = _key_file(tmp_path, "WRONG_KEY")
    for case, case_env, says in [
        ("wrong key", {**env, "ENCLAVE_BACKUP_SSE_CUSTOMER_KEY_FILE": wrong_file}, "is wrong"),
        ("no key", {k: v for k, v in env.items() if not k.startswith("ENCLAVE_BACKUP_SSE")}, "no key was given"),
    ]:
        result = run_cli(case_env, "restore", "--object", made)
        assert result.returncode == 4, (case, result.stdout + result.stderr)
        error = result.event("restore failed")["error"]
        assert "SSE-C encrypted" in error and says in error, error
        assert "ENCLAVE_BACKUP_SSE_CUSTOMER_KEY_FILE" in error and "global.S3.SseCustomerKeySecretName" in error
        _quiet(result, key, wrong, rgw.secret_key)
        assert _fp(pg, dbname) == live and _databases(pg, dbname) == dbs  # nothing created, renamed or loaded


def test_a_plain_http_endpoint_outside_the_cluster_is_warned_about_once(cli_env):
    env = {**cli_env, "AWS_ENDPOINT_URL": "http://s3.example.invalid:9000", "ENCLAVE_BACKUP_S3_MAX_ATTEMPTS": "1",
           "ENCLAVE_BACKUP_S3_CONNECT_TIMEOUT": "2"}
    result = run_cli(env, "check", timeout=60)
    assert result.returncode == 4, result.stdout + result.stderr
    warnings = [e for e in result.events if e.get("level") == "warning" and "plain http" in e["event"]]
    assert len(warnings) == 1 and warnings[0]["host"] == "s3.example.invalid"


def test_a_bad_sse_c_key_file_is_exit_2_without_quoting_it(cli_env, tmp_path):
    path = tmp_path / "SSE_CUSTOMER_KEY"
    path.write_text("c2hvcnQta2V5LW5vdC0zMi1ieXRlcw==\n")  # base64, but of 22 bytes
    env = {**cli_env, "ENCLAVE_BACKUP_SSE": "SSE-C", "ENCLAVE_BACKUP_SSE_CUSTOMER_KEY_FILE": str(path)}
    for command in ("check", "list"):
        result = run_cli(env, command)
        assert result.returncode == 2, result.stdout + result.stderr
        error = result.event(f"{command} failed")["error"]
        assert "not the base64 of 32 bytes" in error and "openssl rand -base64 32" in error
        _quiet(result, "c2hvcnQta2V5LW5vdC0zMi1ieXRlcw==")
