"""A recorded-answer server on loopback that speaks the PostgreSQL wire protocol (3.0) as
CockroachDB does, for tests of code that must talk to a CockroachDB no machine here can run.

Clients (psycopg, libpq) connect to it as to a real server: TLS and GSS encryption are declined
('N'), every login is trusted, and the session announces CockroachDB's parameters (`crdb_version`
among them). Both the simple query protocol and the extended one (Parse/Bind/Describe/Execute/
Sync/Close/Flush) are served. Nothing is executed: each statement is recorded with its
parameters and answered by the first rule whose pattern matches its text:

    server = WireServer([
        (re.compile(r"^SELECT version\\(\\)$"), Rows([("version", TEXT)], [(CRDB_VERSION,)])),
        (re.compile(r"crdb_internal\\.jobs"), lambda sql, params: Rows(...)),  # stateful answers
        (re.compile(r"^BACKUP "), Fail("XXC02", "use of BACKUP with revision_history requires ...")),
    ]).start()

A pattern is a compiled regex (searched in the SQL text, `$1`-style placeholders as the client
sent them), a string (the whole statement, surrounding blanks ignored) or a callable
(sql, params) -> bool. An answer is Rows, Done (a command without rows), Fail (an ErrorResponse)
or a callable (sql, params) returning one of those. A statement no rule matches fails with
SQLSTATE XX000 "no recorded answer for: <sql>", so tests notice when the statements drift;
only what client libraries send on their own (transaction control, SET, SAVEPOINT, DEALLOCATE,
SHOW transaction_isolation) has a built-in answer, and a rule may override it.
"""

from __future__ import annotations

import re
import socket
import socketserver
import struct
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Iterable, NamedTuple

__all__ = ["WireServer", "Session", "Statement", "Rows", "Done", "Fail", "CRDB_VERSION", "command_tag",
           "BOOL", "BYTEA", "INT2", "INT4", "INT8", "OID", "TEXT", "VARCHAR", "FLOAT4", "FLOAT8", "DATE",
           "TIMESTAMP", "TIMESTAMPTZ", "NUMERIC", "JSONB"]

CRDB_VERSION = "CockroachDB CCL v24.1.3 (x86_64-pc-linux-gnu, built 2024/07/31 00:00:00, go1.22.5)"

# Type OIDs (pg_type), as CockroachDB reports them in RowDescription.
BOOL, BYTEA, INT8, INT2, INT4, TEXT, OID = 16, 17, 20, 21, 23, 25, 26
FLOAT4, FLOAT8, VARCHAR, DATE, TIMESTAMP, TIMESTAMPTZ, NUMERIC, JSONB = 700, 701, 1043, 1082, 1114, 1184, 1700, 3802
_TYPLEN = {BOOL: 1, INT2: 2, INT4: 4, INT8: 8, OID: 4, FLOAT4: 4, FLOAT8: 8, DATE: 4, TIMESTAMP: 8, TIMESTAMPTZ: 8}
_ARRAYS = {1000, 1001, 1005, 1007, 1009, 1015, 1016, 1021, 1022, 1028, 1231}  # bool[] .. numeric[]


@dataclass
class Rows:
    """A result set: columns as (name, type OID); values are sent as text (None is NULL)."""
    columns: list[tuple[str, int]]
    rows: list[tuple] = field(default_factory=list)
    tag: str | None = None  # "SELECT <number of rows>" unless given


@dataclass
class Done:
    """A command without rows; its tag is derived from the statement's first words unless given."""
    tag: str | None = None


@dataclass
class Fail:
    """An ErrorResponse with this SQLSTATE and message."""
    sqlstate: str
    message: str
    detail: str = ""
    hint: str = ""
    severity: str = "ERROR"


class Statement(NamedTuple):
    sql: str
    params: tuple | None  # decoded Bind parameters; None for the simple query protocol
    session: int  # which connection (its number, from 1) sent it


Answer = Rows | Done | Fail
Rule = tuple[Any, Any]


# --- what client libraries send themselves -------------------------------------------------

_BUILTINS: list[Rule] = [
    (re.compile(r"(?is)^\s*(BEGIN|START\s+TRANSACTION)\b"), Done("BEGIN")),
    (re.compile(r"(?is)^\s*(COMMIT|END)\b"), Done("COMMIT")),
    (re.compile(r"(?is)^\s*ROLLBACK\s+TO\b"), Done("ROLLBACK")),
    (re.compile(r"(?is)^\s*(ROLLBACK|ABORT)\b"), Done("ROLLBACK")),
    (re.compile(r"(?is)^\s*SAVEPOINT\b"), Done("SAVEPOINT")),
    (re.compile(r"(?is)^\s*RELEASE\b"), Done("RELEASE")),
    (re.compile(r"(?is)^\s*SET\b"), Done("SET")),
    (re.compile(r"(?is)^\s*DEALLOCATE\s+ALL\s*$"), Done("DEALLOCATE ALL")),
    (re.compile(r"(?is)^\s*DEALLOCATE\b"), Done("DEALLOCATE")),
    (re.compile(r"(?is)^\s*SHOW\s+transaction_isolation\s*$"),
     Rows([("transaction_isolation", TEXT)], [("serializable",)], "SHOW 1")),
    (re.compile(r"(?is)^\s*SHOW\s+TRANSACTION\s+ISOLATION\s+LEVEL\s*$"),
     Rows([("transaction_isolation", TEXT)], [("serializable",)], "SHOW 1")),
]

_OBJECTS = ("EXTERNAL CONNECTION", "MATERIALIZED VIEW", "TABLE", "DATABASE", "SCHEMA", "VIEW", "INDEX",
            "SEQUENCE", "TYPE", "FUNCTION", "PROCEDURE", "TRIGGER", "ROLE", "USER", "EXTENSION", "SCHEDULE")


def command_tag(sql: str) -> str:
    """The tag PostgreSQL and CockroachDB give a command without rows: `CREATE TABLE`, `SET`, `INSERT 0 0`."""
    words = sql.split()
    verb = words[0].upper() if words else ""
    if verb in ("CREATE", "DROP", "ALTER"):
        rest = " ".join(w.upper() for w in words[1:4])
        rest = re.sub(r"^(OR REPLACE |UNIQUE |TEMP |TEMPORARY )", "", rest)
        for name in _OBJECTS:
            if rest == name or rest.startswith(name + " "):
                return f"{verb} {name}"
        return verb
    return {"INSERT": "INSERT 0 0", "UPDATE": "UPDATE 0", "DELETE": "DELETE 0"}.get(verb, verb)


# --- values -----------------------------------------------------------------------------

def text_value(value: Any) -> bytes | None:
    """A Python value as the text format sends it."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ").encode()
    if isinstance(value, (date, time)):
        return value.isoformat().encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b"\\x" + bytes(value).hex().encode()
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()


def _numeric(data: bytes) -> Decimal:
    ndigits, weight, sign, dscale = struct.unpack("!hhHH", data[:8])
    if sign == 0xC000:
        return Decimal("NaN")
    digits = struct.unpack(f"!{ndigits}h", data[8:8 + 2 * ndigits])
    whole = int("".join(f"{d:04d}" for d in digits) or "0")  # times 10 ** shift
    shift = 4 * (weight - ndigits + 1) + dscale
    scaled = whole * 10 ** shift if shift >= 0 else whole // 10 ** -shift
    return Decimal((1 if sign == 0x4000 else 0, tuple(map(int, str(scaled))), -dscale))  # exact, any size


def binary_param(oid: int, data: bytes) -> Any:
    """A Bind parameter sent in binary: the types psycopg dumps that way; other types stay bytes."""
    if oid == INT2:
        return struct.unpack("!h", data)[0]
    if oid == INT4:
        return struct.unpack("!i", data)[0]
    if oid == INT8:
        return struct.unpack("!q", data)[0]
    if oid == OID:
        return struct.unpack("!I", data)[0]
    if oid == BOOL:
        return data != b"\x00"
    if oid == FLOAT4:
        return struct.unpack("!f", data)[0]
    if oid == FLOAT8:
        return struct.unpack("!d", data)[0]
    if oid == NUMERIC:
        return _numeric(data)
    if oid in (TEXT, VARCHAR, 19, 1042, 0):
        return data.decode()
    if oid in _ARRAYS:
        ndim, _flags, elem = struct.unpack("!iiI", data[:12])
        if ndim == 0:
            return []
        count = struct.unpack("!i", data[12:16])[0]
        pos, items = 12 + 8 * ndim, []
        for _ in range(count):
            size = struct.unpack("!i", data[pos:pos + 4])[0]
            pos += 4
            items.append(None if size < 0 else binary_param(elem, data[pos:pos + size]))
            pos += max(size, 0)
        return items
    return bytes(data)


def split_statements(sql: str) -> list[str]:
    """A simple Query's text split at `;` outside quotes and comments; empty statements dropped."""
    parts, start, i, n = [], 0, 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"":
            end = i + 1
            while end < n:
                if sql[end] == ch and sql[end + 1:end + 2] == ch:
                    end += 2
                elif sql[end] == ch:
                    break
                else:
                    end += 1
            i = end
        elif sql.startswith("--", i):
            i = sql.find("\n", i) if "\n" in sql[i:] else n
        elif ch == ";":
            parts.append(sql[start:i])
            start = i + 1
        i += 1
    parts.append(sql[start:])
    return [p.strip() for p in parts if p.strip()]


# --- one connection ----------------------------------------------------------------------

class _Closed(Exception):
    pass


class Session:
    """One client connection: its startup parameters, statements and transaction status."""

    def __init__(self, server: "WireServer", sock: socket.socket, number: int):
        self.server, self.sock, self.number = server, sock, number
        self.startup: dict[str, str] = {}
        self.statements: list[Statement] = []
        self.status = "I"  # ReadyForQuery: I idle, T in a transaction, E in a failed one
        self._out = bytearray()
        self._prepared: dict[str, tuple[str, list[int]]] = {}
        self._portals: dict[str, dict] = {}
        self._skipping = False  # after an error in the extended protocol, until Sync

    # I/O
    def _read(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise _Closed()
            data += chunk
        return bytes(data)

    def _send(self, kind: bytes, payload: bytes = b"") -> None:
        self._out += kind + struct.pack("!i", len(payload) + 4) + payload

    def _flush(self) -> None:
        if self._out:
            self.sock.sendall(bytes(self._out))
            self._out.clear()

    # startup
    def _start(self) -> bool:
        while True:
            length, code = struct.unpack("!ii", self._read(8))
            body = self._read(length - 8)
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest
                self.sock.sendall(b"N")
                continue
            if code == 80877102:  # CancelRequest: nothing runs long enough to cancel
                return False
            major, minor = code >> 16, code & 0xFFFF
            if major != 3:
                self._error(Fail("08P01", f"unsupported frontend protocol {major}.{minor}", severity="FATAL"))
                self._flush()
                return False
            items = body.split(b"\x00")
            self.startup = {items[i].decode(): items[i + 1].decode() for i in range(0, len(items) - 1, 2)
                            if items[i]}
            if minor != 0:  # newest minor we serve, and the protocol options we do not know
                unknown = [k for k in self.startup if k.startswith("_pq_.")]
                self._send(b"v", struct.pack("!ii", 0, len(unknown)) + b"".join(k.encode() + b"\x00" for k in unknown))
            break
        self._send(b"R", struct.pack("!i", 0))  # AuthenticationOk: trust
        params = {**self.server.parameters, "application_name": self.startup.get("application_name", "")}
        for name, value in params.items():
            self._send(b"S", name.encode() + b"\x00" + value.encode() + b"\x00")
        self._send(b"K", struct.pack("!ii", 1000 + self.number, 0x5EC2E7 + self.number))
        self._ready()
        return True

    def _ready(self) -> None:
        self._send(b"Z", self.status.encode())
        self._flush()

    def serve(self) -> None:
        if not self._start():
            return
        while True:
            kind = self._read(1)
            length = struct.unpack("!i", self._read(4))[0]
            body = self._read(length - 4)
            if kind == b"X":
                return
            handler = self._HANDLERS.get(kind)
            if handler is None:
                self._error(Fail("08P01", f"unsupported message type {kind!r}", severity="FATAL"))
                self._flush()
                return
            if self._skipping and kind != b"S":
                continue
            handler(self, body)

    # answering
    def _answer(self, sql: str, params: tuple | None) -> Answer:
        record = Statement(sql, params, self.number)
        self.statements.append(record)
        self.server._record(record)
        upper = sql.lstrip().upper()
        ends = re.match(r"(COMMIT|END|ROLLBACK|ABORT)\b", upper) and not re.match(r"ROLLBACK\s+TO\b", upper)
        if self.status == "E" and not ends and not re.match(r"ROLLBACK\s+TO\b", upper):
            return Fail("25P02", "current transaction is aborted, commands ignored until end of transaction block")
        answer = self.server.answer(sql, params)
        if ends:
            if self.status == "E" and re.match(r"(COMMIT|END)\b", upper) and isinstance(answer, Done):
                answer = Done("ROLLBACK")
            self.status = "I"
        elif isinstance(answer, Fail):
            if self.status == "T":
                self.status = "E"
        elif re.match(r"(BEGIN|START\s+TRANSACTION)\b", upper):
            self.status = "T"
        elif re.match(r"ROLLBACK\s+TO\b", upper) and self.status == "E":
            self.status = "T"
        return answer

    def _error(self, fail: Fail) -> None:
        fields = [(b"S", fail.severity), (b"V", fail.severity), (b"C", fail.sqlstate), (b"M", fail.message)]
        fields += [(b"D", fail.detail)] if fail.detail else []
        fields += [(b"H", fail.hint)] if fail.hint else []
        self._send(b"E", b"".join(k + v.encode() + b"\x00" for k, v in fields) + b"\x00")

    def _row_description(self, rows: Rows) -> None:
        payload = struct.pack("!h", len(rows.columns))
        for name, oid in rows.columns:
            payload += name.encode() + b"\x00" + struct.pack("!ihihih", 0, 0, oid, _TYPLEN.get(oid, -1), -1, 0)
        self._send(b"T", payload)

    def _data(self, rows: Rows) -> None:
        for row in rows.rows:
            payload = struct.pack("!h", len(row))
            for value in row:
                data = text_value(value)
                payload += struct.pack("!i", -1) if data is None else struct.pack("!i", len(data)) + data
            self._send(b"D", payload)
        self._send(b"C", (rows.tag or f"SELECT {len(rows.rows)}").encode() + b"\x00")

    def _complete(self, sql: str, answer: Answer) -> None:
        if isinstance(answer, Done):
            self._send(b"C", (answer.tag or command_tag(sql)).encode() + b"\x00")
        else:
            self._data(answer)

    # simple query protocol
    def _query(self, body: bytes) -> None:
        self._skipping = False
        statements = split_statements(body[:-1].decode())
        if not statements:
            self._send(b"I")
        for sql in statements:
            answer = self._answer(sql, None)
            if isinstance(answer, Fail):
                self._error(answer)
                break
            if isinstance(answer, Rows):
                self._row_description(answer)
            self._complete(sql, answer)
        self._ready()

    # extended query protocol
    def _parse(self, body: bytes) -> None:
        name, rest = body.split(b"\x00", 1)
        sql, rest = rest.split(b"\x00", 1)
        count = struct.unpack("!h", rest[:2])[0]
        oids = list(struct.unpack(f"!{count}I", rest[2:2 + 4 * count]))
        self._prepared[name.decode()] = (sql.decode(), oids)
        self._send(b"1")

    def _bind(self, body: bytes) -> None:
        portal, rest = body.split(b"\x00", 1)
        statement, rest = rest.split(b"\x00", 1)
        if statement.decode() not in self._prepared:
            return self._fail_extended(Fail("26000", f'prepared statement "{statement.decode()}" does not exist'))
        sql, oids = self._prepared[statement.decode()]
        nformats = struct.unpack("!h", rest[:2])[0]
        formats = struct.unpack(f"!{nformats}h", rest[2:2 + 2 * nformats])
        pos = 2 + 2 * nformats
        nparams = struct.unpack("!h", rest[pos:pos + 2])[0]
        pos += 2
        params = []
        for i in range(nparams):
            size = struct.unpack("!i", rest[pos:pos + 4])[0]
            pos += 4
            data = rest[pos:pos + max(size, 0)]
            pos += max(size, 0)
            fmt = formats[i] if nformats > 1 else (formats[0] if nformats else 0)
            oid = oids[i] if i < len(oids) else 0
            params.append(None if size < 0 else binary_param(oid, data) if fmt == 1 else data.decode())
        self._portals[portal.decode()] = {"sql": sql, "params": tuple(params), "answer": None}
        self._send(b"2")

    def _portal_answer(self, name: str) -> Answer | None:
        portal = self._portals.get(name)
        if portal is None:
            self._fail_extended(Fail("34000", f'portal "{name}" does not exist'))
            return None
        if portal["answer"] is None:
            portal["answer"] = self._answer(portal["sql"], portal["params"])
        if isinstance(portal["answer"], Fail):
            self._fail_extended(portal["answer"])
            return None
        return portal["answer"]

    def _describe(self, body: bytes) -> None:
        kind, name = body[:1], body[1:-1].decode()
        if kind == b"S":
            if name not in self._prepared:
                return self._fail_extended(Fail("26000", f'prepared statement "{name}" does not exist'))
            sql, oids = self._prepared[name]
            self._send(b"t", struct.pack("!h", len(oids)) + b"".join(struct.pack("!I", o or TEXT) for o in oids))
            # Only a fixed answer is known before execution; a callable one is left for Execute.
            answer = self.server.fixed_answer(sql)
            if isinstance(answer, Rows):
                self._row_description(answer)
            else:
                self._send(b"n")
            return
        answer = self._portal_answer(name)
        if answer is None:
            return
        if isinstance(answer, Rows):
            self._row_description(answer)
        else:
            self._send(b"n")

    def _execute(self, body: bytes) -> None:
        name = body.split(b"\x00", 1)[0].decode()
        answer = self._portal_answer(name)
        if answer is not None:
            self._complete(self._portals[name]["sql"], answer)

    def _close(self, body: bytes) -> None:
        (self._prepared if body[:1] == b"S" else self._portals).pop(body[1:-1].decode(), None)
        self._send(b"3")

    def _sync(self, _body: bytes) -> None:
        self._skipping = False
        self._portals.pop("", None)
        self._ready()

    def _flush_message(self, _body: bytes) -> None:
        self._flush()

    def _fail_extended(self, fail: Fail) -> None:
        self._error(fail)
        self._skipping = True
        if self.status == "T":
            self.status = "E"

    _HANDLERS = {b"Q": _query, b"P": _parse, b"B": _bind, b"D": _describe, b"E": _execute, b"C": _close,
                 b"S": _sync, b"H": _flush_message}


# --- the server ---------------------------------------------------------------------------

class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        session = self.server.owner._open(self.request)
        try:
            session.serve()
        except (_Closed, OSError):
            pass
        finally:
            self.server.owner._closed(session)


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class WireServer:
    """The recorded-answer server; `rules` are tried in order, before the built-in answers."""

    def __init__(self, rules: Iterable[Rule] = (), *, crdb_version: str = CRDB_VERSION, strict: bool = True,
                 host: str = "127.0.0.1"):
        self.rules: list[Rule] = list(rules)
        self.crdb_version = crdb_version
        self.strict = strict  # False: a statement no rule matches completes with its command tag
        self.host, self.port = host, 0
        self.statements: list[Statement] = []
        self.sessions: list[Session] = []
        self.parameters = {
            "server_version": "13.0.0", "crdb_version": crdb_version, "server_encoding": "UTF8",
            "client_encoding": "UTF8", "DateStyle": "ISO, MDY", "IntervalStyle": "postgres", "TimeZone": "UTC",
            "integer_datetimes": "on", "standard_conforming_strings": "on", "is_superuser": "on",
        }
        self._lock = threading.Lock()
        self._live: set[Session] = set()
        self._server: _TCPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "WireServer":
        self._server = _TCPServer((self.host, 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="wireserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.kill_connections()

    def __enter__(self) -> "WireServer":
        return self.start() if self._server is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    def env(self, database: str = "malbork", user: str = "root") -> dict[str, str]:
        """libpq variables a client needs to reach this server."""
        return {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": user, "PGDATABASE": database,
                "PGSSLMODE": "disable"}

    def kill_connections(self) -> None:
        """Close every client's socket, as a server restart or a killed session would."""
        with self._lock:
            live = list(self._live)
        for session in live:
            try:
                session.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            session.sock.close()

    def matching(self, pattern: Any) -> list[Statement]:
        """The recorded statements a pattern (as in a rule) matches, in order."""
        with self._lock:
            return [s for s in self.statements if self._matches(pattern, s.sql, s.params)]

    # used by the sessions
    @staticmethod
    def _matches(pattern: Any, sql: str, params: tuple | None) -> bool:
        if isinstance(pattern, re.Pattern):
            return pattern.search(sql) is not None
        if isinstance(pattern, str):
            return pattern.strip() == sql.strip()
        return bool(pattern(sql, params))

    def fixed_answer(self, sql: str) -> Answer | None:
        """The answer a statement gets before its parameters are known, unless a callable gives it."""
        for pattern, answer in [*self.rules, *_BUILTINS]:
            try:
                if self._matches(pattern, sql, None):
                    return None if callable(answer) else answer
            except Exception:
                return None
        return None

    def answer(self, sql: str, params: tuple | None) -> Answer:
        for pattern, answer in [*self.rules, *_BUILTINS]:
            if self._matches(pattern, sql, params):
                if not callable(answer):
                    return answer
                try:
                    return answer(sql, params)
                except Exception as exc:  # a broken fixture fails its statement, not the connection
                    return Fail("XX000", f"the recorded answer for {sql!r} raised {exc!r}")
        if not self.strict and not re.match(r"(?is)\s*(SELECT|SHOW|WITH|VALUES|TABLE)\b", sql):
            return Done()
        return Fail("XX000", f"no recorded answer for: {sql}")

    def _record(self, statement: Statement) -> None:
        with self._lock:
            self.statements.append(statement)

    def _open(self, sock: socket.socket) -> Session:
        with self._lock:
            session = Session(self, sock, len(self.sessions) + 1)
            self.sessions.append(session)
            self._live.add(session)
        return session

    def _closed(self, session: Session) -> None:
        with self._lock:
            self._live.discard(session)
