"""Index builds and key constraints of a script run several at once, as `pg_restore -j` runs them.

A plain pg_dump script ends with its post-data: CREATE INDEX and ALTER TABLE ... ADD CONSTRAINT
(primary keys, unique and exclusion constraints), each on one table and needing only the
table and its rows. Run one by one they leave every core but one idle. Here each such
statement goes to the next free loader connection (copyfanout's, idle once the rows are in),
with the main connection's session settings of that moment; any other statement (a foreign
key, which needs the unique index it references; ATTACH PARTITION; CLUSTER; a comment on an
index) waits until every statement sent before it has finished, so the script's order holds
wherever it matters. Two statements on one table take conflicting locks and so run in turn.
A CockroachDB script's INSERT batches run the same way (parallelinserts.py says which).
"""

from __future__ import annotations

import queue
import re
import threading

import psycopg

from .copyfanout import QUEUE_DEPTH, FanOut, session_state
from .sqlscript import Statement

_PARALLEL = re.compile(
    r"(?is)^\s*(?:CREATE\s+(?:UNIQUE\s+)?INDEX\s"
    r"|ALTER\s+TABLE\s+(?:ONLY\s+)?[^;]*?\sADD\s+CONSTRAINT\s+(?:\"(?:[^\"]|\"\")+\"|\S+)\s+(?:PRIMARY\s+KEY|UNIQUE|EXCLUDE)\b)")
_STOP = object()


def runs_alongside(sql: str) -> bool:
    """An index build or key constraint: it may run beside the ones before it."""
    return bool(_PARALLEL.match(sql))


def inserted_rows(cur) -> int:
    """Rows an INSERT statement added (the backup's data batches), 0 for anything else."""
    status = cur.statusmessage or ""
    return max(cur.rowcount, 0) if status.startswith("INSERT ") else 0


def settings_of(main: psycopg.Connection):
    """How a loader takes the main connection's session settings of this moment (PostgreSQL's pg_settings)."""
    wanted = session_state(main)
    return lambda loader: loader.take_state(wanted)


class PostData:
    """Statements handed to the loaders' connections; `wait()` is the barrier before any other.

    `capture(main)`, called as each statement is handed over, gives what a loader runs first to
    take the main connection's session settings of that moment.
    """

    def __init__(self, fanout: FanOut, capture=settings_of):
        self.fanout, self.capture = fanout, capture
        self.rows = 0  # rows the INSERTs run here added, not yet taken
        self.used: set = set()  # the loaders that ran a statement
        # Bounded: INSERT batches of up to 1 MiB each wait here, not the whole script.
        self.work: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self.threads: list[threading.Thread] = []
        self.failed: tuple[Statement, psycopg.Error] | None = None
        self.closing = False
        self.pending = 0
        self.lock = threading.Condition()

    def submit(self, main: psycopg.Connection, statement: Statement) -> None:
        if not self.threads:
            for loader in self.fanout.start_loaders():
                thread = threading.Thread(target=self._work, args=(loader,), name="post-data", daemon=True)
                thread.start()
                self.threads.append(thread)
        with self.lock:
            self.pending += 1
        self.work.put((statement, self.capture(main)))

    def _work(self, loader) -> None:
        while (item := self.work.get()) is not _STOP:
            statement, take_settings = item
            try:
                if self.failed is None and not self.closing:  # after a failure, or a stop, the rest only drains
                    take_settings(loader)
                    rows = inserted_rows(loader.conn.execute(statement.data, binary=True))
                    with self.lock:
                        self.rows += rows
                        self.used.add(loader)
            except psycopg.Error as exc:
                with self.lock:
                    self.failed = self.failed or (statement, exc)
            finally:
                with self.lock:
                    self.pending -= 1
                    self.lock.notify_all()

    def wait(self) -> tuple[Statement, psycopg.Error] | None:
        """Until every statement sent has finished; the first that failed, if one did."""
        with self.lock:
            self.lock.wait_for(lambda: self.pending == 0)
            return self.failed

    def take_rows(self) -> int:
        with self.lock:
            rows, self.rows = self.rows, 0
            return rows

    def close(self) -> None:
        self.closing = True  # a load that stopped (SIGTERM, an error here) runs nothing still queued
        for _ in self.threads:
            self.work.put(_STOP)
        for thread in self.threads:
            thread.join()
        self.threads = []
