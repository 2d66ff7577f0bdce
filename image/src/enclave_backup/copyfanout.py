"""One table's COPY rows spread over several connections, so the server parses and stores them on several cores.

One connection holds a restore to a single backend, which is the bottleneck of a restore
(the server's COPY costs several times what reading, checking and decompressing cost here).
Rows go whole to one connection each: text-format COPY ends every row with a newline and
escapes newlines inside values, so each connection runs a valid COPY of some of the rows.
Every loader first takes the session settings the script gave the main connection
(client_encoding above all: the rows are in the script's encoding).
"""

from __future__ import annotations

import queue
import threading

import psycopg

QUEUE_DEPTH = 4  # pieces of at most 1 MiB waiting per loader: memory stays bounded
_END = object()
_ABORT = object()

# Settings a script changes (SET, set_config) and that shape how COPY reads rows or whose rights
# it runs with; role and session_authorization are not listed in pg_settings. Names and values
# travel as UTF-8 bytes, converted by the server: psycopg hands SQL_ASCII text over as bytes.
_SESSION_STATE = """
SELECT pg_catalog.convert_to(name, 'UTF8'), pg_catalog.convert_to(setting, 'UTF8') FROM (
  SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session'
  UNION ALL SELECT 'session_authorization', pg_catalog.current_setting('session_authorization')
  UNION ALL SELECT 'role', pg_catalog.current_setting('role')) AS state
"""
_FIRST = (b"session_authorization", b"role")  # SET SESSION AUTHORIZATION resets role
_SET = ("SELECT pg_catalog.set_config(pg_catalog.convert_from(%s, 'UTF8'), "
        "pg_catalog.convert_from(%s, 'UTF8'), false)")
_RESET = ("SELECT pg_catalog.set_config(name, reset_val, false) FROM pg_catalog.pg_settings "
          "WHERE name = pg_catalog.convert_from(%s, 'UTF8')")


class _Aborted(Exception):
    pass


def session_state(conn: psycopg.Connection) -> dict[bytes, bytes]:
    return dict(conn.execute(_SESSION_STATE).fetchall())


class Loader:
    """A connection and the thread that runs one COPY at a time on it from a bounded queue."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self.state: dict[bytes, bytes] | None = None  # read on first use: CockroachDB's loaders never need it
        self.pieces: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def take_state(self, wanted: dict[bytes, bytes]) -> None:
        if self.state is None:
            self.state = session_state(self.conn)
        for name in [*_FIRST, *sorted((set(wanted) | set(self.state)) - set(_FIRST))]:
            if name not in wanted:
                self.conn.execute(_RESET, (name,))
            elif self.state.get(name) != wanted[name]:
                self.conn.execute(_SET, (name, wanted[name]))
        self.state = dict(wanted)

    def start(self, statement: bytes) -> None:
        self.error = None
        self.thread = threading.Thread(target=self._copy, args=(statement,), name="copy-loader", daemon=True)
        self.thread.start()

    def _copy(self, statement: bytes) -> None:
        ended = False
        try:
            with self.conn.cursor() as cur, cur.copy(statement) as copy:
                while (piece := self.pieces.get()) is not _END:
                    if piece is _ABORT:
                        ended = True
                        raise _Aborted  # leaving the block with an error sends CopyFail: nothing is stored
                    copy.write(piece)
                ended = True
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            self.error = exc
            while not ended:  # keep taking pieces so the reading thread never blocks on a dead loader
                ended = self.pieces.get() in (_END, _ABORT)

    def stop(self, how) -> BaseException | None:
        self.pieces.put(how)
        self.thread.join()
        self.thread = None
        return None if isinstance(self.error, _Aborted) else self.error


class FanOut:
    """Loaders opened on first use and kept for every COPY block of one restore."""

    def __init__(self, connect, jobs: int):
        self._connect, self._jobs = connect, jobs
        self.loaders: list[Loader] = []
        self.widest = 0  # most connections one COPY block used

    def start_loaders(self) -> list[Loader]:
        if not self.loaders:
            self.loaders = [Loader(self._connect()) for _ in range(self._jobs)]
        return self.loaders

    def copy(self, main: psycopg.Connection, statement: bytes, pieces) -> None:
        """Run COPY `statement` with the rows of `pieces` over the loaders."""
        self.start_loaders()
        wanted = session_state(main)
        for loader in self.loaders:
            loader.take_state(wanted)
        block = _Block(self.loaders, statement)
        try:
            block.feed(pieces)
        except BaseException:
            block.stop(_ABORT)
            raise
        self.widest = max(self.widest, len(block.started))
        error = block.stop(_END)
        if error is not None:
            raise error

    def close(self) -> None:
        for loader in self.loaders:
            loader.conn.close()
        self.loaders = []


class _Block:
    def __init__(self, loaders: list[Loader], statement: bytes):
        self.loaders, self.statement = loaders, statement
        self.started: list[Loader] = []
        self._turn = 0

    def _next(self) -> Loader:
        # The least busy loader, taking turns among equals, so a slow one never holds the rest up.
        n = len(self.loaders)
        order = [self.loaders[(self._turn + i) % n] for i in range(n)]
        self._turn = (self._turn + 1) % n
        return min(order, key=lambda loader: loader.pieces.qsize())

    def _send(self, loader: Loader, piece) -> None:
        if loader.error is not None:
            raise loader.error
        if loader not in self.started:
            loader.start(self.statement)
            self.started.append(loader)
        loader.pieces.put(piece)

    def feed(self, pieces) -> None:
        holder = None  # the loader that has the start of an unfinished row
        for piece in pieces:
            view = memoryview(piece)
            if holder is not None:  # the row's rest goes where its start went
                nl = piece.find(b"\n")
                if nl < 0:
                    self._send(holder, view)
                    continue
                self._send(holder, view[:nl + 1])
                view, holder = view[nl + 1:], None
                if not view:
                    continue
            holder = self._next()
            self._send(holder, view)
            if piece.endswith(b"\n"):
                holder = None
        if not self.started:  # no rows: the COPY still runs, as it would in the script
            self._send(self.loaders[0], b"")

    def stop(self, how) -> BaseException | None:
        errors = [loader.stop(how) for loader in self.started]
        return next((e for e in errors if e is not None), None)
