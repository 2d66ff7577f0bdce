"""One restore run: object -> sha256 -> decompressor -> statements -> scratch database -> swap.

The live database is only renamed (never dropped) and only after the whole script
applied and the object matched its manifest; see the design's invariants 3-5.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field

import psycopg
from botocore.exceptions import BotoCoreError, ClientError

from . import db, log, readers
from .catalog import ANY_INSTALLATION, complete_backups, read_manifest
from .compress import decompressed
from .config import Config
from .errors import DatabaseError, IntegrityError, StorageError
from .manifest import Manifest, ascii_name, decode_metadata, manifest_key, parse_header
from .progress import Progress
from .s3 import Storage, describe_error, utcnow
from .sqlscript import CopyBlock, Statement, split
from .swap import Client, dialect, marker, parse_marker
from .swap_views import HoldBack, swap_keeping_views

READ_CHUNK = 256 * 1024
STAMP = "%Y%m%d%H%M%S"
STAMP_DIGITS = 14
MAX_NAME_BYTES = 63  # PostgreSQL's identifier limit; longer names would be cut silently
SWAP_RETRY_SECONDS = 10.0  # after terminating clients: time for their sessions to end
HEADER_BYTES = 64 * 1024  # the object's first bytes, read to check its header before any work
OVERRIDE_HINT = ("; to restore another installation's backup on purpose (disaster recovery), set "
                 "ENCLAVE_BACKUP_RESTORE_SOURCE_INSTALLATION (restore.sourceInstallation) to its name, "
                 f"or to {ANY_INSTALLATION!r} for backups that record none")


def _stem(database: str, kind: str) -> str:
    """The part of a derived name before `_<kind>_<stamp>`: the database's name if the whole fits
    63 bytes, else its first bytes (whole characters) and 8 hex digits of its sha256, so two long
    names sharing a beginning never derive the same name."""
    room = MAX_NAME_BYTES - len(f"_{kind}_") - STAMP_DIGITS
    raw = database.encode()
    if len(raw) <= room:
        return database
    digest = hashlib.sha256(raw).hexdigest()[:8]
    cut = raw[:room - 9].decode("utf-8", errors="ignore")  # drops a character cut in two
    return f"{cut}_{digest}"


def derived_name(database: str, kind: str, stamp: str) -> str:
    return f"{_stem(database, kind)}_{kind}_{stamp}"


def scratch_name(database: str, stamp: str) -> str:
    return derived_name(database, "restoring", stamp)


def previous_name(database: str, stamp: str) -> str:
    return derived_name(database, "pre_restore", stamp)


def _pattern(database: str, kind: str) -> re.Pattern:
    return re.compile(rf"^{re.escape(_stem(database, kind))}_{kind}_\d{{{STAMP_DIGITS}}}$")


@dataclass
class RestoreSummary:
    key: str
    database: str
    restored: bool  # False: the live database already came from this backup
    sha256: str = ""
    stored_size: int = 0
    uncompressed_size: int = 0
    tables: int = 0
    rows: int = 0
    statements: int = 0
    duration_s: float = 0.0
    previous_database: str | None = None
    dropped_previous: list[str] = field(default_factory=list)
    rollback: list[str] = field(default_factory=list)


def run_restore(config: Config, object_key: str = "latest", force: bool | None = None) -> RestoreSummary:
    """Restore `object_key` (or the newest complete backup for "latest") into config.database."""
    logger = log.get()
    started = time.monotonic()
    force = config.restore_force if force is None else force
    storage = Storage(config)
    key, manifest = resolve(storage, config, object_key)
    logger.info("restore started", key=key, database=config.database, engine=manifest.engine,
                stored_size=manifest.stored_size, uncompressed_size=manifest.uncompressed_size, force=force)

    conn, sql = connect_maintenance(config, manifest)
    with conn:
        live = config.database
        with db.database_errors(live, "preparing the restore"):
            if not sql.try_lock(conn, live):
                raise DatabaseError(f"another restore of {live!r} is running; try again when it has finished")
            drop_leftovers(conn, sql, live)
            mark = parse_marker(sql.read_marker(conn, live))
        if mark and mark.get("key") == key and mark.get("sha256") == manifest.sha256 and not force:
            logger.info("restore skipped: the database already holds this backup", key=key, database=live,
                        restored_at=mark.get("restored_at"), hint="use --force (restore.force) to restore it again")
            return RestoreSummary(key, live, restored=False, sha256=manifest.sha256)

        with db.database_errors(live, "creating the scratch database"):
            existing = set(sql.databases(conn))
            live_exists = live in existing
            stamp = utcnow().strftime(STAMP)
            while previous_name(live, stamp) in existing:  # names carry whole seconds
                time.sleep(1)
                stamp = utcnow().strftime(STAMP)
            scratch, previous = scratch_name(live, stamp), previous_name(live, stamp)
            # The new database takes the live one's settings, privileges and comment; a new one the backup's.
            state = sql.database_state(conn, live) if live_exists else manifest.database_state
            conn.execute(sql.create_sql(conn, scratch, state))
        logger.info("scratch database created", scratch=scratch)
        try:
            defers_views = getattr(sql, "defers_views", False)
            loaded = load(config, storage, key, manifest, scratch, defer=HoldBack() if defers_views else None)
            with db.database_errors(scratch, "carrying database-level settings over"):
                carried = sql.carry_state(conn, scratch, state)
            if carried is not None:
                logger.info("database-level state carried over", source="live database" if live_exists else "backup",
                            **carried)
            with db.database_errors(scratch, "marking the restored database"):
                sql.write_marker(conn, scratch, marker(key, manifest.sha256, utcnow().isoformat()))
            wait_for_clients(config, conn, sql, live if live_exists else None)
            if defers_views:
                swap_keeping_views(conn, sql, live, scratch, previous if live_exists else None, loaded.deferred,
                                   lambda name: db.connect(config, dbname=name, autocommit=True))
            else:
                swap(conn, sql, live, scratch, previous if live_exists else None)
        except BaseException:
            _drop_quietly(conn, sql, scratch)
            raise
        dropped = keep_previous(conn, sql, live, config.restore_keep_previous)

    kept = previous if live_exists and previous not in dropped else None
    rollback = []
    if kept:
        rollback = [sql.rename_sql(live, derived_name(live, "restored", stamp)) + ";",
                    sql.rename_sql(kept, live) + ";"]
        if getattr(sql, "defers_views", False):
            rollback.insert(0, "(CockroachDB renames no database that views or routines depend on: first drop the "
                               "triggers, views and routines of both databases, SHOW CREATE them to re-create them "
                               "after the renames)")
    summary = RestoreSummary(
        key, live, restored=True, sha256=manifest.sha256, stored_size=loaded.stored,
        uncompressed_size=loaded.uncompressed, tables=len(manifest.tables), rows=loaded.rows,
        statements=loaded.statements, duration_s=round(time.monotonic() - started, 2),
        previous_database=kept, dropped_previous=dropped, rollback=rollback)
    logger.info("restore complete", key=key, database=live, stored_bytes=summary.stored_size,
                sql_bytes=summary.uncompressed_size, tables=summary.tables, rows=summary.rows,
                statements=summary.statements, duration_s=summary.duration_s, previous_database=kept,
                dropped_previous=dropped,
                rollback=("with no client connected, run: " + " ".join(rollback)) if rollback else
                "no previous database kept (none existed or restore.keepPrevious=0)")
    return summary


def resolve(storage: Storage, config: Config, object_key: str) -> tuple[str, Manifest]:
    """The object's key and its checked manifest; fails before any database work."""
    source = config.source_installation
    if object_key == "latest":
        backups = complete_backups(storage, config.key_prefix, config.database, installation=source)
        if not backups:
            raise StorageError(f"no complete backup of {config.database!r} by installation {source!r} in "
                               f"s3://{config.bucket}/{config.key_prefix} (an object counts only with its manifest)"
                               + OVERRIDE_HINT)
        key = backups[0].key
    else:
        key = object_key.lstrip("/")
    head = storage.head(key)
    if head is None and object_key != "latest" and config.key_prefix and not key.startswith(config.key_prefix):
        relative = storage.head(config.key_prefix + key)  # a key given relative to the prefix
        if relative is not None:
            key, head = config.key_prefix + key, relative
    if head is None:
        raise StorageError(f"s3://{config.bucket}/{key}: no such object; `enclave-backup list` shows the backups")
    if storage.head(manifest_key(key)) is None:
        raise IntegrityError(f"s3://{config.bucket}/{key} has no manifest ({manifest_key(key)}): "
                             "it is not a complete backup")
    manifest = read_manifest(storage, key)
    where = f"s3://{config.bucket}/{key}"
    if manifest.database != config.database:
        raise IntegrityError(f"{where} is a backup of database {manifest.database!r}, not of {config.database!r}; "
                             "nothing was changed")
    if source != ANY_INSTALLATION and manifest.installation != source:
        raise IntegrityError(f"{where} was written by installation {manifest.installation or '(not recorded)'!r}, "
                             f"not by {source!r}; nothing was changed" + OVERRIDE_HINT)
    if head["ContentLength"] != manifest.stored_size:
        raise IntegrityError(f"{where} holds {head['ContentLength']} bytes but its manifest "
                             f"says {manifest.stored_size}: the object is truncated or was replaced")
    check_identity(where, manifest, decode_metadata(head.get("Metadata", {})), read_header(storage, key, manifest))
    return key, manifest


_LEGACY_HEADER = re.compile(rb"^-- enclave-backup \S+: (\S+) database (.*)$", re.M)


def read_header(storage: Storage, key: str, manifest: Manifest) -> dict | None:
    """The identity the script's own first lines declare (older backups: engine and database only)."""
    raw = storage.read_range(key, min(HEADER_BYTES, manifest.stored_size))
    text = b""
    try:
        for piece in decompressed(manifest.compression, [raw]):
            text += piece
            break  # the header is in the first lines; a partial stream ends without its tail
    except IntegrityError:
        pass  # the range cut the stream: what came out before is all the header needs
    found = parse_header(text)
    if found is None and (legacy := _LEGACY_HEADER.search(text[:4096])):
        found = {"engine": legacy.group(1).decode(), "database": legacy.group(2).decode("ascii", "replace")}
    return found


def check_identity(where: str, manifest: Manifest, metadata: dict, header: dict | None) -> None:
    """The manifest, the object's metadata and its header must name the same run, database and engine."""
    expected = manifest.identity()
    if header is None:
        raise IntegrityError(f"{where} does not begin with an enclave-backup header: it is not a backup this tool "
                             "made; nothing was changed")
    if not manifest.run_id:  # written before run ids: only engine and database can be compared
        expected = {"engine": manifest.engine, "database": ascii_name(manifest.database)}
        header = {k: header.get(k) for k in expected}
        metadata = {}
    for name, got in (("header", header), ("metadata", metadata)):
        differs = {k: got.get(k) for k in expected if got.get(k) != expected[k]}
        if differs:
            raise IntegrityError(f"{where}: its {name} disagrees with its manifest ({json.dumps(differs)} vs "
                                 f"{json.dumps({k: expected[k] for k in differs})}): the object and the manifest "
                                 "are not one run's; nothing was changed")


def connect_maintenance(config: Config, manifest: Manifest):
    """An autocommit connection outside the live database, for CREATE/ALTER/DROP DATABASE."""
    names = {"postgresql": ("postgres",), "cockroachdb": ("defaultdb", "postgres")}.get(
        config.engine, ("postgres", "defaultdb"))
    for i, name in enumerate(names):
        try:
            conn = db.connect(config, dbname=name, autocommit=True)
            break
        except DatabaseError as exc:
            if "does not exist" not in str(exc) or i == len(names) - 1:
                raise
    with db.database_errors(config.database, "reading the server version"):
        engine, _version = db.detect_engine(conn, config.engine)
    if engine != manifest.engine:
        conn.close()
        raise IntegrityError(f"{manifest.key} is a {manifest.engine} backup; the server is {engine}")
    source = _postgres_major(manifest.server_version)
    target = conn.info.server_version // 10000
    if engine == "postgresql" and source and target < source:
        conn.close()
        raise DatabaseError(f"{manifest.key} is a backup of a PostgreSQL {source} server; this server runs "
                            f"PostgreSQL {target}, which may not read its SQL (made for {source}). Restore it into "
                            f"PostgreSQL {source} or newer; nothing was changed")
    return conn, dialect(engine)


def _postgres_major(version: str) -> int | None:
    match = re.match(r"PostgreSQL (\d+)", version)
    return int(match.group(1)) if match else None


def drop_leftovers(conn, sql, live: str) -> None:
    """Scratch databases of runs that were killed outright (SIGKILL, OOM, node loss)."""
    pattern = _pattern(live, "restoring")
    for name in sql.databases(conn):
        if pattern.match(name):
            conn.execute(sql.drop_sql(name, force=True))
            log.get().warning("dropped the scratch database of an interrupted restore", scratch=name)


def keep_previous(conn, sql, live: str, keep: int) -> list[str]:
    """Drop all but the newest `keep` previous databases; a failure here only warns."""
    pattern = _pattern(live, "pre_restore")
    try:
        names = sorted((n for n in sql.databases(conn) if pattern.match(n)), reverse=True)
    except psycopg.Error as exc:
        log.get().warning("could not list previous databases", error=db.describe(exc, live))
        return []
    dropped = []
    for name in names[keep:]:
        try:
            conn.execute(sql.drop_sql(name, force=False))
            dropped.append(name)
        except psycopg.Error as exc:
            log.get().warning("could not drop an old previous database", database=name,
                              error=db.describe(exc, name))
    return dropped


def _drop_quietly(conn, sql, name: str) -> None:
    try:
        conn.execute(sql.drop_sql(name, force=True))
        log.get().info("scratch database dropped", scratch=name)
    except Exception as exc:  # noqa: BLE001 - the original error matters more; the next run cleans up
        log.get().error("could not drop the scratch database; the next restore drops it", scratch=name,
                        error=log.scrub(str(exc)))


@dataclass
class Loaded:
    stored: int = 0
    uncompressed: int = 0
    statements: int = 0
    rows: int = 0
    table: str = ""
    deferred: list[str] = field(default_factory=list)  # statements to run after the swap


class ObjectStream:
    """The object's bytes, hashed as they pass, decompressed into SQL text."""

    def __init__(self, storage: Storage, key: str, manifest: Manifest, loaded: Loaded, progress: Progress):
        self.storage, self.key, self.manifest = storage, key, manifest
        self.loaded, self.progress = loaded, progress
        self.hasher = hashlib.sha256()
        self._raw = storage.open_read(key).iter_chunks(READ_CHUNK)

    def _read(self):
        try:
            for raw in self._raw:
                self.hasher.update(raw)
                self.loaded.stored += len(raw)
                yield raw
        except (BotoCoreError, ClientError, OSError) as exc:
            raise StorageError(log.scrub(describe_error(exc, "reading", self.storage.bucket, self.key))) from None

    def sql_chunks(self):
        for text in decompressed(self.manifest.compression, self._read()):
            self.loaded.uncompressed += len(text)
            self.progress.add(len(text), self._snapshot)
            yield text
        # Checked before the splitter sees the end, so a cut-off last statement never runs.
        self.verify()

    def _snapshot(self) -> dict:
        return {"stored_bytes": self.loaded.stored, "statements": self.loaded.statements,
                "rows": self.loaded.rows, "table": self.loaded.table}

    def drain(self) -> None:
        for _ in self._read():
            pass

    def verify(self) -> None:
        m, got = self.manifest, self.loaded
        problems = []
        if got.stored != m.stored_size:
            problems.append(f"{got.stored} stored bytes, manifest says {m.stored_size}")
        if self.hasher.hexdigest() != m.sha256:
            problems.append(f"sha256 {self.hasher.hexdigest()}, manifest says {m.sha256}")
        if got.uncompressed != m.uncompressed_size:
            problems.append(f"{got.uncompressed} bytes of SQL, manifest says {m.uncompressed_size}")
        if problems:
            raise IntegrityError(f"{self.key} does not match its manifest: " + "; ".join(problems))


def load(config: Config, storage: Storage, key: str, manifest: Manifest, scratch: str,
         defer=None) -> Loaded:
    """Apply the object's script to `scratch`, one statement at a time, stopping at the first error.

    Statements for which `defer(sql)` is true are kept in `Loaded.deferred` instead (the tail
    of a CockroachDB script, views and routines among it, run once the database has its final name).
    """
    logger = log.get()
    loaded = Loaded()
    progress = Progress(config.progress_interval, lambda fields: logger.info("restore progress", **fields))
    conn = db.connect(config, dbname=scratch, autocommit=True)
    # The marker keeps prune away from the backup while it is read.
    with conn, readers.hold(storage, key), conn.cursor() as cur:
        stream = ObjectStream(storage, key, manifest, loaded, progress)
        for item in split(stream.sql_chunks()):
            statement = item.statement if isinstance(item, CopyBlock) else item
            loaded.statements += 1
            try:
                if isinstance(item, CopyBlock):
                    loaded.table = _copy_table(statement.sql)
                    with cur.copy(statement.data) as copy:
                        for data in item:
                            copy.write(data)
                            loaded.rows += data.count(b"\n")  # one line per row in text format
                elif defer is not None and defer(statement.sql):
                    loaded.deferred.append(statement.sql)
                else:
                    cur.execute(statement.data)
                    loaded.rows += _inserted(cur)
            except psycopg.errors.UndefinedObject as exc:
                if not _SESSION_SET.match(statement.sql):
                    _statement_failed(stream, statement, exc, scratch)
                # A newer pg_dump sets parameters this server does not have (pg_dump 17+:
                # transaction_timeout); a parameter that does not exist cannot matter here.
                logger.warning("skipped a setting this server does not know", line=statement.line,
                               statement=statement.head())
            except psycopg.Error as exc:
                _statement_failed(stream, statement, exc, scratch)
    return loaded


_SESSION_SET = re.compile(r"(?is)^SET\s+(SESSION\s+)?[a-z_][a-z0-9_]*\s*(=|TO)\s*[^;]*$")


def _statement_failed(stream: ObjectStream, statement: Statement, exc: psycopg.Error, scratch: str):
    where = f"the statement at line {statement.line} failed: {db.describe(exc, scratch)}; it begins: {statement.head()}"
    if not isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        # A corrupt object makes bad SQL; read the rest to tell a damaged backup from a real SQL error.
        stream.drain()
        try:
            stream.verify()
        except IntegrityError as bad:
            raise IntegrityError(log.scrub(f"{bad}; {where}")) from None
    raise DatabaseError(log.scrub(where)) from None


def _inserted(cur) -> int:
    """Rows an INSERT statement added (the backup's data batches), 0 for anything else."""
    status = cur.statusmessage or ""
    return max(cur.rowcount, 0) if status.startswith("INSERT ") else 0


_COPY_TABLE = re.compile(r"(?is)^COPY\s+(.+?)\s*(?:\(|FROM\b)")


def _copy_table(sql: str) -> str:
    m = _COPY_TABLE.match(sql)
    return m.group(1) if m else ""


def wait_for_clients(config: Config, conn, sql, live: str | None) -> None:
    """Wait until nobody else uses the live database; end their sessions if so configured."""
    if live is None:
        return
    logger = log.get()
    if not getattr(sql, "sees_clients", True):
        logger.info("not waiting for clients: the server cannot tell which database a session uses, and "
                    "sessions of other applications are never waited for or ended; stop the clients of the "
                    "database first (the chart holds the Manager at 0 replicas)", database=live,
                    terminate_clients_ignored=config.restore_terminate_clients)
        return
    deadline = time.monotonic() + config.restore_wait_for_clients_seconds
    next_log = 0.0
    while True:
        with db.database_errors(live, "listing the clients of the live database"):
            clients = sql.clients(conn, live)
        if not clients:
            return
        now = time.monotonic()
        if now >= deadline:
            break
        if now >= next_log:
            logger.info("waiting for clients to leave the live database", database=live, clients=len(clients),
                        who=[c.describe() for c in clients[:10]], seconds_left=round(deadline - now, 1))
            next_log = now + config.progress_interval
        time.sleep(min(0.5, max(0.0, deadline - now)))
    if not config.restore_terminate_clients:
        raise DatabaseError(
            f"{len(clients)} client(s) still connected to {live!r} after waiting "
            f"{config.restore_wait_for_clients_seconds:g}s ({_who(clients)}); the restored data was discarded and "
            f"{live!r} is unchanged. Stop them (e.g. Manager.ReplicaCount=0), raise restore.waitForClientsSeconds "
            "or set restore.terminateClients=true")
    with db.database_errors(live, "ending the sessions of other clients"):
        for client in clients:
            sql.terminate(conn, client)
    logger.warning("ended the sessions of clients of the live database", database=live, clients=len(clients),
                   who=[c.describe() for c in clients[:10]])


def _who(clients: list[Client]) -> str:
    shown = ", ".join(c.describe() for c in clients[:5])
    return shown + (f" and {len(clients) - 5} more" if len(clients) > 5 else "")


def swap(conn, sql, live: str, scratch: str, previous: str | None) -> None:
    """live -> previous, scratch -> live. Retries while a client slips in between (PostgreSQL)."""
    deadline = time.monotonic() + SWAP_RETRY_SECONDS
    while True:
        try:
            _swap_once(conn, sql, live, scratch, previous)
            return
        except psycopg.errors.ObjectInUse as exc:
            if time.monotonic() >= deadline:
                raise DatabaseError(f"cannot rename {live!r}: {db.describe(exc, live)}; "
                                    "a client keeps connecting to it") from None
            time.sleep(0.2)
        except psycopg.Error as exc:
            raise DatabaseError(f"swapping in the restored database: {db.describe(exc, live)}") from None


def _swap_once(conn, sql, live: str, scratch: str, previous: str | None) -> None:
    if sql.swap_in_transaction:
        with conn.transaction():
            if previous:
                conn.execute(sql.rename_sql(live, previous))
            conn.execute(sql.rename_sql(scratch, live))
        return
    if previous:
        conn.execute(sql.rename_sql(live, previous))
    try:
        conn.execute(sql.rename_sql(scratch, live))
    except BaseException:
        if previous:
            conn.execute(sql.rename_sql(previous, live))  # put the live database back
        raise
