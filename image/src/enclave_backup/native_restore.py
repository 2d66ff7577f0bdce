"""A native backup into a scratch database: CockroachDB's RESTORE job, ready for the same swap as a dump.

RESTORE ... WITH new_db_name creates the scratch database itself, at the backup's own end time
(or restore.asOf within its revision history): a chain's folder restores its newest backup
otherwise, which may be a later incremental than the one asked for.
"""

from __future__ import annotations

import os
import secrets

from . import log
from .catalog import parse_time
from .config import Config
from .db import Connections
from .engines.cockroachdb import jobs, native
from .engines.cockroachdb.dump import VERSION_SQL
from .engines.cockroachdb.swap import dependents_of, run_in
from .errors import ConfigError, DatabaseError
from .manifest import Manifest
from .native_backup import waiting
from .replay import Loaded


def as_of_operand(config: Config, manifest: Manifest) -> str:
    """What RESTORE's AS OF SYSTEM TIME gets: the backup's end, or restore.asOf (checked against it)."""
    details = manifest.native or {}
    if not config.restore_as_of:
        return details["end_hlc"]
    wanted, end = native.parse_as_of(config.restore_as_of), parse_time(details["end_time"])
    if wanted > end:
        raise ConfigError(f"restore.asOf {config.restore_as_of} is after {manifest.key} ends ({details['end_time']}); "
                          "choose a later backup (restore.fromObject) or an earlier time; nothing was changed")
    if not details.get("revision_history") and wanted != end:
        raise ConfigError(f"{manifest.key} has no revision history: it restores to its own end time "
                          f"({details['end_time']}) only, not to restore.asOf {config.restore_as_of}; nothing was "
                          "changed")
    # Its own end, exactly: end_time shows microseconds, CockroachDB matches an end to the nanosecond.
    return details["end_hlc"] if wanted == end else native.as_of_literal(wanted)


def check_method(config: Config, manifest: Manifest) -> None:
    if config.restore_as_of and manifest.method != "native":
        raise ConfigError(f"restore.asOf needs a native backup with revision history; {manifest.key} is a dump, "
                          "which restores to the moment it was taken; unset restore.asOf")
    if manifest.method == "native":
        as_of_operand(config, manifest)


def restore_into(config: Config, conns: Connections, sql, manifest: Manifest, scratch: str) -> Loaded:
    """RESTORE `manifest`'s backup as `scratch`; its views, routines and triggers are dropped there and
    returned as the statements to run once it has its final name (they block the rename, see swap.py)."""
    logger = log.get()
    details = manifest.native or {}
    conn = conns.maintenance
    release = native.parse_release(conn.execute(VERSION_SQL).fetchone()[0])
    store = native.store_for(config, details["collection"], os.environ)
    url = native.collection_url(store, release, native.credentials(os.environ))
    with jobs.Collection(conn, url, release, secrets.token_hex(8), scratch) as collection:
        statement = native.restore_sql(manifest.database, details["folder"], collection.target, scratch,
                                       as_of_operand(config, manifest))
        try:
            job_id = jobs.start(conn, statement, "restore", scratch)
        except jobs.JobRefused as refused:
            if refused.sqlstate == native.LICENCE_SQLSTATE:
                raise DatabaseError(f"{refused}; {native.licence_hint(release, 'RESTORE of this backup')}") from None
            raise
        logger.info("restore job started", job_id=job_id, scratch=scratch, collection=collection.shown,
                    folder=details["folder"], as_of=config.restore_as_of or details["end_time"])
        jobs.wait(conn, job_id, "restore", scratch, waiting(config), reconnect=conns.working_maintenance)
        collection.conn = conns.working_maintenance()
    held = dependents_of(sql, conns.open, scratch)
    run_in(conns.open, scratch, held.drops())
    return Loaded(stored=manifest.stored_size, uncompressed=details.get("size_bytes", 0),
                  rows=details.get("rows", 0), deferred=held.creates())
