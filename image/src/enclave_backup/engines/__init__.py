"""The database engines behind one interface: what backup, restore and verify ask of a server.

Each engine (postgresql/, cockroachdb/) gives an object with
- `dump(conn, config, write, stats)`: the logical dump, returning the database-level state for the manifest;
- the database-level SQL of restore and verify: `databases`, `create_sql`, `rename_sql`, `drop`,
  `read_marker` / `write_marker`, `database_state` / `carry_state`, `clients` / `terminate`, `try_lock`;
- `check_restorable(manifest, conn)`: whether this server can take the backup, before anything changes;
- `restore_defer()` / `verify_defer()`: which statements the load holds back, and `swap_in(...)`,
  which puts the restored database in the live one's place.
"""

from __future__ import annotations

from dataclasses import dataclass

ENGINES = ("postgresql", "cockroachdb")


@dataclass(frozen=True)
class Client:
    """A session on the live database that a restore waits for (or ends)."""
    id: str
    application: str
    address: str

    def describe(self) -> str:
        return f"{self.application or '(no application_name)'} from {self.address or 'local socket'}"


def get(name: str):
    """The engine called `name` (as the manifest and db.detect_engine name it)."""
    if name == "cockroachdb":
        from .cockroachdb.engine import CockroachDB
        return CockroachDB()
    if name == "postgresql":
        from .postgresql.engine import PostgreSQL
        return PostgreSQL()
    raise ValueError(f"unknown engine {name!r}; one of {', '.join(ENGINES)}")
