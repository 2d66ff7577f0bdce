"""A CockroachDB script's INSERT batches run on several connections at once, as `pg_restore -j` loads tables.

Each batch of our CockroachDB dump is one INSERT that commits on its own, and on one connection a
load waits out every batch's commit (its round trips between the nodes) in turn. A batch goes to
the next free loader connection (postdata.PostData runs them) when the order batches run in
cannot show:
- the table's primary key columns are all in the batch's column list. The key, and with it where
  CockroachDB stores the row, comes from the backup; a table keyed by its implicit rowid gets new
  keys in the order its rows arrive, so its batches run on the main connection, in script order;
- the main connection is in no transaction (a script's own BEGIN ... COMMIT stays one).
Foreign keys, triggers and views come after the data in the script, and every other statement
waits for the batches sent before it. Loaders take the main connection's session settings by
running the same SET statements, in order: CockroachDB's pg_settings has no `source` to read them
back from (NULL in every row, pkg/sql/pg_catalog.go).
"""

from __future__ import annotations

import re

import psycopg
from psycopg.pq import TransactionStatus

from .sqlscript import Statement

_QUOTED = r'"(?:[^"]|"")+"'
# Exactly what insertbatch.Target writes; anything else (DEFAULT VALUES, unquoted names) runs in order.
_BATCH = re.compile(rf"INSERT INTO ({_QUOTED})\.({_QUOTED}) \(({_QUOTED}(?:, {_QUOTED})*)\) VALUES ", re.S)
_NAME = re.compile(_QUOTED)
_SESSION_CHANGE = re.compile(r"(?is)^(?:SET|RESET)\s|^SELECT\b.*\bset_config\s*\(")

# Every table's primary key columns, read once at the first batch (a script creates its tables
# before their rows; one query, as information_schema on CockroachDB builds its rows table by table).
_KEY_COLUMNS = """
SELECT k.table_schema, k.table_name, k.column_name FROM information_schema.table_constraints c
JOIN information_schema.key_column_usage k ON k.constraint_schema = c.constraint_schema
    AND k.constraint_name = c.constraint_name AND k.table_schema = c.table_schema AND k.table_name = c.table_name
WHERE c.constraint_type = 'PRIMARY KEY'
"""
_TABLE_KEY_COLUMNS = _KEY_COLUMNS + " AND c.table_schema = %s AND c.table_name = %s"


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"')


class ParallelInserts:
    """Called with each statement: whether it is a batch that may run beside the ones before it.

    `defer` is the load's: a statement it holds back for the swap runs nowhere now.
    """

    def __init__(self, main: psycopg.Connection, defer=None) -> None:
        self.main, self.defer = main, defer
        self.settings: list[bytes] = []  # the session statements the main connection ran, in order
        self._replayed: dict = {}  # loader -> how many of them it has run (each only on its own thread)
        self._keys: dict[tuple[str, str], frozenset[str]] | None = None

    def __call__(self, sql: str) -> bool:
        batch = _BATCH.match(sql)
        main = self.main
        if batch is None or main.info.transaction_status != TransactionStatus.IDLE or \
                (self.defer is not None and self.defer(sql)):
            return False
        table = (_unquote(batch[1]), _unquote(batch[2]))
        if self._keys is None:
            self._keys = self._key_columns(_KEY_COLUMNS)
        if table not in self._keys:  # created after the first batch, or without a key
            self._keys[table] = self._key_columns(_TABLE_KEY_COLUMNS, table).get(table, frozenset())
        key = self._keys[table]
        return bool(key) and key <= {_unquote(name) for name in _NAME.findall(batch[3])}

    def _key_columns(self, sql: str, params=()) -> dict[tuple[str, str], frozenset[str]]:
        found: dict[tuple[str, str], set[str]] = {}
        try:
            for schema, table, column in self.main.execute(sql, params).fetchall():
                found.setdefault((schema, table), set()).add(column)
        except psycopg.Error:
            return {}  # unknown: in order, as always
        return {table: frozenset(columns) for table, columns in found.items()}

    def ran(self, statement: Statement) -> None:
        """`statement` ran on the main connection: keep it if it changed the session."""
        if _SESSION_CHANGE.match(statement.sql):
            self.settings.append(statement.data)

    def capture(self, main: psycopg.Connection):
        """PostData's capture: a loader runs the session statements it has not run yet, up to this moment's."""
        upto = len(self.settings)

        def take(loader) -> None:
            done = self._replayed.get(loader, 0)
            for data in self.settings[done:upto]:
                loader.conn.execute(data, binary=True)
            self._replayed[loader] = max(done, upto)
        return take
