"""Work beside the live database: the maintenance connection, and dropping what earlier runs left.

CREATE, ALTER and DROP DATABASE run on an autocommit connection to a maintenance database
of the engine (never the live one, which is renamed), after checking that the server is
the engine the backup came from and can take its backup.
"""

from __future__ import annotations

import psycopg

from . import db, engines, log
from .config import Config
from .errors import DatabaseError, IntegrityError, NoSuchDatabase
from .manifest import Manifest
from .names import derived_pattern


def connect_maintenance(config: Config, manifest: Manifest):
    """(the run's db.Connections, the server's engine), the server checked against the backup."""
    # The server must run the backup's engine (checked below), so its maintenance databases are tried.
    names = engines.get(manifest.engine if config.engine == "auto" else config.engine).maintenance_databases
    open_session = db.opener(config)
    for i, name in enumerate(names):
        try:
            conns = db.Connections(open_session(name), name, open_session)
            break
        except NoSuchDatabase:
            if i == len(names) - 1:
                raise
    try:
        with db.database_errors(config.database, "reading the server version"):
            engine, _version = db.detect_engine(conns.maintenance, config.engine)
        if engine != manifest.engine:
            raise IntegrityError(f"{manifest.key} is a {manifest.engine} backup; the server is {engine}")
        sql = engines.get(engine)
        sql.check_restorable(manifest, conns.maintenance)
    except BaseException:
        conns.close()
        raise
    return conns, sql


def drop_leftovers(conns: db.Connections, sql, live: str) -> None:
    """Scratch databases of runs that were killed outright (SIGKILL, OOM, node loss)."""
    pattern = derived_pattern(live, "restoring")
    for name in sql.databases(conns.maintenance):
        if pattern.match(name):
            sql.drop(conns, name, True)
            log.get().warning("dropped the scratch database of an interrupted restore", scratch=name)


def keep_previous(conns: db.Connections, sql, live: str, keep: int) -> list[str]:
    """Drop all but the newest `keep` previous databases; a failure here only warns."""
    pattern = derived_pattern(live, "pre_restore")
    try:
        names = sorted((n for n in sql.databases(conns.maintenance) if pattern.match(n)), reverse=True)
    except psycopg.Error as exc:
        log.get().warning("could not list previous databases", error=db.describe(exc, live))
        return []
    dropped = []
    for name in names[keep:]:
        try:
            sql.drop(conns, name, False)
            dropped.append(name)
        except (psycopg.Error, DatabaseError) as exc:
            log.get().warning("could not drop an old previous database", database=name,
                              error=db.describe(exc, name))
    return dropped


def drop_quietly(conns: db.Connections, sql, name: str, kind: str = "scratch database",
                 later: str = "the next restore") -> None:
    """Drop `name` after a failure or a verify: an error here only logs (`later` run drops it)."""
    try:
        conns.working_maintenance()  # the server restarted or the session was ended
        sql.drop(conns, name, True)
        log.get().info(f"{kind} dropped", scratch=name)
    except Exception as exc:  # noqa: BLE001 - the original error or the verdict matters more
        log.get().error(f"could not drop the {kind}; {later} drops it", scratch=name, error=log.scrub(str(exc)))
