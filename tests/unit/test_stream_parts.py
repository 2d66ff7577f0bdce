"""Pure logic of the stream: part sizing, keys, manifests, compression round trips, config."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
from datetime import datetime, timezone

import pytest
import zstandard

from enclave_backup import compress, config, log, manifest, s3
from enclave_backup.errors import ConfigError, IntegrityError

MiB = 1 << 20
TiB = 1 << 40


def test_default_part_size_holds_a_tebibyte_in_ten_thousand_parts():
    base = config.load({"ENCLAVE_BACKUP_BUCKET": "bkt"}).part_size
    assert s3.capacity(base) >= TiB
    assert s3.part_size(base, 1) == base == 20 * MiB
    assert s3.part_size(base, 1000) == base and s3.part_size(base, 1001) == 2 * base
    assert s3.part_size(base, s3.MAX_PARTS) == 10 * base <= 5 * 1024 * MiB  # S3's largest part


def test_object_key_layout():
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert manifest.object_key("", "malbork", started, "gzip") == "malbork-20260102T030405Z.sql.gz"
    key = manifest.object_key("a/b/", "malbork", started, "zstd")
    assert key == "a/b/malbork-20260102T030405Z.sql.zst"
    assert manifest.parse_key(key, "a/b/") == ("malbork", started)
    assert manifest.parse_key(key, "a/") is None  # deeper prefixes are not ours
    assert manifest.parse_key("a/b/malbork-2026.sql.gz", "a/b/") is None
    with_run = manifest.object_key("", "malbork", started, "gzip", "0123456789abcdef")
    assert with_run == "malbork-20260102T030405Z-0123456789abcdef.sql.gz"
    assert manifest.parse_key(with_run, "") == ("malbork", started)
    assert manifest.parse_key(with_run + ".verify.json", "") is None  # verification results are no backups


@pytest.mark.parametrize("name", ["a/b", "ünïcødé", "100%", "sp ace", "x-20260102T030405Z.sql.gz"])
def test_odd_database_names_round_trip_through_keys(name):
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    key = manifest.object_key("p/", name, started, "gzip", "00ff00ff00ff00ff")
    assert key.isascii() and "/" not in key[len("p/"):]
    assert manifest.parse_key(key, "p/") == (name, started)


def test_prefix_is_normalised():
    assert config.load({"ENCLAVE_BACKUP_BUCKET": "bkt", "ENCLAVE_BACKUP_PREFIX": "/x/y/"}).key_prefix == "x/y/"
    assert config.load({"ENCLAVE_BACKUP_BUCKET": "bkt"}).key_prefix == ""


@pytest.mark.parametrize("env, words", [
    ({}, "ENCLAVE_BACKUP_BUCKET is not set"),
    ({"ENCLAVE_BACKUP_BUCKET": "bkt", "ENCLAVE_BACKUP_COMPRESSION_LEVEL": "12"}, "above 9"),
    ({"ENCLAVE_BACKUP_BUCKET": "bkt", "ENCLAVE_BACKUP_UPLOAD_CONCURRENCY": "x"}, "not an integer"),
    ({"ENCLAVE_BACKUP_BUCKET": "bkt", "ENCLAVE_BACKUP_RESTORE_FORCE": "maybe"}, "not a boolean"),
])
def test_config_errors_name_the_variable(env, words):
    with pytest.raises(ConfigError, match=words):
        config.load(env)


def _compress(kind: str, data: bytes, level=None) -> bytes:
    out = []
    stage = compress.compressor(kind, out.append, level, threads=2)
    for i in range(0, len(data), 300_000):
        stage.write(data[i:i + 300_000])
    stage.close()
    return b"".join(out)


SAMPLE = b"".join(b"%d\tline with some text \\N and more\n" % i for i in range(200_000))


@pytest.mark.parametrize("kind", ["gzip", "zstd", "none"])
def test_compression_round_trip_through_our_decompressor(kind):
    stored = _compress(kind, SAMPLE)
    out = b"".join(compress.decompressed(kind, (stored[i:i + 7777] for i in range(0, len(stored), 7777))))
    assert out == SAMPLE


@pytest.mark.parametrize("level", range(1, 10))
def test_every_gzip_level_is_one_file_for_standard_tools_and_for_us(level):
    # 1-3 are ISA-L's deflate, 4-9 zlib's: either way gunzip and our reader take it.
    stored = _compress("gzip", SAMPLE, level)
    assert gzip.decompress(stored) == SAMPLE
    assert subprocess.run(["gzip", "-dc"], input=stored, capture_output=True, check=True).stdout == SAMPLE
    assert b"".join(compress.decompressed("gzip", [stored])) == SAMPLE


def test_a_file_from_gzip_itself_reads_back():
    stored = subprocess.run(["gzip", "-6", "-c"], input=SAMPLE, capture_output=True, check=True).stdout
    assert b"".join(compress.decompressed("gzip", [stored])) == SAMPLE


def test_parallel_gzip_is_one_file_for_standard_tools():
    stored = _compress("gzip", SAMPLE)
    assert gzip.decompress(stored) == SAMPLE
    assert subprocess.run(["gzip", "-dc"], input=stored, capture_output=True, check=True).stdout == SAMPLE
    assert len(stored) < len(SAMPLE) / 4


def test_zstd_is_readable_by_the_reference_library():
    stored = _compress("zstd", SAMPLE)
    assert zstandard.ZstdDecompressor().decompressobj().decompress(stored) == SAMPLE


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_truncated_stream_is_an_integrity_error_or_ends_short(kind):
    stored = _compress(kind, SAMPLE)
    cut = [stored[: len(stored) // 2]]
    if kind == "gzip":
        with pytest.raises(IntegrityError, match="truncated"):
            b"".join(compress.decompressed(kind, cut))
    else:  # zstandard's reader ends quietly: the manifest's size and sha256 catch it (test_restore)
        assert len(b"".join(compress.decompressed(kind, cut))) < len(SAMPLE)


def test_manifest_round_trip_and_rejections():
    m = manifest.Manifest(key="p/db-20260101T000000Z.sql.gz", database="db", engine="postgresql",
                          server_version="15", started_at="s", finished_at="f", compression="gzip",
                          stored_size=3, sha256=hashlib.sha256(b"abc").hexdigest(), uncompressed_size=9,
                          tables={"public.t": 1}, tool_version="0.1.0")
    assert manifest.Manifest.from_json(m.to_json(), m.key) == m
    with pytest.raises(IntegrityError, match="another object"):
        manifest.Manifest.from_json(m.to_json(), "p/other-20260101T000000Z.sql.gz")
    with pytest.raises(IntegrityError, match="format version"):
        manifest.Manifest.from_json(m.to_json().replace(b'"format_version": 1', b'"format_version": 9'), m.key)
    with pytest.raises(IntegrityError, match="not valid JSON"):
        manifest.Manifest.from_json(b"{", m.key)


def test_scrub_removes_generated_keys_and_assigned_secrets(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    assert log.scrub("signed with wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY") == "signed with [redacted]"
    assert log.scrub("connect: host=db password=hunter2 user=x") == "connect: host=db password=[redacted] user=x"
    assert log.scrub("postgresql://app:hunter2@db:5432/x") == "postgresql://app:[redacted]@db:5432/x"


@pytest.mark.parametrize("password", ["postgres", "malbork", "a", "1", "gzip", "backup"])
def test_scrub_never_mangles_text_that_equals_a_short_password(monkeypatch, password):
    monkeypatch.setenv("PGPASSWORD", password)
    text = 'backup of malbork (postgresql) to nightly/malbork-20260102T030405Z-00ff.sql.gz with gzip 1'
    assert log.scrub(text) == text


def test_progress_emits_at_the_interval():
    from enclave_backup.progress import Progress
    now = [0.0]
    seen = []
    progress = Progress(10, seen.append, clock=lambda: now[0])
    for step in range(100):
        now[0] = step * 0.5
        progress.add(1000, lambda: {"rows": step})
    assert [e["elapsed_s"] for e in seen] == [10.0, 20.0, 30.0, 40.0]
    assert seen[0]["sql_bytes"] == 21_000


def test_segments_of_the_stored_bytes_are_checked_before_they_are_handed_on():
    import hashlib
    import io

    from enclave_backup.errors import IntegrityError
    from enclave_backup.segments import Checked, Segmenter, covers

    data = bytes(range(256)) * 1000  # 256,000 bytes: three segments of 100,000, the last one short
    segmenter = Segmenter(size=100_000)
    for i in range(0, len(data), 7777):  # pieces that straddle segment boundaries
        segmenter.update(data[i:i + 7777])
    found = segmenter.result()
    assert found["size"] == 100_000 and len(found["sha256"]) == 3
    assert found["sha256"][2] == hashlib.sha256(data[200_000:]).hexdigest()
    assert covers(found, len(data)) and not covers(found, len(data) + 100_000) and not covers(None, len(data))

    got = Checked(io.BytesIO(data).read, found, "s3://b/k")
    assert b"".join(got) == data
    got.close()

    damaged = bytearray(data)
    damaged[150_000] ^= 1
    handed_on = bytearray()
    checked = Checked(io.BytesIO(bytes(damaged)).read, found, "s3://b/k")
    with pytest.raises(IntegrityError, match=r"segment 2 of 3.*none of these bytes was run"):
        for piece in checked:
            handed_on += piece
    checked.close()
    assert bytes(handed_on) == data[:100_000]  # the first segment only: it matched

    two = Segmenter(size=100_000)
    two.update(data[:200_000])
    for stored, says in ((data[:200_000] + b"x", "more bytes than"), (data[:199_999], "segment 2 of 2")):
        checked = Checked(io.BytesIO(stored).read, two.result(), "s3://b/k")
        with pytest.raises(IntegrityError, match=says):
            b"".join(checked)
        checked.close()
