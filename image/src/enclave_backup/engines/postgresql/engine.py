"""PostgreSQL: the database-level SQL of restore and verify, and the dump (pg_dump, see dump.py)."""

from __future__ import annotations

import re
import time
import zlib

import psycopg

from ... import db, log
from ...db import quote_ident, quote_literal
from ...errors import DatabaseError
from .. import Client
from . import state as dbstate
from .dump import dump_postgresql

SWAP_RETRY_SECONDS = 10.0  # after terminating clients: time for their sessions to end

# Subscriptions live in a shared catalog: DROP DATABASE refuses a database that has one, enabled
# or not, WITH (FORCE) too. pg_dump writes them (connect = false), so scratch databases get them.
_SUBSCRIPTIONS = ("SELECT s.subname, s.subslotname FROM pg_catalog.pg_subscription s "
                  "JOIN pg_catalog.pg_database d ON d.oid = s.subdbid WHERE d.datname = %s ORDER BY 1")


class PostgreSQL:
    name = "postgresql"
    # Where CREATE/ALTER/DROP DATABASE run, tried in order: outside the database being replaced.
    maintenance_databases = ("postgres",)
    defers_views = False  # views do not block a rename here
    sees_clients = True  # pg_stat_activity says which database each session uses

    def dump(self, conn, config, write, stats) -> dict:
        return dump_postgresql(conn, config.database, write, stats, pg_dump=config.pg_dump,
                               progress_interval=config.progress_interval,
                               lock_timeout_seconds=config.lock_timeout_seconds)

    def check_restorable(self, manifest, conn) -> None:
        """pg_dump's SQL is for its own server version and newer ones."""
        match = re.match(r"PostgreSQL (\d+)", manifest.server_version)
        source, target = (int(match.group(1)) if match else None), conn.info.server_version // 10000
        if source and target < source:
            raise DatabaseError(f"{manifest.key} is a backup of a PostgreSQL {source} server; this server runs "
                                f"PostgreSQL {target}, which may not read its SQL (made for {source}). Restore it "
                                f"into PostgreSQL {source} or newer; nothing was changed")

    def restore_defer(self):
        return None  # nothing blocks the renames: the whole script loads into the scratch database

    verify_defer = restore_defer

    def databases(self, conn) -> list[str]:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate").fetchall()]

    def database_state(self, conn, name: str) -> dict | None:
        return dbstate.read_database_state(conn, name)

    def create_sql(self, conn, name: str, state: dict | None) -> str:
        """CREATE DATABASE with the encoding, locale and owner of `state` (the live database or the backup's)."""
        # template0: pg_dump output expects a pristine database (template1 may hold extras).
        sql = f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0"
        if state is None:
            return sql
        sql += dbstate.create_options(state)
        owner = state.get("owner")
        exists, is_me = conn.execute("SELECT count(*) > 0, bool_or(rolname = current_user) FROM pg_roles "
                                     "WHERE rolname = %s", (owner,)).fetchone()
        if not exists:
            log.get().warning("the backup's database owner does not exist here; the restoring user owns it",
                              owner=owner)
            return sql
        return sql if is_me else sql + f" OWNER {quote_ident(owner)}"

    def carry_state(self, conn, name: str, state: dict | None) -> dict | None:
        """Give `name` the privileges, settings, connection limit and comment of `state`."""
        if state is None:
            return None
        not_carried = []
        for what, statement in dbstate.apply_steps(name, state):
            try:
                conn.execute(statement)
            except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedObject):
                # A database owner may not set another role's settings or a superuser-only parameter,
                # and a role the backup names may not exist here: what `pg_dump | psql` would also
                # leave out must not discard a loaded restore.
                not_carried.append(what)
        if not_carried:
            log.get().warning("database-level state not carried over: this user may not set it (or a role it "
                              "names does not exist); a superuser can set it on the restored database",
                              scratch=name, not_carried=sorted(set(not_carried)))
        return {**dbstate.summary(state), **({"not_carried": sorted(set(not_carried))} if not_carried else {})}

    def read_marker(self, conn, name: str) -> str | None:
        row = conn.execute(
            "SELECT (SELECT substr(c, length(%s) + 2) FROM pg_db_role_setting s, unnest(s.setconfig) c "
            "        WHERE s.setdatabase = d.oid AND s.setrole = 0 AND c LIKE %s || '=%%'), "
            "       shobj_description(d.oid, 'pg_database') "
            "FROM pg_database d WHERE d.datname = %s",
            (dbstate.MARKER_SETTING, dbstate.MARKER_SETTING, name)).fetchone()
        return (row[0] or row[1]) if row else None

    def write_marker(self, conn, name: str, text: str) -> None:
        # A database setting, not the comment: the database's own comment must survive a restore.
        try:
            conn.execute(f"ALTER DATABASE {quote_ident(name)} SET {quote_ident(dbstate.MARKER_SETTING)} "
                         f"TO {quote_literal(text)}")
        except psycopg.errors.InsufficientPrivilege:
            # Only superusers, or roles granted SET on it, may store a custom setting.
            conn.execute(f"COMMENT ON DATABASE {quote_ident(name)} IS {quote_literal(text)}")
            log.get().warning("the restore marker replaced the database comment: this user may not store the "
                              f"{dbstate.MARKER_SETTING} setting; as a superuser run GRANT SET ON PARAMETER "
                              f"{dbstate.MARKER_SETTING} TO <restore user> to keep comments", database=name)

    def rename_sql(self, old: str, new: str) -> str:
        return f"ALTER DATABASE {quote_ident(old)} RENAME TO {quote_ident(new)}"

    def drop_sql(self, name: str, force: bool) -> str:
        return f"DROP DATABASE IF EXISTS {quote_ident(name)}" + (" WITH (FORCE)" if force else "")

    def drop(self, conns, name: str, force: bool) -> None:
        """DROP DATABASE `name`, its subscriptions first."""
        conn = conns.maintenance
        found = conn.execute(_SUBSCRIPTIONS, (name,)).fetchall()
        if found:
            with conns.open(name) as target:
                for subscription, slot in found:
                    ident = quote_ident(subscription)
                    # Detached from its slot, DROP SUBSCRIPTION never contacts the publisher (which may be
                    # gone, or still serve the live database's copy of this subscription).
                    target.execute(f"ALTER SUBSCRIPTION {ident} DISABLE")
                    if slot is not None:
                        target.execute(f"ALTER SUBSCRIPTION {ident} SET (slot_name = NONE)")
                    target.execute(f"DROP SUBSCRIPTION {ident}")
                    log.get().info("dropped a subscription so that its database can be dropped; a replication "
                                   "slot the publisher holds for it is left there", database=name,
                                   subscription=subscription, slot=slot)
        conn.execute(self.drop_sql(name, force=force))

    def swap_in(self, conns, live: str, scratch: str, previous: str | None, deferred: list[str]) -> None:
        """live -> previous (None: no live database), scratch -> live in one transaction; retried while a
        client slips in between."""
        conn = conns.maintenance
        deadline = time.monotonic() + SWAP_RETRY_SECONDS
        while True:
            try:
                with conn.transaction():
                    if previous:
                        conn.execute(self.rename_sql(live, previous))
                    conn.execute(self.rename_sql(scratch, live))
                return
            except psycopg.errors.ObjectInUse as exc:
                if time.monotonic() >= deadline:
                    raise DatabaseError(f"cannot rename {live!r}: {db.describe(exc, live)}; "
                                        "a client keeps connecting to it") from None
                time.sleep(0.2)
            except psycopg.Error as exc:
                raise DatabaseError(f"swapping in the restored database: {db.describe(exc, live)}") from None

    def clients(self, conn, name: str) -> list[Client]:
        rows = conn.execute("SELECT pid, coalesce(application_name, ''), coalesce(client_addr::text, '') "
                            # The server ends autovacuum workers itself to rename or drop a database.
                            "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
                            "AND backend_type <> 'autovacuum worker'",
                            (name,)).fetchall()
        return [Client(str(pid), app, addr) for pid, app, addr in rows]

    def terminate(self, conn, client: Client) -> None:
        conn.execute("SELECT pg_terminate_backend(%s)", (int(client.id),))

    def try_lock(self, conn, database: str) -> bool:
        """Session lock against a second restore of the same database; released on disconnect."""
        key = zlib.crc32(f"enclave-backup restore {database}".encode())
        return bool(conn.execute("SELECT pg_try_advisory_lock(%s::bigint)", (key,)).fetchone()[0])


