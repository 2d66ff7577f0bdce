"""A backup's script replayed into a database: read, hashed, decompressed, split, run one statement at a time.

The object is checked against its manifest (size, sha256, SQL bytes) before the splitter
sees its end, so a cut-off last statement never runs; a failing statement stops the replay
and names its line (design invariant 4).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass, field

import psycopg

from . import db, encryption, log, readers, screen, segments
from .compress import decompressed
from .copyfanout import FanOut
from .config import Config
from .errors import DatabaseError, IntegrityError
from .manifest import Manifest
from .parallelinserts import ParallelInserts
from .postdata import PostData, inserted_rows, runs_alongside
from .progress import Progress
from .s3 import ObjectReader, Storage
from .sqlscript import CopyBlock, Statement, split

READ_CHUNK = 256 * 1024


@dataclass
class Loaded:
    stored: int = 0
    uncompressed: int = 0
    statements: int = 0
    rows: int = 0
    table: str = ""
    connections: int = 1  # most connections that loaded one table's rows at once
    copying: CopyBlock | None = None  # the COPY block being loaded
    deferred: list[str] = field(default_factory=list)  # statements to run after the swap
    # REFRESH MATERIALIZED VIEW as written, with the client_encoding it was written in, in the script's order
    refreshes: list[tuple[str, bytes]] = field(default_factory=list)


class ObjectStream:
    """The object's bytes, hashed as they pass (as stored), decrypted if encrypted, decompressed into SQL text."""

    def __init__(self, reader: ObjectReader, key: str, manifest: Manifest, loaded: Loaded, progress: Progress,
                 identities: list | None = None):
        self.reader, self.key, self.manifest, self.identities = reader, key, manifest, identities
        self.loaded, self.progress = loaded, progress
        self.hasher = hashlib.sha256()
        self.checked: segments.Checked | None = None
        self.sql_chunks = self._sql_chunks()

    def _read(self):
        if segments.covers(self.manifest.segments, self.manifest.stored_size):
            self.checked = segments.Checked(self.reader.read, self.manifest.segments,
                                            f"s3://{self.reader.bucket}/{self.key}")
            self.hasher = self.checked.whole  # hashed on the reading thread, off the replay's
            for raw in self.checked:
                self.loaded.stored += len(raw)
                yield raw
            return
        # source.prove read and matched the whole object before
        for raw in iter(lambda: self.reader.read(READ_CHUNK), b""):
            self.hasher.update(raw)
            self.loaded.stored += len(raw)
            yield raw

    def _sql_chunks(self):
        with contextlib.closing(encryption.plaintext(self.manifest, self.identities, self._read())) as stored:
            for text in decompressed(self.manifest.compression, stored):
                self.loaded.uncompressed += len(text)
                self.progress.add(len(text), self._snapshot)
                yield text
        # Checked before the splitter sees the end, so a cut-off last statement never runs.
        self.verify()

    def close(self) -> None:
        """Stop reading: ends the decrypting and segment-reading threads of a replay that stopped early."""
        self.sql_chunks.close()
        if self.checked is not None:
            self.checked.close()

    def _snapshot(self) -> dict:
        got = self.loaded
        rows = got.rows + (got.copying.rows_so_far if got.copying else 0)
        return {"stored_bytes": got.stored, "statements": got.statements, "rows": rows, "table": got.table}

    def check_rest(self) -> None:
        """Read, decompress and count what the splitter has not taken, and check the whole against
        the manifest: only the SQL text's size tells a short stream from a complete one."""
        for _ in self.sql_chunks:
            pass

    def verify(self) -> None:
        m, got = self.manifest, self.loaded
        problems = []
        if got.stored != m.stored_size:
            problems.append(f"{got.stored} stored bytes, manifest says {m.stored_size}")
        if self.hasher.hexdigest() != m.sha256:
            problems.append(f"sha256 {self.hasher.hexdigest()}, manifest says {m.sha256}")
        if got.uncompressed != m.uncompressed_size:
            problems.append(f"{got.uncompressed} bytes of SQL, manifest says {m.uncompressed_size}")
        if problems:
            raise IntegrityError(f"{self.key} does not match its manifest: " + "; ".join(problems))


def load(config: Config, conns: db.Connections, storage: Storage, key: str, manifest: Manifest, scratch: str,
         defer=None) -> Loaded:
    """Apply the object's script to `scratch`, one statement at a time, stopping at the first error.

    Statements for which `defer(sql)` is true are kept in `Loaded.deferred` instead (the tail
    of a CockroachDB script, views and routines among it, run once the database has its final name).
    """
    logger = log.get()
    loaded = Loaded()
    progress = Progress(config.progress_interval, lambda fields: logger.info("restore progress", **fields))
    conn = conns.open(scratch)
    fanout = FanOut(lambda: conns.open(scratch), config.restore_jobs) \
        if config.restore_jobs > 1 else None
    # Side by side: pg_dump's post-data index builds; CockroachDB's INSERT batches (its scripts declare
    # indexes in CREATE TABLE).
    post, inserts, alongside = None, None, runs_alongside
    if fanout is not None and manifest.engine == "postgresql":
        post = PostData(fanout)
    elif fanout is not None and manifest.engine == "cockroachdb":
        inserts = alongside = ParallelInserts(conn, defer)
        post = PostData(fanout, inserts.capture)
    # The marker keeps prune away from the backup while it is read.
    with conn, contextlib.closing(fanout) if fanout else contextlib.nullcontext(), \
            contextlib.closing(post) if post else contextlib.nullcontext(), \
            readers.hold(storage, key), storage.open_read(key) as reader, conn.cursor() as cur, \
            contextlib.closing(ObjectStream(reader, key, manifest, loaded, progress,
                                            encryption.identities_for(config, key, manifest))) as stream:
        for item in split(stream.sql_chunks):
            statement = item.statement if isinstance(item, CopyBlock) else item
            screen.check(statement)
            loaded.statements += 1
            if post is not None:
                if not isinstance(item, CopyBlock) and alongside(statement.sql):
                    try:
                        post.submit(conn, statement)
                    except psycopg.Error as exc:
                        _statement_failed(stream, statement, exc, scratch)
                    if post.failed is not None:  # stop reading now, not at the next statement that waits
                        _statement_failed(stream, *post.wait(), scratch)
                    loaded.rows += post.take_rows()
                    continue
                # A SET takes effect for what is sent after it (each statement carries the settings of
                # its moment): only other statements wait for those running.
                if isinstance(item, CopyBlock) or not _SESSION_SET.match(statement.sql):
                    if failed := post.wait():
                        _statement_failed(stream, *failed, scratch)
            try:
                if isinstance(item, CopyBlock):
                    loaded.table, loaded.copying = _copy_table(statement.sql), item
                    if fanout is not None and not _read_by_materialized_view(conn, statement.data):
                        fanout.copy(conn, statement.data, item)
                    else:
                        with cur.copy(statement.data) as copy:
                            for data in item:
                                copy.write(data)
                    loaded.rows += item.rows  # one line per row in text format
                    loaded.copying = None
                    loaded.connections = max(loaded.connections, fanout.widest if fanout else 1)
                elif defer is not None and defer(statement.sql):
                    loaded.deferred.append(statement.sql)
                else:
                    # The extended protocol runs one statement only: nothing can ride along unscreened.
                    cur.execute(statement.data, binary=True)
                    loaded.rows += inserted_rows(cur)
                    if inserts is not None:
                        inserts.ran(statement)
                    if _REFRESH.match(statement.sql):
                        loaded.refreshes.append((conn.info.parameter_status("client_encoding"), statement.data))
            except psycopg.errors.UndefinedObject as exc:
                if not _SESSION_SET.match(statement.sql):
                    _statement_failed(stream, statement, exc, scratch)
                # A newer pg_dump sets parameters this server does not have (pg_dump 17+:
                # transaction_timeout); a parameter that does not exist cannot matter here.
                logger.warning("skipped a setting this server does not know", line=statement.line,
                               statement=statement.head())
            except psycopg.Error as exc:
                _statement_failed(stream, statement, exc, scratch)
        if post is not None:
            if failed := post.wait():
                _statement_failed(stream, *failed, scratch)
            loaded.rows += post.take_rows()
        if inserts is not None:
            loaded.connections = max(loaded.connections, len(post.used))
    return loaded


_REFRESH = re.compile(r"(?is)^REFRESH\s+MATERIALIZED\s+VIEW\b")

# The tables (and their inheritance or partition parents) that a materialized view reads, directly or
# through views: a query's float sums and the like depend on the order rows are stored in, and rows
# spread over several connections are stored in another order than the backup's.
_MATVIEW_READS = """
WITH RECURSIVE tables(oid) AS (
    SELECT pg_catalog.to_regclass(%s)::oid
    UNION SELECT i.inhparent FROM pg_catalog.pg_inherits i JOIN tables t ON i.inhrelid = t.oid),
readers(oid) AS (
    SELECT oid FROM tables
    UNION SELECT r.ev_class FROM readers x
        JOIN pg_catalog.pg_depend d ON d.refobjid = x.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass
             AND d.classid = 'pg_catalog.pg_rewrite'::regclass
        JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid)
SELECT EXISTS (SELECT FROM readers x JOIN pg_catalog.pg_class c ON c.oid = x.oid WHERE c.relkind = 'm')
"""


def _read_by_materialized_view(conn, copy: bytes) -> bool:
    """True: load the table of this COPY on the main connection alone, in the backup's row order."""
    try:
        # The name is in the script's client_encoding, which the connection now speaks too.
        table = _copy_table(copy.decode(conn.info.encoding))
        return bool(conn.execute(_MATVIEW_READS, (table,)).fetchone()[0])
    except (UnicodeError, LookupError):
        return True  # a name we cannot read back: the serial load is right for every table
    except psycopg.Error:
        return False  # a server without these catalogs has no such views to keep


_SESSION_SET = re.compile(r"(?is)^SET\s+(SESSION\s+)?[a-z_][a-z0-9_]*\s*(=|TO)\s*[^;]*$")


def _statement_failed(stream: ObjectStream, statement: Statement, exc: psycopg.Error, scratch: str):
    where = f"the statement at line {statement.line} failed: {db.describe(exc, scratch)}; it begins: {statement.head()}"
    if not isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        # A corrupt object makes bad SQL; read the rest to tell a damaged backup from a real SQL error.
        try:
            stream.check_rest()
        except IntegrityError as bad:
            raise IntegrityError(log.scrub(f"{bad}; {where}")) from None
    raise DatabaseError(log.scrub(where)) from None


_COPY_TABLE = re.compile(r"(?is)^COPY\s+(.+?)\s*(?:\(|FROM\b)")


def _copy_table(sql: str) -> str:
    m = _COPY_TABLE.match(sql)
    return m.group(1) if m else ""
