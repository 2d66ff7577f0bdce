"""Around the swap (each engine's swap_in renames live -> previous and scratch -> live): clients
out first; materialized views refreshed under the final name after; how to roll back by hand."""

from __future__ import annotations

import time

import psycopg

from . import db, log
from .config import Config
from .engines import Client
from .errors import DatabaseError
from .names import restored_name


def wait_for_clients(config: Config, conn, sql, live: str | None) -> None:
    """Wait until nobody else uses the live database; end their sessions if so configured."""
    if live is None:
        return
    logger = log.get()
    if not sql.sees_clients:
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


def refresh_materialized_views(conns: db.Connections, live: str, statements: list[tuple[str, bytes]]) -> None:
    """The load filled materialized views under the scratch database's name, so one over
    current_database() shows that name: refreshed again once the database has its own, in the
    script's (dependency) order. The restore is done by now: a failure here only warns."""
    if not statements:
        return
    logger = log.get()
    try:
        with conns.open(live) as conn:
            conn.execute("SELECT pg_catalog.set_config('search_path', '', false)")  # as the script ran them
            for encoding, statement in statements:
                # The statement's bytes are in the script's encoding (a name may be LATIN1, EUC_JP...).
                conn.execute("SELECT pg_catalog.set_config('client_encoding', %s, false)", (encoding,))
                conn.execute(statement)
    except (psycopg.Error, DatabaseError) as exc:
        logger.warning("could not refresh the materialized views under the database's name; they hold what "
                       "they got in the scratch database", database=live, error=db.describe(exc, live))
        return
    logger.info("materialized views refreshed under the database's name", database=live, views=len(statements))


def rollback_statements(sql, live: str, kept: str, stamp: str) -> list[str]:
    """What puts the kept previous database back, to run by hand with no client connected."""
    statements = [sql.rename_sql(live, restored_name(live, stamp)) + ";", sql.rename_sql(kept, live) + ";"]
    if sql.defers_views:
        statements.insert(0, "(CockroachDB renames no database that views or routines depend on: first drop the "
                             "triggers, views and routines of both databases, SHOW CREATE them to re-create them "
                             "after the renames)")
    return statements
