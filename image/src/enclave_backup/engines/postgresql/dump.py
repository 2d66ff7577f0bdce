"""PostgreSQL dump: one `pg_dump --format=plain` run, streamed, with its tables counted on the way.

pg_dump owns the snapshot and everything a faithful dump needs: ACCESS SHARE locks on every
table before it reads any (so a concurrent TRUNCATE or rewrite waits for the backup), a
session whose settings cannot change a value (DateStyle, IntervalStyle, extra_float_digits,
timeouts, an empty search_path so every name is qualified), large objects with their owners
and privileges, and one declared client encoding for the whole script. We add what pg_dump
does not: a pg_dump that can read this server, row counts per table, progress, a log line
while it waits for a lock and a clear error when it gives up.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import subprocess
import threading
from typing import Callable

import psycopg

from ... import log
from .copycount import CopyCounter
from .state import read_database_state
from ...errors import DatabaseError
from .tools import find_pg_dump, server_major
from ...stats import DumpStats

Write = Callable[[bytes], None]
# pg_dump's output is read a gzip block at a time through a pipe enlarged to match: per read,
# the counter, compressor and hasher each pay their Python call once per MiB, not per 64 KiB.
READ_BYTES = 1 << 20

# The backend pg_dump opened, the relation it waits for, and the sessions in its way.
_LOCK_WAIT = """
SELECT l.relation::regclass::text, l.mode, pg_blocking_pids(a.pid)
FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted
WHERE a.application_name = %s
"""
_BLOCKERS = """
SELECT pid, coalesce(usename, ''), coalesce(application_name, ''), coalesce(client_addr::text, 'local'),
       coalesce(state, ''), extract(epoch FROM now() - xact_start)::bigint
FROM pg_stat_activity WHERE pid = ANY(%s) ORDER BY pid
"""
_LOCK_FAILED = re.compile(r"LOCK TABLE (.+?) IN ACCESS SHARE MODE")


def _enlarge_pipe(pipe) -> None:
    """Linux lets a pipe hold up to pipe-max-size (1 MiB by default) instead of 64 KiB."""
    try:
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, READ_BYTES)
    except (AttributeError, OSError):
        pass  # another kernel, or a lower limit: smaller reads, same result


def dump_postgresql(conn: psycopg.Connection, database: str, write: Write, stats: DumpStats, *,
                    pg_dump: str = "", lock_timeout_seconds: float = 600.0, progress_interval: float = 10.0) -> dict:
    """Stream `database` as one plain SQL script; return the database-level state for the manifest."""
    _quiet_session(conn)
    state = read_database_state(conn)
    conn.rollback()
    binary = find_pg_dump(server_major(conn), pg_dump)
    app = f"enclave-backup-pg_dump-{secrets.token_hex(6)}"
    env = {**os.environ, "PGDATABASE": database, "PGAPPNAME": app}  # a name with '=' is no conninfo here
    cmd = [binary, "--format=plain", "--no-password",
           f"--lock-wait-timeout={max(1, round(lock_timeout_seconds * 1000))}"]
    log.get().info("pg_dump started", pg_dump=binary, lock_timeout_s=lock_timeout_seconds)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _enlarge_pipe(proc.stdout)
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
    reader.start()
    watcher = LockWatcher(conn, app, progress_interval)
    watcher.start()
    counter = CopyCounter(stats)
    try:
        while chunk := proc.stdout.read(READ_BYTES):
            counter.feed(chunk)
            write(chunk)
    except BaseException:
        proc.kill()
        raise
    finally:
        code = proc.wait()
        reader.join()
        watcher.stop()
    if code != 0:
        raise DatabaseError(_failure(b"".join(errors).decode(errors="replace").strip(), code,
                                     watcher, lock_timeout_seconds))
    counter.finish()
    return state


def _quiet_session(conn: psycopg.Connection) -> None:
    """Our own connection idles while pg_dump runs: database-level timeouts must not end it."""
    conn.execute("SET statement_timeout = 0")
    conn.execute("SET idle_in_transaction_session_timeout = 0")
    conn.execute("SET lock_timeout = 0")
    conn.execute("SELECT pg_catalog.set_config('search_path', '', false)")  # qualified names in messages
    if server_major(conn) >= 14:
        conn.execute("SET idle_session_timeout = 0")
    conn.commit()


def _failure(detail: str, code: int, watcher: "LockWatcher", lock_timeout_seconds: float) -> str:
    detail = log.scrub(detail)
    locked = _LOCK_FAILED.search(detail)
    if locked and ("timeout" in detail or "canceling statement" in detail):
        table = watcher.last_table or locked.group(1)
        blockers = watcher.last_blockers or "another session"
        return (f"pg_dump could not lock table {table} within {lock_timeout_seconds:g}s: {blockers} holds a "
                "conflicting lock. End that session or raise ENCLAVE_BACKUP_LOCK_TIMEOUT_SECONDS "
                "(Backup.LockTimeoutSeconds); no backup was written")
    return f"dumping the database: pg_dump failed (exit {code}): {detail}"


class LockWatcher:
    """Logs, at the progress interval, which table pg_dump waits to lock and which sessions hold it."""

    def __init__(self, conn: psycopg.Connection, application_name: str, interval: float):
        self.conn, self.app, self.interval = conn, application_name, max(interval, 0.2)
        self.last_table = ""
        self.last_blockers = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lock-watcher")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._poll()
            except psycopg.Error as exc:
                # Only a diagnostic: a lost monitoring connection must not fail the backup.
                log.get().warning("could not check pg_dump's lock waits", error=log.scrub(str(exc).strip()))
                return
            finally:
                if not self.conn.closed:
                    self.conn.rollback()

    def _poll(self) -> None:
        for table, mode, blocking in self.conn.execute(_LOCK_WAIT, (self.app,)).fetchall():
            rows = self.conn.execute(_BLOCKERS, (list(blocking or []),)).fetchall()
            who = [f"pid {pid} (user {user}, application {app or '-'}, from {addr}, {state or 'unknown state'}"
                   + (f", transaction open {age}s" if age is not None else "") + ")"
                   for pid, user, app, addr, state, age in rows]
            self.last_table = table or ""
            self.last_blockers = "; ".join(who)
            log.get().warning("waiting for a lock before dumping", table=table, wanted=mode,
                              blocked_by=who or ["(unknown)"])
