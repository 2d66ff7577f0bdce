"""Settings, names and data shapes that used to fail late, mislead or grow without bound."""

from __future__ import annotations

import zlib

import pytest
import zstandard

from enclave_backup import compress, config
from enclave_backup.errors import ConfigError
from enclave_backup.names import MAX_NAME_BYTES, derived_pattern, previous_name, scratch_name

BASE = {"ENCLAVE_BACKUP_BUCKET": "backups"}


@pytest.mark.parametrize("name, value", [
    ("ENCLAVE_BACKUP_RETRY_SECONDS", "nan"),
    ("ENCLAVE_BACKUP_RETRY_SECONDS", "inf"),
    ("ENCLAVE_BACKUP_S3_READ_TIMEOUT", "-inf"),
    ("ENCLAVE_BACKUP_LOCK_TIMEOUT_SECONDS", "1e400"),
    ("ENCLAVE_BACKUP_PART_SIZE_MIB", "9" * 40),
    ("ENCLAVE_BACKUP_STALE_UPLOAD_SECONDS", "9" * 400),  # beyond any float
    ("ENCLAVE_BACKUP_UPLOAD_CONCURRENCY", "100000"),
    ("ENCLAVE_BACKUP_COMPRESSION_THREADS", "99999999999999999999"),
    ("PGPORT", "abc"),
    ("PGPORT", "70000"),
    ("PGSSLMODE", "bogus"),
    ("PGCONNECT_TIMEOUT", "soon"),
    ("ENCLAVE_BACKUP_BUCKET", "Bad Bucket!"),
    ("ENCLAVE_BACKUP_BUCKET", "ab"),
    ("ENCLAVE_BACKUP_INSTALLATION", "ns/\nrel"),
    ("AWS_ENDPOINT_URL", "s3.example.com"),
    ("AWS_ENDPOINT_URL", "https://s3.example.com:port"),
    ("AWS_CA_BUNDLE", "/nonexistent/ca.pem"),
])
def test_bad_settings_fail_up_front_naming_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        config.load({**BASE, name: value})


def test_a_missing_ca_certificate_fails_when_the_mode_needs_it():
    with pytest.raises(ConfigError, match="PGSSLROOTCERT"):
        config.load({**BASE, "PGSSLMODE": "verify-full", "PGSSLROOTCERT": "/nonexistent/root.crt"})
    config.load({**BASE, "PGSSLMODE": "verify-full", "PGSSLROOTCERT": "system"})  # libpq's system store


def test_good_settings_pass():
    loaded = config.load({**BASE, "PGPORT": "5432", "PGSSLMODE": "verify-full", "ENCLAVE_BACKUP_RETRY_SECONDS": "0.5",
                          "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
                          "ENCLAVE_BACKUP_INSTALLATION": "prod/data-shield"})
    assert loaded.retry_total_seconds == 0.5 and loaded.source_installation == "prod/data-shield"
    dr = config.load({**BASE, "ENCLAVE_BACKUP_RESTORE_SOURCE_INSTALLATION": "old/release"})
    assert dr.installation == "default" and dr.source_installation == "old/release"


STAMP = "20260102030405"
LONG = [
    "d" * 37, "d" * 63, "é" * 31 + "x",  # 63 bytes, a two-byte character at every cut
    "shared_beginning_" + "a" * 40 + "_one", "shared_beginning_" + "a" * 40 + "_two",
]


@pytest.mark.parametrize("database", ["malbork", *LONG])
def test_derived_names_fit_and_match_their_own_pattern(database):
    for kind, derive in (("restoring", scratch_name), ("pre_restore", previous_name)):
        name = derive(database, STAMP)
        assert len(name.encode()) <= MAX_NAME_BYTES
        name.encode().decode("utf-8")  # never half a character
        assert derived_pattern(database, kind).match(name)
    assert scratch_name("malbork", STAMP) == "malbork_restoring_20260102030405"  # short names unchanged


def test_derived_names_of_long_names_never_collide():
    names = {derive(db, STAMP) for db in LONG for derive in (scratch_name, previous_name)}
    assert len(names) == 2 * len(LONG)
    assert not derived_pattern(LONG[3], "pre_restore").match(previous_name(LONG[4], STAMP))


def test_threads_follow_the_container_not_the_node(tmp_path, monkeypatch):
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # a pod limit of 1.5 CPUs
    assert compress.cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert compress.cgroup_cpu_limit(tmp_path) is None
    monkeypatch.setattr(compress.os, "sched_getaffinity", lambda _pid: set(range(128)))  # a 128-core node
    monkeypatch.setattr(compress, "cgroup_cpu_limit", lambda: None)
    assert compress.worker_count(0) == compress.MAX_AUTO_THREADS
    monkeypatch.setattr(compress, "cgroup_cpu_limit", lambda: 1.5)
    assert compress.worker_count(0) == 2
    assert compress.worker_count(7) == 7  # an explicit setting wins


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_decompression_output_is_bounded_per_piece(kind):
    sql = b"INSERT INTO t VALUES ('" + b"a" * (256 << 20) + b"');\n"  # 256 MiB of one byte
    if kind == "gzip":
        engine = zlib.compressobj(9, zlib.DEFLATED, 31)
        stored = engine.compress(sql) + engine.flush()
    else:
        stored = zstandard.ZstdCompressor(level=19).compress(sql)
    del sql
    assert len(stored) < 1 << 20  # the whole object arrives as one read
    total = 0
    for piece in compress.decompressed(kind, [stored]):
        assert len(piece) <= compress.OUTPUT_CHUNK
        total += len(piece)
    assert total == (256 << 20) + 27
