"""A database swap that works when views and routines depend on tables (needed for CockroachDB).

CockroachDB refuses `ALTER DATABASE ... RENAME` while any view depends on one of the
database's tables (pkg/sql/rename_database.go; logic test `rename_database`: "cannot
rename database because relation ... depends on relation ..."), and from 22.2 while a
routine does (cockroach PR #87203: "check udf dependencies before renaming a db"). So the restore holds back
the tail of a CockroachDB script (routines, triggers, views, grants, owners; see
dump.py) and the swap runs as reversible steps, each undone in reverse order if a
later one fails:

0. refuse a tail that names roles the cluster does not have (nothing is renamed yet);
1. record the live database's dependents (routines that tables do not call, triggers,
   views, and their grants and owners) and drop them: triggers, views, routines;
2. rename live -> previous;
3. create those dependents again in previous (it stays a complete copy);
4. rename scratch -> live (the scratch database has none: the restore held back the
   script's tail);
5. run the held-back tail in live.

Every per-database statement runs on a connection to that database, with names that
are not qualified by the database, so the sequence is the same on PostgreSQL.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable

import psycopg

from ... import db, log
from ...errors import DatabaseError

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
_IDENT = r'(?:"(?:[^"]|"")+"|[^\s."(]+)'


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


@dataclass(frozen=True)
class Dependent:
    create: str  # names not qualified by the database
    drop: str  # also what tells two of them apart


@dataclass(frozen=True)
class Dependents:
    """What blocks renaming a database, in creation order, with the grants and owners of it."""
    routines: list[Dependent] = field(default_factory=list)
    triggers: list[Dependent] = field(default_factory=list)
    views: list[Dependent] = field(default_factory=list)
    privileges: list[str] = field(default_factory=list)  # GRANT and ALTER ... OWNER TO statements

    def creates(self) -> list[str]:
        """Routines first (triggers and views may use them), then triggers, views, privileges."""
        return [d.create for d in self.routines + self.triggers + self.views] + self.privileges

    def drops(self) -> list[str]:
        """Triggers first (they run routines), then views and routines, newest first."""
        return [d.drop for d in self.triggers + self.views[::-1] + self.routines[::-1]]

    def missing_from(self, present: "Dependents") -> list[str]:
        """The creates of those not in `present` (a drop that stopped half way), then every privilege."""
        there = set(present.drops())
        return [d.create for d in self.routines + self.triggers + self.views if d.drop not in there] + self.privileges


def view_dependent(sql, view: View) -> Dependent:
    return Dependent(view.create, sql.drop_view_sql(view))


_TRIGGER = re.compile(rf"(?is)^\s*CREATE\s+(?:OR\s+REPLACE\s+)?TRIGGER\s+({_IDENT})\s.*?"
                      rf"\sON\s+({_IDENT}(?:\.{_IDENT}){{0,2}})\s")


def trigger_dependent(create: str) -> Dependent:
    """`CREATE TRIGGER name ... ON table ...` as SHOW CREATE TRIGGER and pg_get_triggerdef print it."""
    match = _TRIGGER.match(create)
    if not match:
        raise DatabaseError(f"unexpected trigger definition from the server: {' '.join(create.split())[:120]!r}")
    return Dependent(create, f"DROP TRIGGER {match.group(1)} ON {match.group(2)}")


def routine_dependents(routines: list, carried: list) -> list[Dependent]:
    """`carried` of `routines` (dump.Routine); an overloaded name is dropped with its parameters."""
    from .dump import overloaded_names
    overloaded = set(overloaded_names(routines))
    return [Dependent(r.create, f"DROP {r.kind} {r.name}" + (parameters(r.create) if r.name in overloaded else ""))
            for r in carried]


def parameters(create: str) -> str:
    """The parenthesised parameter list that follows the routine's name."""
    start, depth, quote = create.index("("), 0, ""
    for i in range(start, len(create)):
        ch = create[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return " ".join(create[start:i + 1].split())
    raise DatabaseError(f"unexpected routine definition: {' '.join(create.split())[:120]!r}")


_ROLE_AT_END = re.compile(r'(?is)^\s*(?:GRANT\s.*\sTO|ALTER\s.*\sOWNER\s+TO)\s+'
                          r'("(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)\s*;?\s*$')


def named_roles(statements: list[str]) -> set[str]:
    """Roles the GRANT and ALTER ... OWNER TO statements of a script's tail name (PUBLIC is no role)."""
    roles = set()
    for statement in statements:
        match = _ROLE_AT_END.match(statement)
        if match:
            name = match.group(1)
            if name.startswith('"'):
                roles.add(name[1:-1].replace('""', '"'))
            elif name.lower() != "public":
                roles.add(name.lower())  # unquoted names are folded to lower case
    return roles


class Steps:
    """Run steps in order; undo() undoes the completed ones, newest first."""

    def __init__(self) -> None:
        self.done: list[tuple[str, Callable[[], None], str]] = []

    def run(self, what: str, do: Callable[[], None], undo: Callable[[], None], partial: bool = False,
            by_hand: str = "") -> None:
        """`partial`: the step may fail half done, and its undo copes with that, so undo it too.
        `by_hand`: what to do instead if its undo fails."""
        try:
            do()
        except BaseException:
            if partial:
                self.done.append((what, undo, by_hand))
            raise
        self.done.append((what, undo, by_hand))

    def undo(self) -> tuple[str, list[str]]:
        """Undo what was done, newest first, stopping at the first undo that fails: each undo
        expects the newer ones to have worked (a database name may belong to the other one).
        Returns ("" or that failure, what is left to do by hand, in order)."""
        while self.done:
            what, undo, _ = self.done[-1]
            try:
                undo()
            except Exception as exc:  # noqa: BLE001 - reported with what is left to do
                left = [hand for _, _, hand in reversed(self.done)]
                self.done.clear()
                return f"undoing {what}: {log.scrub(str(exc).strip())}", left
            self.done.pop()
        return "", []


def swap_keeping_views(conn, sql, live: str, scratch: str, previous: str | None, deferred: list[str],
                       connect: Callable[[str], psycopg.Connection]) -> None:
    """live -> previous and scratch -> live with the views, routines and triggers of both carried across."""
    check_roles(conn, sql, live, deferred)
    steps = Steps()
    try:
        if previous:
            kept = dependents_of(sql, connect, live)
            if kept.creates():
                log.get().info("recorded the live database's triggers, views and routines before dropping them",
                               database=live, statements=kept.creates())
            steps.run(f"dropping the triggers, views and routines of {live!r}",
                      lambda: run_in(connect, live, kept.drops()),
                      lambda: run_in(connect, live, kept.missing_from(dependents_of(sql, connect, live))),
                      partial=True,
                      by_hand=f"in {live!r}, run those of the statements logged as \"recorded the live database's "
                              "triggers, views and routines\" whose objects are missing, then its GRANT and ALTER "
                              "lines")
            steps.run(f"renaming {live!r} to {previous!r}", lambda: rename(conn, sql, live, previous),
                      lambda: rename(conn, sql, previous, live), by_hand=sql.rename_sql(previous, live) + ";")
            steps.run(f"creating the triggers, views and routines of {previous!r}",
                      lambda: run_in(connect, previous, kept.creates()),
                      lambda: drop_dependents(sql, connect, previous), partial=True,
                      by_hand=drop_by_hand(previous))
        steps.run(f"renaming {scratch!r} to {live!r}", lambda: rename(conn, sql, scratch, live),
                  lambda: rename(conn, sql, live, scratch), by_hand=sql.rename_sql(live, scratch) + ";")
        steps.run(f"running the held-back views, routines, triggers, grants and owners in {live!r}",
                  lambda: run_in(connect, live, deferred),
                  lambda: drop_dependents(sql, connect, live), partial=True, by_hand=drop_by_hand(live))
    except (psycopg.Error, DatabaseError) as exc:
        text = exc if isinstance(exc, DatabaseError) else db.describe(exc, live)
        failed, by_hand = steps.undo()
        state = (f"{live!r} is unchanged" if not failed else
                 f"undoing the swap failed too ({failed}); to put {live!r} back, with no client connected, do by hand: "
                 + " ".join(f"({i}) {hand}" for i, hand in enumerate(by_hand, 1)))
        raise DatabaseError(f"swapping in the restored database: {text}; {state}") from None
    except BaseException:
        steps.undo()
        raise


def check_roles(conn, sql, live: str, deferred: list[str]) -> None:
    """Step 0: a grant or owner naming a missing role would fail the tail after the renames."""
    named = named_roles(deferred)
    if not named:
        return
    try:
        existing = sql.roles(conn)
    except psycopg.errors.InsufficientPrivilege as exc:
        log.get().warning("cannot list the cluster's roles to check the backup's grants and owners up front",
                          error=db.describe(exc, live), roles=sorted(named))
        return
    except psycopg.Error as exc:
        raise DatabaseError(f"listing the cluster's roles: {db.describe(exc, live)}; {live!r} is unchanged") from None
    missing = sorted(named - existing)
    if missing:
        raise DatabaseError(
            f"the backup grants privileges to or gives objects to roles this cluster does not have: "
            f"{', '.join(missing)}; create them (CREATE ROLE <name>) and restore again; {live!r} is unchanged")


def dependents_of(sql, connect: Callable[[str], psycopg.Connection], database: str) -> Dependents:
    with connect(database) as c:
        return sql.dependents(c, database)


def drop_dependents(sql, connect: Callable[[str], psycopg.Connection], database: str) -> None:
    run_in(connect, database, dependents_of(sql, connect, database).drops())


def drop_by_hand(database: str) -> str:
    return (f"in {database!r}, drop its triggers, views and functions or procedures (SHOW CREATE ALL TRIGGERS, "
            "SHOW CREATE ALL ROUTINES and SHOW CREATE ALL TABLES list them)")


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
