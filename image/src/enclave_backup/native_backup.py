"""One native backup run: CockroachDB's BACKUP job -> a pointer object -> manifest.

The nodes write the data into the collection `<prefix>native/<database>-<installation tag>/`
of the same bucket; this run waits for the job, then writes the pointer `<database>-<time>-<run>.crdb`
(what the backup is and how to restore it by hand, no credentials) and its manifest beside the
dumps, so list, latest, status, retention, verify and restore see both methods alike. Until the
manifest is written the backup does not exist for any command, as with a dump.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from datetime import datetime, timedelta, timezone

import psycopg

from . import __version__, db, engines, log, signing
from .backup import iso_time, load_signing_key, store_manifest
from .catalog import complete_backups, parse_time
from .clock import utcnow
from .config import Config
from .engines.cockroachdb import jobs, native
from .engines.cockroachdb.dump import check_supported
from .errors import ConfigError, DatabaseError
from .manifest import NATIVE_FORMAT_VERSION, Manifest, ascii_name, encode_metadata, header_line, \
    installation_tag, key_name, object_key
from .marker import parse_marker
from .s3 import Storage

COLLECTIONS_FOLDER = "native"
JUST_RESTORED = timedelta(minutes=2)  # longer than a restore's swap takes after it writes its marker


def collection_folder(config: Config) -> str:
    """This installation's collection for this database: other installations sharing the prefix keep theirs."""
    tag = installation_tag(config.installation)
    return f"{config.key_prefix}{COLLECTIONS_FOLDER}/{key_name(config.database)}-{tag}"


def waiting(config: Config) -> jobs.Waiting:
    return jobs.Waiting(config.native_poll_seconds, config.native_pause_seconds, config.progress_interval)


def run_native_backup(config: Config, incremental: bool = False) -> Manifest:
    logger = log.get()
    signing_key = load_signing_key(config)
    if config.encryption_recipients:
        raise ConfigError("ENCLAVE_BACKUP_ENCRYPTION_RECIPIENTS (age) encrypts dumps; a native backup is written "
                          "by CockroachDB's nodes: use the bucket's server-side encryption (ENCLAVE_BACKUP_SSE) "
                          "or Backup.Method=dump")
    storage = Storage(config)
    storage.check_bucket()  # bad credentials or a missing bucket fail before any work
    chain = _chain_to_extend(storage, config) if incremental else None
    folder = chain["collection"] if chain else collection_folder(config)
    store = native.store_for(config, folder, os.environ)

    # The session that runs and watches the job, opened again if the server ends it.
    with db.Connections(db.connect(config, autocommit=True), config.database, db.opener(config)) as conns:
        conn = conns.maintenance
        with db.database_errors(config.database, "reading the server version"):
            engine, version = db.detect_engine(conn, config.engine)
        if engine != "cockroachdb":
            raise ConfigError(f"the native method is CockroachDB's own BACKUP; this server is {engine}: "
                              "use Backup.Method=dump (ENCLAVE_BACKUP_METHOD=dump)")
        release = native.parse_release(version)
        check_supported(release[:2], version)
        with db.database_errors(config.database, "reading the database's restore marker"):
            restored_at = _restored_at(conn, config.database)
        if chain and _restored_since(restored_at, chain["folder"]):
            chain, folder = None, collection_folder(config)
            store = native.store_for(config, folder, os.environ)
        url = native.collection_url(store, release, native.credentials(os.environ))
        started = utcnow()
        run_id = installation_tag(config.installation) + secrets.token_hex(4)
        # 10 s back avoids contention, but names resolve at that time: just after a restore's swap the
        # name still meant the database it replaced, so then the backup is taken as of now.
        just_restored = restored_at is not None and utcnow() - restored_at < JUST_RESTORED
        with db.database_errors(config.database, "reading the cluster's time"):
            end_hlc = conn.execute(native.NOW_SQL if just_restored else native.END_TIME_SQL).fetchone()[0]
        end = native.hlc_to_datetime(end_hlc)
        kind = "incremental" if chain else "full"
        chain_folder = chain["folder"] if chain else native.full_folder(end)
        with jobs.Collection(conn, url, release, run_id, config.database) as collection:
            logger.info("backup started", method="native", type=kind, database=config.database, engine=engine,
                        server_version=version, collection=collection.shown, folder=chain_folder,
                        end_time=iso_time(end), installation=config.installation)
            job_id, revision_history = _start(conn, config, collection, end_hlc, release,
                                              chain_folder if chain else None)
            logger.info("backup job started", job_id=job_id, revision_history=revision_history)
            jobs.wait(conn, job_id, "backup", config.database, waiting(config), reconnect=conns.working_maintenance)
            collection.conn = conns.working_maintenance()
            layer = jobs.layer(collection.conn, collection, chain_folder, end)

    details = {"collection": folder, "folder": chain_folder, "type": kind, "end_hlc": end_hlc,
               "end_time": iso_time(end), "revision_history": revision_history, "job_id": job_id,
               "size_bytes": layer.size_bytes, "rows": layer.rows}
    manifest = publish(storage, config, signing_key, version, started, run_id, details, layer.tables,
                       native.shown_url(url))
    logger.info("backup complete", method="native", type=kind, key=manifest.key, bucket=config.bucket,
                job_id=job_id, collection=folder, folder=chain_folder, end_time=details["end_time"],
                bytes=layer.size_bytes, tables=len(layer.tables), rows=layer.rows,
                revision_history=revision_history)
    return manifest


def publish(storage: Storage, config: Config, signing_key, server_version: str, started, run_id: str,
            details: dict, tables: dict[str, int], shown_url: str) -> Manifest:
    """Write the pointer object and then its manifest: from here on the backup exists."""
    identity = {"database": config.database, "engine": "cockroachdb", "installation": config.installation,
                "run_id": run_id}
    key = object_key(config.key_prefix, config.database, started, "none", run_id, native=True)
    body = pointer_text(config.database, identity, details, shown_url)
    storage.put_new(key, body, "text/plain; charset=utf-8", encode_metadata(identity))
    manifest = Manifest(
        key=key, database=config.database, engine="cockroachdb", server_version=server_version,
        started_at=iso_time(started), finished_at=iso_time(utcnow()), compression="none",
        stored_size=len(body), sha256=hashlib.sha256(body).hexdigest(), uncompressed_size=details["size_bytes"],
        tables=tables, tool_version=__version__, snapshot=details["end_hlc"], installation=config.installation,
        run_id=run_id, format_version=NATIVE_FORMAT_VERSION, method="native", native=details)
    if signing_key is not None:
        signing.sign(manifest, signing_key)
    store_manifest(storage, manifest)
    return manifest


def _chain_to_extend(storage: Storage, config: Config) -> dict | None:
    """The newest native backup's chain (its collection and full backup's folder), or None."""
    for backup in complete_backups(storage, config.key_prefix, config.database):
        if backup.native:
            return backup.native
    log.get().warning("no native backup to add an incremental to: taking a full one", database=config.database)
    return None


def _restored_at(conn: psycopg.Connection, database: str) -> datetime | None:
    """When this tool last restored `database` (its marker), or None."""
    mark = parse_marker(engines.get("cockroachdb").read_marker(conn, database))
    return parse_time(mark["restored_at"]) if mark and mark.get("restored_at") else None


def _restored_since(restored_at: datetime | None, chain_folder: str) -> bool:
    """Whether the database was restored after its chain's full backup: the restored database is a new
    one to CockroachDB (new descriptor ids), which an incremental on the old chain cannot extend."""
    full_end = datetime.strptime(chain_folder, "/%Y/%m/%d-%H%M%S.%f").replace(tzinfo=timezone.utc)
    if restored_at is None or restored_at <= full_end:
        return False
    log.get().warning("the database was restored after the newest chain's full backup: taking a full backup, "
                      "which starts a new chain", restored_at=iso_time(restored_at), chain=chain_folder)
    return True


def _start(conn: psycopg.Connection, config: Config, collection: jobs.Collection, end_hlc: str,
           release: tuple[int, int, int], chain_folder: str | None) -> tuple[int, bool]:
    """(job id, with revision history): revision history where the licence allows it."""
    wanted = config.native_revision_history
    what = "incremental backup" if chain_folder else "backup"
    try:
        sql = native.backup_sql(config.database, collection.target, end_hlc, wanted, chain_folder)
        return jobs.start(conn, sql, what, config.database), wanted
    except jobs.JobRefused as refused:
        if refused.sqlstate != native.LICENCE_SQLSTATE:
            raise
        if not wanted or chain_folder:
            feature = "an incremental backup" if chain_folder else "BACKUP"
            raise DatabaseError(f"{refused}; {native.licence_hint(release, feature)}") from None
        log.get().warning("the cluster's licence does not allow revision history: this backup has none, so it "
                          "restores to its own end time only (restore.asOf needs revision history)",
                          hint=native.licence_hint(release, "revision history"))
    sql = native.backup_sql(config.database, collection.target, end_hlc, False, None)
    try:
        return jobs.start(conn, sql, what, config.database), False
    except jobs.JobRefused as refused:
        if refused.sqlstate == native.LICENCE_SQLSTATE:
            raise DatabaseError(f"{refused}; {native.licence_hint(release, 'BACKUP')}") from None
        raise


def pointer_text(database: str, identity: dict, details: dict, shown_url: str) -> bytes:
    """The pointer object: comments only (ASCII), so replaying it by mistake changes nothing."""
    statement = native.restore_sql(database, details["folder"], shown_url, f"{database}_restored",
                                   details["end_hlc"])
    statement = statement.replace("WITH detached, ", "WITH ")  # by hand: wait for the job
    lines = [
        f"-- enclave-backup {__version__}: cockroachdb native {details['type']} backup of database "
        f"{ascii_name(database)}",
        header_line(identity).decode().rstrip("\n"),
        f"-- made by CockroachDB's BACKUP job {details['job_id']}, as of {details['end_time']}"
        f"{' with revision history' if details['revision_history'] else ''}",
        "-- The data is in the CockroachDB backup collection below, not in this object. Restore it with",
        "-- `enclave-backup restore` (Helm value restore.fromObject set to this key), or by hand in",
        "-- `cockroach sql` after adding AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to the URL:",
        f"-- {ascii_name(statement)};",
        "-- " + json.dumps({"native": details}, sort_keys=True, ensure_ascii=True),
    ]
    return ("\n".join(lines) + "\n").encode()


def probe(config: Config) -> None:
    """`check` with the native method: the nodes, not this pod, must reach the store. A BACKUP of an
    empty probe database into `<prefix>native/probe-<run>` proves they do (the job's coordinator
    writes it) with the credentials, endpoint and addressing the backups use; then all of it is removed."""
    logger = log.get()
    run_id = installation_tag(config.installation) + secrets.token_hex(4)
    folder = f"{config.key_prefix}{COLLECTIONS_FOLDER}/probe-{run_id}"
    storage = Storage(config)
    conn = db.connect(config, autocommit=True)
    with conn:
        with db.database_errors(config.database, "reading the server version"):
            engine, version = db.detect_engine(conn, config.engine)
        if engine != "cockroachdb":
            raise ConfigError(f"Backup.Method=native needs CockroachDB; this server is {engine}")
        release = native.parse_release(version)
        url = native.collection_url(native.store_for(config, folder, os.environ), release,
                                    native.credentials(os.environ))
        name = f"enclave_backup_probe_{run_id}"
        try:
            conn.execute(f"CREATE DATABASE {db.quote_ident(name)}")
        except psycopg.Error as exc:
            logger.warning("cannot create the probe database, so the nodes' access to the store is not checked "
                           "here; the first backup will show it", error=jobs.describe(exc, name))
            return
        try:
            with jobs.Collection(conn, url, release, run_id, name) as collection:
                # Now, not END_TIME_SQL's 10 s ago: the probe database did not exist then.
                end_hlc = conn.execute(native.NOW_SQL).fetchone()[0]
                job_id = jobs.start(conn, native.backup_sql(name, collection.target, end_hlc, False), "probe backup",
                                    name)
                jobs.wait(conn, job_id, "probe backup", name, waiting(config))
        finally:
            try:
                conn.execute(f"DROP DATABASE IF EXISTS {db.quote_ident(name)} CASCADE")
            except psycopg.Error as exc:
                logger.warning("could not drop the probe database; drop it by hand", database=name,
                               error=jobs.describe(exc, name))
            for obj in storage.list(folder + "/"):
                storage.delete(obj.key)
    logger.info("the CockroachDB nodes reach the store: a probe backup was written and removed",
                collection=native.shown_url(url), job_id=job_id)
