"""One backup run: database -> SQL text -> compressor -> sha256 -> multipart upload -> manifest."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import secrets
from datetime import datetime, timedelta, timezone

from . import __version__, db, engines, log, signing
from .clock import utcnow
from .compress import compressor, worker_count
from .config import Config
from .encryption import ENCRYPTED_CONTENT_TYPE, encryptor, manifest_field, parse_recipients
from .errors import ConfigError, StorageError
from .manifest import (CONTENT_TYPES, Manifest, ascii_name, encode_metadata, header_line, installation_tag,
                       key_name, manifest_key, object_key, parse_key, run_id_of)
from .progress import Progress
from .s3 import Storage
from .segments import Segmenter
from .stats import DumpStats


M_MMAP_THRESHOLD = -3  # glibc's mallopt() parameter number


def keep_large_buffers_mapped() -> None:
    """Make glibc give every buffer of 1 MiB or more its own mapping, unmapped when freed.

    By default glibc raises that threshold after the first large free; from then on the
    20 MiB parts and 1 MiB blocks come from the heap, freed by other threads, and the
    fragmented heap made the peak RSS grow with the dump's length (160 -> 280 MiB from
    0.25 to 1 GiB of SQL in scripts/bench.py).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc: its allocator has no such threshold to pin
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)


def abort_stale_uploads(storage: Storage, config: Config) -> None:
    """Remove parts left by a run of this installation that was killed outright (SIGKILL, OOM, node loss).

    Another installation sharing the bucket may run longer backups: its uploads (run ids
    of another tag) are never touched. Keys from before run ids count as this installation's.
    The listing's prefix `<database>-` also holds other databases' keys (`app-x-...` under
    `app-`): only a key whose database is exactly this one is a candidate.
    """
    logger = log.get()
    cutoff = utcnow() - timedelta(seconds=config.stale_upload_seconds)
    tag = installation_tag(config.installation)
    for upload in storage.pending_uploads(f"{config.key_prefix}{key_name(config.database)}-"):
        run = run_id_of(upload.key)
        parsed = parse_key(upload.key, config.key_prefix)
        if parsed is None:  # not a backup key (another tool's, or a time no clock shows): not ours
            logger.warning("left a pending upload alone: its key is no backup's", key=upload.key)
            continue
        if parsed[0] != config.database:  # another database whose name begins with this one's
            continue
        # Both clocks must call it old: some stores report a fixed initiation time.
        started = parsed[1]
        if max(upload.initiated, started) < cutoff and (not run or run.startswith(tag)):
            storage.abort(upload.key, upload.upload_id)
            logger.warning("aborted a stale multipart upload", key=upload.key, initiated=upload.initiated.isoformat())


def _manifest_is_own(storage: Storage, manifest: Manifest) -> bool:
    """Whether the manifest stored beside `manifest.key` is this one: same key, run id and sha256."""
    from .catalog import read_manifest  # catalog reads manifests with a size cap and full validation
    from .errors import BackupError
    try:
        stored = read_manifest(storage.cleanup_storage(), manifest.key)
    except BackupError:
        return False  # none, unreadable or not ours: the write failed
    return (stored.key, stored.run_id, stored.sha256, stored.stored_size) == \
        (manifest.key, manifest.run_id, manifest.sha256, manifest.stored_size) and bool(manifest.run_id)


def store_manifest(storage: Storage, manifest: Manifest) -> None:
    """Write the manifest that makes `manifest.key` a backup; without it, delete the object (this run's)."""
    logger = log.get()
    key = manifest.key
    try:
        storage.put_new(manifest_key(key), manifest.to_json(), "application/json",
                        encode_metadata(manifest.identity()))
    except StorageError as failed:
        # A retried write can meet its own first attempt: stored, but its answer lost, so the retry
        # hears "already exists" (412) or gives up. If the manifest there is this run's, it is written.
        if _manifest_is_own(storage, manifest):
            logger.warning("the manifest was stored by an earlier attempt of this run whose answer was lost; "
                           "the backup is complete", key=key, retry_answer=str(failed))
        else:
            # Without its manifest the object is not a backup; do not leave it looking like one. The key
            # carries this run's id and was written with If-None-Match, so the object is this run's own.
            try:
                storage.cleanup_storage().delete(key)
            except StorageError as exc:
                logger.error("could not delete the object whose manifest failed", key=key, error=str(exc))
            raise


def iso_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def load_signing_key(config: Config):
    """The signing key, read before any work (an unreadable one fails now, not after the whole dump)."""
    signing_key = signing.load_private_key(config.signing_key_file) if config.signing_key_file else None
    if signing_key is None:
        log.get().warning("this backup is not signed: restore and verify refuse it unless "
                          "ENCLAVE_BACKUP_ALLOW_UNVERIFIED is set; give the backup a signing key "
                          f"({signing.KEY_ENV}, Helm value Backup.Signing.SecretName)")
    return signing_key


def run_backup(config: Config, incremental: bool = False) -> Manifest:
    if config.method == "native":
        from .native_backup import run_native_backup
        return run_native_backup(config, incremental)
    if incremental:
        raise ConfigError("an incremental backup needs the native method (ENCLAVE_BACKUP_METHOD=native, Helm value "
                          "Backup.Method=native); a dump is always whole")
    logger = log.get()
    keep_large_buffers_mapped()
    signing_key = load_signing_key(config)
    storage = Storage(config)
    storage.check_bucket()  # bad credentials or a missing bucket fail before any work
    abort_stale_uploads(storage, config)
    recipients = parse_recipients(config.encryption_recipients)  # a bad one fails before the dump
    encryption = manifest_field(config.encryption_recipients) if recipients else None

    conn = db.connect(config)
    with conn:
        with db.database_errors(config.database, "reading the server version"):
            engine, version = db.detect_engine(conn, config.engine)
            conn.rollback()
        started = utcnow()
        run_id = installation_tag(config.installation) + secrets.token_hex(4)
        key = object_key(config.key_prefix, config.database, started, config.compression, run_id,
                         encrypted=bool(recipients))
        identity = {"database": config.database, "engine": engine, "installation": config.installation,
                    "run_id": run_id}
        content_type = ENCRYPTED_CONTENT_TYPE if recipients else CONTENT_TYPES[config.compression]
        with storage.start_upload(key, content_type, encode_metadata(identity)) as upload:
            logger.info("backup started", key=key, bucket=config.bucket, engine=engine,
                        server_version=version, compression=config.compression, installation=config.installation,
                        compression_threads=worker_count(config.compression_threads),
                        encrypted_to=encryption["recipients"] if encryption else None)

            stats = DumpStats()
            hasher, segmenter = hashlib.sha256(), Segmenter()

            def store(data: bytes) -> None:
                hasher.update(data)
                segmenter.update(data)
                upload.write(data)

            progress = Progress(config.progress_interval, lambda fields: logger.info("backup progress", **fields))

            def snapshot() -> dict:
                return {"stored_bytes": upload.size, "rows": stats.rows, "table": stats.current_table}

            # Encrypted: compressed text -> age (its own thread) -> store; the sha256 is of the stored bytes.
            with contextlib.ExitStack() as stages:
                sink = stages.enter_context(encryptor(recipients, store)).write if recipients else store
                stage = stages.enter_context(compressor(config.compression, sink, config.compression_level,
                                                        config.compression_threads))

                def write(text: bytes) -> None:
                    stage.write(text)
                    progress.add(len(text), snapshot)

                # ASCII only: the script declares its encoding later, and a header must not contradict it.
                header = (f"-- enclave-backup {__version__}: {engine} database {ascii_name(config.database)}\n"
                          f"-- started {iso_time(started)}; replay into an empty database\n").encode()
                write(header + header_line(identity) + b"\n")
                with db.database_errors(config.database, "dumping the database"):
                    database_state = engines.get(engine).dump(conn, config, write, stats)
            upload.complete()

    finished = utcnow()
    manifest = Manifest(
        key=key, database=config.database, engine=engine, server_version=version,
        started_at=iso_time(started), finished_at=iso_time(finished), compression=config.compression,
        stored_size=upload.size, sha256=hasher.hexdigest(), uncompressed_size=progress.sql_bytes,
        tables=dict(stats.tables), tool_version=__version__, snapshot=stats.snapshot,
        database_state=database_state, installation=config.installation, run_id=run_id,
        encryption=encryption, segments=segmenter.result())
    if signing_key is not None:
        signing.sign(manifest, signing_key)
    store_manifest(storage, manifest)

    seconds = max(progress.elapsed, 1e-6)
    logger.info("backup complete", key=key, bucket=config.bucket, engine=engine,
                compression=config.compression, sql_bytes=progress.sql_bytes, stored_bytes=upload.size,
                ratio=round(progress.sql_bytes / upload.size, 2) if upload.size else None,
                tables=len(stats.tables), rows=stats.rows, duration_s=round(seconds, 2),
                sql_mb_per_s=round(progress.sql_bytes / seconds / 1e6, 1), sha256=manifest.sha256)
    return manifest

