"""A database swap that works when views depend on tables (needed for CockroachDB).

CockroachDB refuses `ALTER DATABASE ... RENAME` while any view depends on one of the
database's tables (pkg/sql/rename_database.go; logic test `rename_database`: "cannot
rename database because relation ... depends on relation ..."), and from 22.2 while a
routine does (cockroach PR #87203: "check udf dependencies before renaming a db"). So the restore holds back
the tail of a CockroachDB script (routines, triggers, views, grants, owners; see
dump_cockroach) and the swap runs as reversible steps, each undone in reverse order if a
later one fails:

1. record the live database's views (in creation order) and drop them, newest first;
2. rename live -> previous;
3. create those views again in previous (it stays a complete copy);
4. rename scratch -> live (the scratch database has no views: the restore held back
   the script's tail);
5. run the held-back tail in live.

Every per-database statement runs on a connection to that database, with names that
are not qualified by the database, so the sequence is the same on PostgreSQL.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable

import psycopg

from . import db, log
from .errors import DatabaseError

RENAME_RETRY_SECONDS = 10.0  # a just-closed session of ours may still hold the database briefly

_VIEW_STATEMENT = re.compile(
    r"(?is)^\s*(?:CREATE\s+(?:OR\s+REPLACE\s+)?(?:MATERIALIZED\s+)?VIEW|REFRESH\s+MATERIALIZED\s+VIEW"
    r"|COMMENT\s+ON\s+(?:MATERIALIZED\s+)?VIEW)\b")


@dataclass(frozen=True)
class View:
    schema: str
    name: str
    materialized: bool
    create: str  # its CREATE statement, names not qualified by the database


_TAIL_STATEMENT = re.compile(
    r"(?is)^\s*(?:CREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE|TRIGGER)|GRANT|REVOKE"
    r"|ALTER\s+(?:TABLE|VIEW|MATERIALIZED\s+VIEW|SEQUENCE|TYPE|SCHEMA|FUNCTION|PROCEDURE)\s.*\sOWNER\s+TO)\b")
_CREATE_TABLE = re.compile(r"(?is)^\s*CREATE\s+TABLE\b")


def is_view_statement(sql: str) -> bool:
    """View statements: the restore holds these back until the restored database has its final name."""
    return bool(_VIEW_STATEMENT.match(sql))


class HoldBack:
    """Holds back the tail of a script: the first view statement and everything after it, or the
    first routine, trigger, grant or owner statement after a CREATE TABLE and everything after it.

    Routines before the first table are those the tables call (in a DEFAULT or CHECK); they
    read no table, so they stay. Everything held back runs, in script order, once the
    restored database has its final name.
    """

    def __init__(self) -> None:
        self.tables = self.holding = False

    def __call__(self, sql: str) -> bool:
        if not self.holding:
            self.tables = self.tables or bool(_CREATE_TABLE.match(sql))
            self.holding = is_view_statement(sql) or (self.tables and bool(_TAIL_STATEMENT.match(sql)))
        return self.holding


class Steps:
    """Run steps in order; undo() runs the undo of every completed step, newest first."""

    def __init__(self) -> None:
        self.done: list[tuple[str, Callable[[], None]]] = []

    def run(self, what: str, do: Callable[[], None], undo: Callable[[], None], partial: bool = False) -> None:
        """`partial`: the step may fail half done, and its undo copes with that, so undo it too."""
        try:
            do()
        except BaseException:
            if partial:
                self.done.append((what, undo))
            raise
        self.done.append((what, undo))

    def undo(self) -> list[str]:
        """Undo what was done; return descriptions of undo steps that failed."""
        failed = []
        for what, undo in reversed(self.done):
            try:
                undo()
            except Exception as exc:  # noqa: BLE001 - keep undoing the rest; report all
                failed.append(f"undoing {what}: {log.scrub(str(exc).strip())}")
        self.done.clear()
        return failed


def swap_keeping_views(conn, sql, live: str, scratch: str, previous: str | None, deferred: list[str],
                       connect: Callable[[str], psycopg.Connection]) -> None:
    """live -> previous and scratch -> live with the views of both carried across."""
    steps = Steps()
    try:
        live_views = views_of(sql, connect, live) if previous else []
        if previous:
            steps.run(f"dropping the views of {live!r}", lambda: drop_views(sql, connect, live, live_views),
                      lambda: restore_views(sql, connect, live, live_views), partial=True)
            steps.run(f"renaming {live!r} to {previous!r}", lambda: rename(conn, sql, live, previous),
                      lambda: rename(conn, sql, previous, live))
            steps.run(f"creating the views of {previous!r}",
                      lambda: run_in(connect, previous, [v.create for v in live_views]),
                      lambda: drop_views(sql, connect, previous, views_of(sql, connect, previous)), partial=True)
        steps.run(f"renaming {scratch!r} to {live!r}", lambda: rename(conn, sql, scratch, live),
                  lambda: rename(conn, sql, live, scratch))
        steps.run(f"running the held-back views, routines, triggers, grants and owners in {live!r}",
                  lambda: run_in(connect, live, deferred),
                  lambda: drop_views(sql, connect, live, views_of(sql, connect, live)), partial=True)
    except (psycopg.Error, DatabaseError) as exc:
        text = exc if isinstance(exc, DatabaseError) else db.describe(exc, live)
        failed = steps.undo()
        state = (f"{live!r} is unchanged" if not failed else
                 "undoing the swap failed too (" + "; ".join(failed) + "); check the databases by hand")
        raise DatabaseError(f"swapping in the restored database: {text}; {state}") from None
    except BaseException:
        steps.undo()
        raise


def views_of(sql, connect: Callable[[str], psycopg.Connection], database: str) -> list[View]:
    with connect(database) as c:
        return sql.views(c, database)


def drop_views(sql, connect: Callable[[str], psycopg.Connection], database: str, views: list[View]) -> None:
    """Newest first, so no view is dropped before the views built on it."""
    with connect(database) as c:
        for view in reversed(views):
            c.execute(sql.drop_view_sql(view))


def restore_views(sql, connect: Callable[[str], psycopg.Connection], database: str, views: list[View]) -> None:
    """Create those of `views` that are missing now (a drop may have stopped half way)."""
    present = {(v.schema, v.name) for v in views_of(sql, connect, database)}
    run_in(connect, database, [v.create for v in views if (v.schema, v.name) not in present])


def run_in(connect: Callable[[str], psycopg.Connection], database: str, statements: list[str]) -> None:
    if not statements:
        return
    with connect(database) as c:
        for statement in statements:
            try:
                c.execute(statement)
            except psycopg.Error as exc:
                flat = " ".join(statement.split())
                raise DatabaseError(f"in {database!r}, {flat[:120]!r} failed: {db.describe(exc, database)}") from None


def rename(conn, sql, old: str, new: str) -> None:
    deadline = time.monotonic() + RENAME_RETRY_SECONDS
    while True:
        try:
            conn.execute(sql.rename_sql(old, new))
            return
        except psycopg.errors.ObjectInUse:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
