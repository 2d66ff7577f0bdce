"""CockroachDB: the database-level SQL of restore and verify, the dump (dump.py) and the swap (swap.py).

CockroachDB drops with CASCADE, has no template databases or advisory locks, cannot
rename a database that views or routines depend on (see swap.py), and cannot tell which
database a session uses.
"""

from __future__ import annotations

from ...db import quote_ident, quote_literal
from ...errors import DatabaseError
from .. import Client
from . import dump as dc, native
from .swap import Dependents, HoldBack, View, is_view_statement, routine_dependents, swap_keeping_views, \
    trigger_dependent, view_dependent


class CockroachDB:
    name = "cockroachdb"
    # `postgres` exists on CockroachDB too, for tools that expect it; defaultdb is its own default.
    maintenance_databases = ("defaultdb", "postgres")
    # Views and routines block ALTER DATABASE ... RENAME: the restore holds back the
    # backup's tail and swaps with swap.swap_keeping_views.
    defers_views = True
    # The server cannot say which database a session uses: pg_stat_activity is empty
    # (pkg/sql/pg_catalog.go) and SHOW CLUSTER SESSIONS has no database column. Counting
    # every session would wait for, and with terminateClients end, other applications'
    # sessions on a shared cluster; so the restore neither waits for nor ends sessions
    # here, and relies on the Manager being stopped (the chart holds it at 0 replicas).
    sees_clients = False

    def dump(self, conn, config, write, stats) -> None:
        return dc.dump_cockroachdb(conn, config.database, write, stats)

    def check_restorable(self, manifest, conn) -> None:
        """A logical dump's SQL runs on any supported version; CockroachDB's own backups do not."""
        if manifest.method != "native":
            return
        server = conn.execute(dc.VERSION_SQL).fetchone()[0]
        why = native.check_restorable(native.parse_release(manifest.server_version), native.parse_release(server))
        if why:
            raise DatabaseError(f"{manifest.key}: {why}; nothing was changed")

    def restore_defer(self):
        return HoldBack()

    def verify_defer(self):
        return is_view_statement  # rows live in tables: views are not loaded, as in a restore before its swap

    def swap_in(self, conns, live: str, scratch: str, previous: str | None, deferred: list[str]) -> None:
        swap_keeping_views(conns.maintenance, self, live, scratch, previous, deferred, conns.open)

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

    def drop(self, conns, name: str, force: bool) -> None:
        conns.maintenance.execute(self.drop_sql(name, force))

    def comment_sql(self, name: str, text: str) -> str:
        return f"COMMENT ON DATABASE {quote_ident(name)} IS {quote_literal(text)}"

    def clients(self, conn, name: str) -> list[Client]:
        return []  # see sees_clients

    def terminate(self, conn, client: Client) -> None:
        raise AssertionError("the restore never ends sessions on CockroachDB (see sees_clients)")

    def try_lock(self, conn, database: str) -> bool:
        return True  # no advisory locks; the Helm hook runs one restore Job at a time

    # -- views (swap.py); `conn` is connected to `database` --------------------------

    VIEWS_SQL = ("SELECT schema_name, descriptor_name, create_statement FROM crdb_internal.create_statements "
                 "WHERE database_name = current_database() AND descriptor_type = 'view' ORDER BY descriptor_id")

    def views(self, conn, database: str):
        """Views in creation order (descriptor ids grow), so each follows what it selects from."""
        rows = conn.execute(self.VIEWS_SQL).fetchall()
        return [View(schema, name, create.lstrip().upper().startswith("CREATE MATERIALIZED VIEW"),
                     dc.unqualify([create], database)[0]) for schema, name, create in rows]

    def drop_view_sql(self, view) -> str:
        kind = "MATERIALIZED VIEW" if view.materialized else "VIEW"
        return f"DROP {kind} IF EXISTS {quote_ident(view.schema)}.{quote_ident(view.name)}"

    def dependents(self, conn, database: str):
        """The views, triggers and routines that block renaming `database`, read with the dump's
        own queries and version gates, and their grants and owners as the dump writes them.

        Routines a table definition calls stay (a table needs them; they read no table)."""
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


