"""Engine dialects: the database-level SQL of restore and verify (create, rename, drop, comment, sessions).

PostgreSQL and CockroachDB differ here: CockroachDB drops with CASCADE, has no
template databases or advisory locks, cannot rename a database that views or routines
depend on (see swap_views.py), and cannot tell which database a session uses.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

import psycopg

from . import dbstate, log
from .db import quote_ident, quote_literal

MARKER_TOOL = "enclave-backup"


@dataclass(frozen=True)
class Client:
    id: str
    application: str
    address: str

    def describe(self) -> str:
        return f"{self.application or '(no application_name)'} from {self.address or 'local socket'}"


def marker(key: str, sha256: str, restored_at: str) -> str:
    """The text the restored database carries as its comment: which backup it came from."""
    return json.dumps({"restored_by": MARKER_TOOL, "key": key, "sha256": sha256, "restored_at": restored_at},
                      sort_keys=True)


def parse_marker(comment: str | None) -> dict | None:
    if not comment:
        return None
    try:
        data = json.loads(comment)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("restored_by") != MARKER_TOOL:
        return None
    return data


class PostgreSQL:
    name = "postgresql"
    # Where CREATE/ALTER/DROP DATABASE run, tried in order: outside the database being replaced.
    maintenance_databases = ("postgres",)
    swap_in_transaction = True  # ALTER DATABASE ... RENAME is transactional here
    defers_views = False  # views do not block a rename here
    sees_clients = True  # pg_stat_activity says which database each session uses

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


class CockroachDB:
    name = "cockroachdb"
    # `postgres` exists on CockroachDB too, for tools that expect it; defaultdb is its own default.
    maintenance_databases = ("defaultdb", "postgres")
    swap_in_transaction = False  # schema changes run one at a time; a failed swap is undone by hand below
    # Views and routines block ALTER DATABASE ... RENAME: the restore holds back the
    # backup's tail and swaps with swap_views.swap_keeping_views.
    defers_views = True
    # The server cannot say which database a session uses: pg_stat_activity is empty
    # (pkg/sql/pg_catalog.go) and SHOW CLUSTER SESSIONS has no database column. Counting
    # every session would wait for, and with terminateClients end, other applications'
    # sessions on a shared cluster; so the restore neither waits for nor ends sessions
    # here, and relies on the Manager being stopped (the chart holds it at 0 replicas).
    sees_clients = False

    def databases(self, conn) -> list[str]:
        return [r[0] for r in conn.execute("SELECT database_name FROM [SHOW DATABASES]").fetchall()]

    def read_comment(self, conn, name: str) -> str | None:
        row = conn.execute("SELECT comment FROM [SHOW DATABASES WITH COMMENT] WHERE database_name = %s",
                           (name,)).fetchone()
        return row[0] if row else None

    def database_state(self, conn, name: str) -> dict | None:
        return None

    def create_sql(self, conn, name: str, state: dict | None) -> str:
        return f"CREATE DATABASE {quote_ident(name)}"

    def carry_state(self, conn, name: str, state: dict | None) -> dict | None:
        return None

    def read_marker(self, conn, name: str) -> str | None:
        return self.read_comment(conn, name)

    def write_marker(self, conn, name: str, text: str) -> None:
        conn.execute(self.comment_sql(name, text))

    def rename_sql(self, old: str, new: str) -> str:
        return f"ALTER DATABASE {quote_ident(old)} RENAME TO {quote_ident(new)}"

    def drop_sql(self, name: str, force: bool) -> str:
        return f"DROP DATABASE IF EXISTS {quote_ident(name)} CASCADE"

    def comment_sql(self, name: str, text: str) -> str:
        return f"COMMENT ON DATABASE {quote_ident(name)} IS {quote_literal(text)}"

    def clients(self, conn, name: str) -> list[Client]:
        return []  # see sees_clients

    def terminate(self, conn, client: Client) -> None:
        raise AssertionError("the restore never ends sessions on CockroachDB (see sees_clients)")

    def try_lock(self, conn, database: str) -> bool:
        return True  # no advisory locks; the Helm hook runs one restore Job at a time

    # -- views (swap_views.py); `conn` is connected to `database` --------------------------

    VIEWS_SQL = ("SELECT schema_name, descriptor_name, create_statement FROM crdb_internal.create_statements "
                 "WHERE database_name = current_database() AND descriptor_type = 'view' ORDER BY descriptor_id")

    def views(self, conn, database: str):
        """Views in creation order (descriptor ids grow), so each follows what it selects from."""
        from .dump_cockroach import unqualify
        from .swap_views import View
        rows = conn.execute(self.VIEWS_SQL).fetchall()
        return [View(schema, name, create.lstrip().upper().startswith("CREATE MATERIALIZED VIEW"),
                     unqualify([create], database)[0]) for schema, name, create in rows]

    def drop_view_sql(self, view) -> str:
        kind = "MATERIALIZED VIEW" if view.materialized else "VIEW"
        return f"DROP {kind} IF EXISTS {quote_ident(view.schema)}.{quote_ident(view.name)}"

    def dependents(self, conn, database: str):
        """The views, triggers and routines that block renaming `database`, read with the dump's
        own queries and version gates, and their grants and owners as the dump writes them.

        Routines a table definition calls stay (a table needs them; they read no table)."""
        from . import dump_cockroach as dc
        from .swap_views import Dependents, routine_dependents, trigger_dependent, view_dependent
        version = dc.parse_version(conn.execute(dc.VERSION_SQL).fetchone()[0])
        views = self.views(conn, database)
        routines = dc.read_routines(conn, version, database)
        carried = []
        if routines:
            creates = dc.split_table_statements(dc.unqualify(dc.first_column(conn, dc.SHOW_TABLES_SQL), database))[0]
            relations = dc.split_views(creates)[0]
            carried = [r for r in routines if not r.called_by(relations)]
        triggers = dc.trigger_statements(conn, version, database)
        # Unique names among all routines: a name overloaded by a routine that stays is no target.
        carried_oids = {r.oid for r in carried}
        kept = {oid: target for oid, target in dc.routine_targets(routines).items() if oid in carried_oids}
        grant_targets = set(kept.values()) | {f"TABLE {dc.qualified(v.schema, v.name)}" for v in views}
        owner_targets = set(kept.values()) | {
            f"{'MATERIALIZED VIEW' if v.materialized else 'VIEW'} {dc.qualified(v.schema, v.name)}" for v in views}
        privileges = []
        if grant_targets:
            on_sequence = version >= dc.GRANT_ON_SEQUENCE_VERSION
            privileges = [dc.grant_sql(*row) for row in dc.grant_rows(conn, kept, on_sequence) if row[0] in grant_targets]
            privileges += [dc.owner_sql(*row) for row in dc.owner_rows(conn, kept, []) if row[0] in owner_targets]
        return Dependents(routine_dependents(routines, carried), [trigger_dependent(t) for t in triggers],
                          [view_dependent(self, v) for v in views], privileges)

    # `SHOW ROLES` lists every role and user of the cluster from system.users (username,
    # options, member_of); `public` is no row of it.
    ROLES_SQL = "SELECT username FROM [SHOW ROLES]"

    def roles(self, conn) -> set[str]:
        return {row[0] for row in conn.execute(self.ROLES_SQL).fetchall()}


def dialect(engine: str):
    return CockroachDB() if engine == "cockroachdb" else PostgreSQL()
