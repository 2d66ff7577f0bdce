"""Work beside the live database: the maintenance connection, and dropping what earlier runs left.

CREATE, ALTER and DROP DATABASE run on an autocommit connection to a maintenance database
of the engine (never the live one, which is renamed), after checking that the server is
the engine the backup came from.
"""

from __future__ import annotations

import re

import psycopg

from . import db, log
from .config import Config
from .dialects import dialect
from .errors import DatabaseError, IntegrityError, NoSuchDatabase
from .manifest import Manifest
from .names import derived_pattern


def connect_maintenance(config: Config, manifest: Manifest):
    """(autocommit connection outside the live database, the server's dialect)."""
    # The server must run the backup's engine (checked below), so its maintenance databases are tried.
    names = dialect(manifest.engine if config.engine == "auto" else config.engine).maintenance_databases
    for i, name in enumerate(names):
        try:
            conn = db.connect(config, dbname=name, autocommit=True)
            break
        except NoSuchDatabase:
            if i == len(names) - 1:
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


# Subscriptions live in a shared catalog: DROP DATABASE refuses a database that has one, enabled
# or not, WITH (FORCE) too. pg_dump writes them (connect = false), so scratch databases get them.
_SUBSCRIPTIONS = ("SELECT s.subname, s.subslotname FROM pg_catalog.pg_subscription s "
                  "JOIN pg_catalog.pg_database d ON d.oid = s.subdbid WHERE d.datname = %s ORDER BY 1")


def drop_database(conn, sql, name: str, force: bool, config: Config | None = None) -> None:
    """DROP DATABASE `name`; on PostgreSQL (given `config` to connect to it) its subscriptions first."""
    if config is not None and sql.name == "postgresql":
        _drop_subscriptions(config, conn, name)
    conn.execute(sql.drop_sql(name, force=force))


def _drop_subscriptions(config: Config, conn, name: str) -> None:
    found = conn.execute(_SUBSCRIPTIONS, (name,)).fetchall()
    if not found:
        return
    with db.connect(config, dbname=name, autocommit=True) as target:
        for subscription, slot in found:
            ident = db.quote_ident(subscription)
            # Detached from its slot, DROP SUBSCRIPTION never contacts the publisher (which may be
            # gone, or still serve the live database's copy of this subscription).
            target.execute(f"ALTER SUBSCRIPTION {ident} DISABLE")
            if slot is not None:
                target.execute(f"ALTER SUBSCRIPTION {ident} SET (slot_name = NONE)")
            target.execute(f"DROP SUBSCRIPTION {ident}")
            log.get().info("dropped a subscription so that its database can be dropped; a replication slot "
                           "the publisher holds for it is left there", database=name, subscription=subscription,
                           slot=slot)


def drop_leftovers(conn, sql, live: str, config: Config | None = None) -> None:
    """Scratch databases of runs that were killed outright (SIGKILL, OOM, node loss)."""
    pattern = derived_pattern(live, "restoring")
    for name in sql.databases(conn):
        if pattern.match(name):
            drop_database(conn, sql, name, True, config)
            log.get().warning("dropped the scratch database of an interrupted restore", scratch=name)


def keep_previous(conn, sql, live: str, keep: int, config: Config | None = None) -> list[str]:
    """Drop all but the newest `keep` previous databases; a failure here only warns."""
    pattern = derived_pattern(live, "pre_restore")
    try:
        names = sorted((n for n in sql.databases(conn) if pattern.match(n)), reverse=True)
    except psycopg.Error as exc:
        log.get().warning("could not list previous databases", error=db.describe(exc, live))
        return []
    dropped = []
    for name in names[keep:]:
        try:
            drop_database(conn, sql, name, False, config)
            dropped.append(name)
        except (psycopg.Error, DatabaseError) as exc:
            log.get().warning("could not drop an old previous database", database=name,
                              error=db.describe(exc, name))
    return dropped


def drop_quietly(conn, sql, name: str, kind: str = "scratch database", later: str = "the next restore",
                 config: Config | None = None) -> None:
    """Drop `name` after a failure or a verify: an error here only logs (`later` run drops it)."""
    try:
        if conn.broken and config is not None:  # the server restarted or the session was ended
            with db.connect(config, dbname=sql.maintenance_databases[0], autocommit=True) as fresh:
                drop_database(fresh, sql, name, True, config)
        else:
            drop_database(conn, sql, name, True, config)
        log.get().info(f"{kind} dropped", scratch=name)
    except Exception as exc:  # noqa: BLE001 - the original error or the verdict matters more
        log.get().error(f"could not drop the {kind}; {later} drops it", scratch=name, error=log.scrub(str(exc)))
