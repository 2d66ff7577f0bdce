"""One restore run: object -> sha256 -> decompressor -> statements -> scratch database -> swap.

The live database is only renamed (never dropped) and only after the whole script
applied and the object matched its manifest; see the design's invariants 3-5.
source.py picks and checks the object, replay.py loads it, names.py names the databases,
maintenance.py works beside the live one, the engine's swap_in (engines/) puts the restored one
in its place. The connections are opened here once and handed to each step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psycopg
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from . import db, log, native_restore
from .clock import utcnow
from .config import Config
from .errors import DatabaseError
from .maintenance import connect_maintenance, drop_leftovers, drop_quietly, keep_previous
from .manifest import Manifest
from .marker import marker, parse_marker
from .names import STAMP, previous_name, scratch_name
from .replay import load
from .s3 import Storage
from .source import resolve
from .swapping import refresh_materialized_views, rollback_statements, wait_for_clients


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
    load_connections: int = 1
    duration_s: float = 0.0
    previous_database: str | None = None
    dropped_previous: list[str] = field(default_factory=list)
    rollback: list[str] = field(default_factory=list)


def run_restore(config: Config, object_key: str = "latest") -> RestoreSummary:
    """Restore `object_key` (or the newest complete backup for "latest") into config.database."""
    logger = log.get()
    started = time.monotonic()
    force = config.restore_force
    storage = Storage(config)
    key, manifest = resolve(storage, config, object_key)
    native_restore.check_method(config, manifest)  # restore.asOf against the backup, before any work
    logger.info("restore started", key=key, database=config.database, engine=manifest.engine,
                method=manifest.method, stored_size=manifest.stored_size,
                uncompressed_size=manifest.uncompressed_size, force=force,
                **({"as_of": config.restore_as_of} if config.restore_as_of else {}))
    # A server that restarts (failover, upgrade, OOM) ends every session: the scratch database is
    # dropped over a new connection and the restore runs once more from the start.
    attempts = Retrying(stop=stop_after_attempt(2), retry=retry_if_exception_type(_ConnectionLost), reraise=True,
                        before_sleep=lambda state: logger.warning(
                            "the connection to the database server was lost during the restore (did it restart?); "
                            "its scratch database was dropped, trying once more",
                            error=str(state.outcome.exception())))
    return attempts(_restore, config, storage, key, manifest, started)


class _ConnectionLost(DatabaseError):
    """A restore failed with the maintenance connection gone too: the server went away."""


def _alive(conn) -> bool:
    try:
        conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _restore(config: Config, storage: Storage, key: str, manifest: Manifest, started: float) -> RestoreSummary:
    logger = log.get()
    force = config.restore_force
    conns, sql = connect_maintenance(config, manifest)
    with conns:
        conn = conns.maintenance
        live = config.database
        with db.database_errors(live, "preparing the restore"):
            if not sql.try_lock(conn, live):
                raise DatabaseError(f"another restore of {live!r} is running; try again when it has finished")
            drop_leftovers(conns, sql, live)
            mark = parse_marker(sql.read_marker(conn, live))
        if mark and (mark.get("key"), mark.get("sha256"), mark.get("as_of", "")) == \
                (key, manifest.sha256, config.restore_as_of) and not force:
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
            if manifest.method != "native":  # RESTORE creates its database itself
                conn.execute(sql.create_sql(conn, scratch, state))
                logger.info("scratch database created", scratch=scratch)
        try:
            if manifest.method == "native":
                loaded = native_restore.restore_into(config, conns, sql, manifest, scratch)
            else:
                loaded = load(config, conns, storage, key, manifest, scratch, defer=sql.restore_defer())
            with db.database_errors(scratch, "carrying database-level settings over"):
                carried = sql.carry_state(conn, scratch, state)
            if carried is not None:
                logger.info("database-level state carried over", source="live database" if live_exists else "backup",
                            **carried)
            with db.database_errors(scratch, "marking the restored database"):
                sql.write_marker(conn, scratch, marker(key, manifest.sha256, utcnow().isoformat(),
                                                       config.restore_as_of))
            wait_for_clients(config, conn, sql, live if live_exists else None)
            sql.swap_in(conns, live, scratch, previous if live_exists else None, loaded.deferred)
        except BaseException as exc:
            lost = isinstance(exc, DatabaseError) and not _alive(conn)
            drop_quietly(conns, sql, scratch)  # over a new connection if this one is gone
            if lost:
                raise _ConnectionLost(str(exc)) from None
            raise
        refresh_materialized_views(conns, live, loaded.refreshes)
        dropped = keep_previous(conns, sql, live, config.restore_keep_previous)

    kept = previous if live_exists and previous not in dropped else None
    rollback = rollback_statements(sql, live, kept, stamp) if kept else []
    summary = RestoreSummary(
        key, live, restored=True, sha256=manifest.sha256, stored_size=loaded.stored,
        uncompressed_size=loaded.uncompressed, tables=len(manifest.tables), rows=loaded.rows,
        statements=loaded.statements, load_connections=loaded.connections,
        duration_s=round(time.monotonic() - started, 2),
        previous_database=kept, dropped_previous=dropped, rollback=rollback)
    logger.info("restore complete", key=key, database=live, stored_bytes=summary.stored_size,
                sql_bytes=summary.uncompressed_size, tables=summary.tables, rows=summary.rows,
                statements=summary.statements, load_connections=summary.load_connections,
                duration_s=summary.duration_s, previous_database=kept,
                dropped_previous=dropped,
                rollback=("with no client connected, run: " + " ".join(rollback)) if rollback else
                "no previous database kept (none existed or restore.keepPrevious=0)")
    return summary
