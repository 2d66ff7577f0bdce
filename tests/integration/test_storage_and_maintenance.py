"""The edges restore and backup stand on, against the real servers: a missing database told
apart at connect, the maintenance connection's fall-back, and an upload that ends unasked."""

from __future__ import annotations

import pytest

from enclave_backup import config as config_mod
from enclave_backup import db
from enclave_backup.errors import IntegrityError, NoSuchDatabase, StorageError
from enclave_backup.maintenance import connect_maintenance
from enclave_backup.manifest import Manifest
from enclave_backup.s3 import Storage


@pytest.fixture
def env(pg, moto, bucket, dbname, monkeypatch):
    for name, value in {**pg.env(dbname), **moto.env(), "ENCLAVE_BACKUP_BUCKET": bucket}.items():
        monkeypatch.setenv(name, value)
    return config_mod.load()


def _manifest(engine: str) -> Manifest:
    return Manifest(key="k", database="malbork", engine=engine, server_version="", started_at="",
                    finished_at="", compression="none", stored_size=0, sha256="", uncompressed_size=0)


def test_a_missing_database_is_told_apart_at_connect(env):
    # libpq gives a failed connect no SQLSTATE: the server's FATAL 3D000 arrives as text only.
    with pytest.raises(NoSuchDatabase, match=r"database 'nowhere_db' does not exist on the server") as caught:
        db.connect(env, dbname="nowhere_db")
    assert caught.value.exit_code == 3


def test_maintenance_connection_falls_back_along_the_engines_list(env):
    # A CockroachDB backup: defaultdb is tried first; this PostgreSQL server has none, so
    # `postgres` is next, and there the engine check refuses the backup.
    with pytest.raises(IntegrityError, match="is a cockroachdb backup; the server is postgresql"):
        connect_maintenance(env, _manifest("cockroachdb"))
    conns, sql = connect_maintenance(env, _manifest("postgresql"))
    with conns:
        assert conns.maintenance.info.dbname == "postgres" and sql.name == "postgresql"


def test_an_upload_left_without_complete_leaves_nothing(env, moto, bucket):
    storage = Storage(env)
    with storage.start_upload("p/unasked.sql.gz", "application/gzip", {}) as upload:
        upload.write(b"x" * 1024)
    s3 = moto.client()
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert storage.head("p/unasked.sql.gz") is None


def test_an_upload_completed_in_the_block_is_visible_once(env, moto, bucket):
    storage = Storage(env)
    with storage.start_upload("p/asked.sql.gz", "application/gzip", {"run": "r1"}) as upload:
        upload.write(b"y" * 2048)
        upload.complete()
    head = storage.head("p/asked.sql.gz")
    assert head is not None and head.size == 2048 and head.metadata == {"run": "r1"}
    with storage.open_read("p/asked.sql.gz") as reader:
        assert reader.read(1000) == b"y" * 1000 and reader.read() == b"y" * 1048 and reader.read(1) == b""
    # A second run never replaces it (If-None-Match on complete).
    with pytest.raises(StorageError, match="already exists"):
        with storage.start_upload("p/asked.sql.gz", "application/gzip", {}) as again:
            again.write(b"z")
            again.complete()
    assert moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_read_of_a_missing_object_is_a_storage_error(env):
    with pytest.raises(StorageError, match=r"reading s3://.*/p/none: no such object"):
        Storage(env).open_read("p/none")


def test_the_tail_of_an_upload_goes_as_parallel_parts_of_at_least_the_minimum(env, moto, bucket):
    storage = Storage(env)
    chunk = bytes(range(256)) * 4096  # 1 MiB
    with storage.start_upload("p/tail.sql.gz", "application/gzip", {}) as upload:
        for i in range(33):  # one full 20 MiB part, then 13 MiB left when the dump ends
            upload.write(chunk[i:] + chunk[:i])
        upload.complete()
    s3 = moto.client()
    sizes = [s3.head_object(Bucket=bucket, Key="p/tail.sql.gz", PartNumber=n)["ContentLength"] for n in (1, 2, 3)]
    assert sizes == [20 << 20, 7 << 20, 6 << 20]  # the 13 MiB as two parts, each over S3's 5 MiB minimum
    assert s3.head_object(Bucket=bucket, Key="p/tail.sql.gz")["ETag"].endswith('-3"')
    body = s3.get_object(Bucket=bucket, Key="p/tail.sql.gz")["Body"].read()
    assert body == b"".join(chunk[i:] + chunk[:i] for i in range(33))
