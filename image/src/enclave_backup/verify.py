"""`enclave-backup verify`: restore a backup into a scratch database, check it, drop it.

The scratch database `<db>_verify_<time>` is never renamed or swapped in; the live
database is never connected to, and its clients are never waited for or ended. The
result is stored beside the backup (`<key>.verify.json`) for `list` and `status`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta

import psycopg

from . import __version__, db, log, native_restore, verification
from .catalog import complete_backups
from .clock import utcnow
from .config import Config
from .errors import BackupError, ConfigError, DatabaseError, IntegrityError, StorageError
from .maintenance import connect_maintenance, drop_quietly
from .manifest import parse_key
from .names import MAX_NAME_BYTES, STAMP, verify_name, verify_pattern
from .replay import load
from .s3 import Storage
from .source import resolve
from .stats import legacy_table_key, table_key

MAX_NAME_ATTEMPTS = 10


def run_verify(config: Config, object_key: str = "latest") -> verification.Record:
    logger = log.get()
    started = time.monotonic()
    if len(verify_name(config.database, "0" * 14).encode()) > MAX_NAME_BYTES:
        raise ConfigError(f"database name {config.database!r} is too long: the verify scratch database's name "
                          f"{verify_name(config.database, STAMP)!r} must fit in {MAX_NAME_BYTES} bytes")
    storage = Storage(config)
    if object_key == "latest":
        newest = complete_backups(storage, config.key_prefix, config.database)
        object_key = newest[0].key if newest else object_key  # none: resolve says so
    try:
        key, manifest = resolve(storage, config, object_key)
    except IntegrityError as exc:
        # A truncated object or a manifest that does not fit it: a failed verification of
        # this database's backup, recorded beside it (never beside another database's objects).
        parsed = parse_key(object_key.lstrip("/"), config.key_prefix)
        if parsed and parsed[0] == config.database and storage.head(object_key.lstrip("/")) is not None:
            _record(storage, verification.Record(key=object_key.lstrip("/"), verified_at="", passed=False,
                                                 exit_code=exc.exit_code, error=log.scrub(str(exc)),
                                                 tool_version=__version__), started)
        raise
    logger.info("verify started", key=key, database=config.database, engine=manifest.engine,
                stored_size=manifest.stored_size, tables=len(manifest.tables))
    record = verification.Record(key=key, verified_at="", passed=False, sha256=manifest.sha256,
                                 tool_version=__version__)
    try:
        loaded_rows, mismatches = _restore_and_count(config, storage, key, manifest)
        record.tables, record.rows = len(manifest.tables), loaded_rows
        if mismatches:
            record.row_mismatches = mismatches
            raise IntegrityError(f"{key}: row counts differ from the manifest in {len(mismatches)} table(s): "
                                 + ", ".join(f"{t} has {m['restored']}, manifest says {m['manifest']}"
                                             for t, m in list(mismatches.items())[:5]))
        record.passed = True
    except BackupError as exc:
        record.exit_code, record.error = exc.exit_code, log.scrub(str(exc))
        # A storage outage says nothing about the backup. A database error does: the backup
        # did not load here (or the server failed while it loaded, which the error names).
        if isinstance(exc, (IntegrityError, DatabaseError)):
            _record(storage, record, started)
        raise
    _record(storage, record, started)
    logger.info("verify complete", key=key, database=config.database, sha256=manifest.sha256,
                tables=record.tables, rows=record.rows, duration_s=record.duration_s)
    return record


def _record(storage: Storage, record: verification.Record, started: float) -> None:
    record.verified_at = utcnow().isoformat().replace("+00:00", "Z")
    record.duration_s = round(time.monotonic() - started, 2)
    try:
        verification.write(storage, record)
    except StorageError as exc:
        log.get().error("could not store the verification result", key=record.key, error=str(exc))


def _restore_and_count(config: Config, storage: Storage, key: str, manifest) -> tuple[int, dict]:
    logger = log.get()
    conns, sql = connect_maintenance(config, manifest)
    with conns:
        with db.database_errors(config.database, "creating the verify scratch database"):
            _drop_leftovers(conns, sql, config)
            scratch = _free_name(conns.maintenance, sql, config.database) if manifest.method == "native" else \
                _create_scratch(conns.maintenance, sql, config.database)
        logger.info("verify scratch database created", scratch=scratch)
        try:
            if manifest.method == "native":
                # The backup's own end time: restore.asOf is the restore's choice, not what is verified.
                native_restore.restore_into(replace(config, restore_as_of=""), conns, sql, manifest, scratch)
                # A native manifest's row counts are SHOW BACKUP's for its own layer (an incremental's are
                # the rows it changed): every table must be there; the rows restored are recorded.
                restored, mismatches = _count(conns, scratch, manifest.tables, sql.name)
                return restored, {t: m for t, m in mismatches.items() if m["restored"] < 0}
            load(config, conns, storage, key, manifest, scratch, defer=sql.verify_defer())
            return _count(conns, scratch, manifest.tables, sql.name)
        finally:
            drop_quietly(conns, sql, scratch, kind="verify scratch database", later="a later verify")


def _create_scratch(conn, sql, database: str) -> str:
    """Create `<db>_verify_<time>`. Names carry whole seconds and verify runs take no lock
    (a manual run may overlap the CronJob's), so CREATE DATABASE itself settles a clash:
    the run that loses it takes the next second's name."""
    for _ in range(MAX_NAME_ATTEMPTS):
        scratch = verify_name(database, utcnow().strftime(STAMP))
        try:
            # No state from the live database (it is never read) and none from the backup:
            # owners and grants it names need not exist here, and nothing connects to it.
            conn.execute(sql.create_sql(conn, scratch, None))
            return scratch
        except psycopg.errors.DuplicateDatabase:
            time.sleep(1)
    raise DatabaseError(f"{MAX_NAME_ATTEMPTS} verify scratch names in a row were taken by other verify runs "
                        f"of {database!r}; try again when they have finished")


def _free_name(conn, sql, database: str) -> str:
    """A verify scratch name no database has, for RESTORE to create (a clash fails it: it takes the next)."""
    for _ in range(MAX_NAME_ATTEMPTS):
        scratch = verify_name(database, utcnow().strftime(STAMP))
        if scratch not in sql.databases(conn):
            return scratch
        time.sleep(1)
    raise DatabaseError(f"{MAX_NAME_ATTEMPTS} verify scratch names in a row were taken by other verify runs "
                        f"of {database!r}; try again when they have finished")


def _drop_leftovers(conns: db.Connections, sql, config: Config) -> None:
    """Scratch databases of verify runs killed outright, old enough that no run still uses them."""
    pattern = verify_pattern(config.database)
    cutoff = (utcnow() - timedelta(seconds=config.reader_marker_seconds)).strftime(STAMP)
    for name in sql.databases(conns.maintenance):
        match = pattern.match(name)
        if match and match.group(1) < cutoff:
            sql.drop(conns, name, True)
            log.get().warning("dropped the scratch database of an interrupted verify", scratch=name)


TABLES_SQL = ("SELECT table_schema, table_name FROM information_schema.tables "
              "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema', "
              "'crdb_internal', 'pg_extension')")


# Extension configuration tables (pg_extension_config_dump): CREATE EXTENSION fills them with the
# extension's own rows (PostGIS: spatial_ref_sys), and pg_dump writes only the rows its filter
# selects (the user's). Counting with that same filter compares like with like.
CONFIG_TABLES_SQL = ("SELECT n.nspname, c.relname, coalesce(u.condition, '') FROM pg_catalog.pg_extension e "
                     "CROSS JOIN LATERAL unnest(e.extconfig, e.extcondition) AS u(oid, condition) "
                     "JOIN pg_catalog.pg_class c ON c.oid = u.oid "
                     "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace")


def _count(conns: db.Connections, scratch: str, expected: dict[str, int], engine: str) -> tuple[int, dict]:
    """(rows restored, {table: {restored, manifest}} for every table whose count differs)."""
    only = "ONLY " if engine == "postgresql" else ""  # a partitioned or parent table's rows are its own
    mismatches: dict[str, dict[str, int]] = {}
    total = 0
    conn = conns.open(scratch)
    with conn, db.database_errors(scratch, "counting the restored rows"):
        tables = conn.execute(TABLES_SQL).fetchall()
        dumped_only = {(s, t): condition for s, t, condition in conn.execute(CONFIG_TABLES_SQL).fetchall()} \
            if engine == "postgresql" else {}
        present = {table_key(s, t): (s, t) for s, t in tables}
        # Manifests written before table_key named tables by their bare names joined by a dot.
        legacy = {legacy_table_key(s, t): (s, t) for s, t in tables}
        for table, rows in sorted(expected.items()):
            found = present.get(table) or legacy.get(table)
            if found is None:
                mismatches[table] = {"restored": -1, "manifest": rows}
                continue
            schema, name = found
            got = conn.execute(f"SELECT count(*) FROM {only}{db.quote_ident(schema)}.{db.quote_ident(name)} "
                               + dumped_only.get((schema, name), "")).fetchone()[0]
            total += got
            if got != rows:
                mismatches[table] = {"restored": got, "manifest": rows}
    return total, mismatches
