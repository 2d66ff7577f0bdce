"""CockroachDB's BACKUP and RESTORE jobs, run from one autocommit session: where the nodes write
(the collection, behind an external connection where the server has them), starting a job,
waiting for it with progress in the log, and reading what a backup holds (SHOW BACKUP).

Every server message on this path may carry the collection's URL: it goes through
native.redact before it reaches an error or a log line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

import psycopg

from ... import db, log
from ...errors import DatabaseError
from ...stats import table_key
from . import native


def describe(exc: psycopg.Error, database: str) -> str:
    return native.redact(db.describe(exc, database))


class Collection:
    """The collection as the statements name it: `external://<run's connection>` on 22.2+ (its URL,
    credentials and all, then lives in CockroachDB only), else the URL itself (its secret shown
    as `redacted` in job output). Used as a context manager: the connection is dropped after."""

    def __init__(self, conn: psycopg.Connection, url: str, release: tuple[int, int, int], run_id: str,
                 database: str):
        self.conn, self.url, self.release, self.database = conn, url, release, database
        self.shown = native.shown_url(url)
        self.target = url
        self._name = native.external_connection_name(run_id) \
            if release[:2] >= native.EXTERNAL_CONNECTIONS_SINCE else ""

    def __enter__(self) -> "Collection":
        if not self._name:
            return self
        try:
            self.conn.execute(native.create_connection_sql(self._name, self.url))
        except psycopg.errors.InsufficientPrivilege as exc:
            log.get().warning("cannot create an external connection (GRANT SYSTEM EXTERNALCONNECTION TO <user> "
                              "lets it): the collection's URL goes into the job itself, its secret shown as "
                              "redacted; with a custom endpoint a user that is not admin then needs "
                              "GRANT SYSTEM EXTERNALIOIMPLICITACCESS too", error=describe(exc, self.database))
            self._name = ""
        except psycopg.Error as exc:
            raise DatabaseError(f"creating the external connection to {self.shown}: "
                                f"{describe(exc, self.database)}") from None
        else:
            self.target = native.connection_url(self._name)
        return self

    def __exit__(self, *exc_info) -> None:
        if not self._name:
            return
        try:
            self.conn.execute(native.drop_connection_sql(self._name))
        except psycopg.Error as exc:
            log.get().warning("could not drop this run's external connection; drop it by hand",
                              connection=self._name, error=describe(exc, self.database))


def start(conn: psycopg.Connection, sql: str, what: str, database: str) -> int:
    """Run a detached BACKUP or RESTORE; its job id (the one column `WITH detached` returns)."""
    try:
        row = conn.execute(sql).fetchone()
    except psycopg.Error as exc:
        raise JobRefused(f"starting the {what}: {describe(exc, database)}", getattr(exc, "sqlstate", None)) from None
    if not row:
        raise DatabaseError(f"starting the {what}: the server returned no job id")
    return int(row[0])


class JobRefused(DatabaseError):
    def __init__(self, message: str, sqlstate: str | None):
        super().__init__(message)
        self.sqlstate = sqlstate


@dataclass
class Waiting:
    poll_seconds: float = 5.0
    pause_limit: float = 3600.0
    progress_seconds: float = 10.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic


def wait(conn: psycopg.Connection, job_id: int, what: str, database: str, how: Waiting,
         reconnect: Callable[[], psycopg.Connection] | None = None) -> None:
    """Poll job `job_id` until it succeeds; fail (cancelling it where the run gives up on it) otherwise.

    A lost session is opened again (`reconnect`): the job runs on the cluster, not in it. Leaving
    early (SIGTERM) cancels the job, so no backup this run does not list completes after it."""
    logger = log.get()
    paused_since: float | None = None
    started = how.clock()
    next_line = started + how.progress_seconds
    try:
        while True:
            try:
                row = conn.execute(native.JOB_SQL, (job_id,)).fetchone()
            except psycopg.OperationalError as exc:
                if reconnect is None:
                    raise DatabaseError(f"waiting for {what} job {job_id}: {describe(exc, database)}") from None
                logger.warning(f"the session watching the {what} job was lost; opening another", job_id=job_id,
                               error=describe(exc, database))
                conn = reconnect()
                continue
            state = native.JobState(*row) if row else None
            now = how.clock()
            paused = state is not None and state.status.lower() in native.PAUSED_STATES
            paused_since = (paused_since or now) if paused else None
            verdict = native.judge(job_id, what, state, now - paused_since if paused_since else 0.0, how.pause_limit)
            if verdict.done:
                return
            if verdict.failed:
                if verdict.cancel:
                    cancel(conn, job_id, database)
                raise DatabaseError(verdict.failed)
            if paused and paused_since == now:
                logger.warning(f"the {what} job is paused: RESUME JOB resumes it; past the limit this run cancels it",
                               job_id=job_id, status=state.status, limit_s=how.pause_limit)
            if now >= next_line:
                next_line = now + how.progress_seconds
                logger.info(f"{what} progress", job_id=job_id, status=state.status,
                            fraction_completed=round(state.fraction, 4), elapsed_s=round(now - started, 1),
                            running_status=native.redact(state.running_status) or None)
            how.sleep(how.poll_seconds)
    except (DatabaseError, psycopg.Error):
        raise
    except BaseException:
        cancel(conn, job_id, database)
        raise


def cancel(conn: psycopg.Connection, job_id: int, database: str) -> None:
    try:
        conn.execute(native.cancel_job_sql(job_id))
        log.get().warning("canceled the job", job_id=job_id)
    except psycopg.Error as exc:
        log.get().error("could not cancel the job; cancel it by hand (CANCEL JOB)", job_id=job_id,
                        error=describe(exc, database))


@dataclass
class Layer:
    """One backup of a chain as SHOW BACKUP lists it: its tables' rows and its bytes."""
    backup_type: str = ""
    end: datetime | None = None
    tables: dict[str, int] = field(default_factory=dict)
    size_bytes: int = 0
    rows: int = 0


# SHOW BACKUP's end_time is the job's end time to the microsecond (a TIMESTAMP before 23.2, TIMESTAMPTZ
# from it: cockroach PR #108290); ours came from the HLC in nanoseconds.
END_TOLERANCE = timedelta(milliseconds=1)
SHOW_BACKUP_COLUMNS = ("parent_schema_name, object_name, object_type, backup_type, end_time, "
                       "coalesce(size_bytes, 0), coalesce(rows, 0)")


def layer(conn: psycopg.Connection, collection: Collection, folder: str, end: datetime) -> Layer:
    """The backup of chain `folder` that ends at `end` (SHOW BACKUP's end_time, to the microsecond)."""
    show = native.show_backup_sql(folder, collection.target, collection.release)
    try:
        rows = conn.execute(f"SELECT {SHOW_BACKUP_COLUMNS} FROM [{show}]").fetchall()
    except psycopg.Error as exc:
        raise DatabaseError(f"reading the backup {folder} in {collection.shown}: "
                            f"{describe(exc, collection.database)}") from None
    found = Layer()
    for schema, name, kind, backup_type, end_time, size, count in rows:
        if abs(_utc(end_time) - end) > END_TOLERANCE:
            continue
        found.backup_type, found.end = backup_type, _utc(end_time)
        found.size_bytes += int(size)
        if kind == "table" and schema is not None:
            found.tables[table_key(schema, name)] = int(count)
            found.rows += int(count)
    if found.end is None:
        raise DatabaseError(f"SHOW BACKUP lists no backup ending at {end.isoformat()} in {folder} of "
                            f"{collection.shown}: the job succeeded, but its backup is not where it should be")
    return found


def _utc(moment) -> datetime:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
