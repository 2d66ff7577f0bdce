"""Splits a SQL script, arriving as byte chunks, into statements and COPY FROM stdin blocks.

It follows psql's lexical rules closely enough to replay pg_dump and our own backups
without psql: quotes ('', E'', "", $tag$), nested comments, parentheses and
BEGIN ... END bodies of CREATE FUNCTION/PROCEDURE (semicolons inside do not end a
statement), COPY data up to the `\\.` line, and psql meta-commands. Only the current
statement is held in memory; COPY data passes through in pieces of at most one input
chunk (plus one partial line).

Work happens on bytes: in every server encoding (UTF-8, LATIN1, EUC_*, SQL_ASCII...) no
byte of a multi-byte character is ASCII, so quote and delimiter bytes are found safely;
statements stay bytes, in whatever encoding the script declares.
"""

from __future__ import annotations

import functools
import re
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator

from .errors import BackupError

# psql meta-commands that pg_dump 15.18+ writes around a plain dump (a 2025 security fix);
# they only guard psql itself, so replaying without psql may skip them.
SKIPPED_META = {b"restrict", b"unrestrict"}

_NORMAL = re.compile(rb"[A-Za-z_\x80-\xff]|['\";()\\$/-]")
_IDENT_REST = re.compile(rb"[A-Za-z0-9_$\x80-\xff]*")
_WS = re.compile(rb"[ \t\r\n\f\v]*")
_DOLLAR_TAG = re.compile(rb"\$(?:[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$")
_DOLLAR_PREFIX = re.compile(rb"\$(?:[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\Z")
_ESTRING = re.compile(rb"[\\']")
_BLOCK = re.compile(rb"/\*|\*/")
_COPY_END = b"\n\\."
_BACKSLASHES_ALONE = 32  # see _copy_end
_COPY_FROM_STDIN = re.compile(r"(?is)^COPY\b.*\bFROM\s+STDIN\b")

# One INSERT batch line exactly as our CockroachDB dump writes it (engines/cockroachdb/insertbatch.py):
# quoted names, each value NULL, decode('<hex>', 'hex') or a literal with a cast. Every quote it opens
# closes on the line, its parentheses pair up and its only semicolon ends it, so the general lexer
# would find the same statement, one Python step per literal slower.
_Q_IDENT = rb'"(?>[^"]|"")*+"'
_CAST = rb"(?>[A-Za-z0-9_. \[\]]|" + _Q_IDENT + rb"|\([A-Za-z0-9_, ]*\))++"
_VALUE = rb"(?>NULL|decode\('[0-9A-Fa-f]*', 'hex'\)|(?>'(?>[^']|'')*+'|e'(?>[^'\\]|\\.|'')*+')::" + _CAST + rb")"
_ROW = rb"\(" + _VALUE + rb"(?>, " + _VALUE + rb")*+\)"
_BATCH_LINE = (rb"INSERT INTO " + _Q_IDENT + rb"\." + _Q_IDENT + rb" \(" + _Q_IDENT + rb"(?>, " + _Q_IDENT
               + rb")*+\) VALUES " + _ROW + rb"(?>, " + _ROW + rb")*+;")


@functools.cache
def batch_line() -> re.Pattern:
    """_BATCH_LINE compiled on first use: it takes 16 ms, which only CockroachDB scripts repay."""
    return re.compile(_BATCH_LINE, re.S)


_BATCH_LINE_MAX = 4 << 20  # longer than any batch (1 MiB and one row): lexed as it arrives instead

NORMAL, SQUOTE, ESTRING, DQUOTE, DOLLAR, LINE_COMMENT, BLOCK_COMMENT, COPY_LINE, COPY = range(9)


class ScriptError(BackupError):
    """The script cannot be replayed (unsupported meta-command, unterminated quote or COPY)."""

    exit_code = 5


@dataclass(frozen=True)
class Statement:
    sql: str  # without the terminating semicolon; for messages and matching (undecodable bytes replaced)
    line: int  # 1-based line of its first character
    is_copy: bool = False  # COPY ... FROM stdin: data follows
    data: bytes = b""  # the statement's bytes as written, in the script's declared client_encoding

    def head(self, limit: int = 80) -> str:
        """The statement's first characters on one line, for error messages."""
        flat = " ".join(self.sql.split())
        return flat if len(flat) <= limit else flat[:limit] + "..."


@dataclass(frozen=True)
class CopyEnd:
    rows: int
    line: int


class Splitter:
    """Push parser: feed(bytes) and finish() return events in order.

    Events: Statement; bytes (COPY data for the preceding COPY statement); CopyEnd.
    """

    def __init__(self) -> None:
        self.buf = bytearray()
        self.pos = 0  # scan position in buf
        self.line = 1  # line number of buf[0]
        self.mode = NORMAL
        self.start: int | None = None  # buf offset of the current statement's first byte
        self.eof = False
        self.depth = 0  # nested /* */ comments
        self.tag = b""  # current dollar-quote delimiter
        self.parens = 0
        self.begins = 0  # BEGIN ... END nesting inside CREATE FUNCTION/PROCEDURE bodies
        self.words: list[bytes] = []  # first words of the statement, lower-cased
        self.copy_rows = 0
        self.copy_line_start = True  # COPY mode: is buf[pos] at the start of a data line
        self.events: list = []

    # -- public ---------------------------------------------------------------------------

    def feed(self, data: bytes) -> list:
        if data:
            self.buf += data
            self._run()
        return self._take()

    def finish(self) -> list:
        self.eof = True
        self._run()
        if self.mode in (COPY, COPY_LINE):
            raise ScriptError(f"the script ends inside the COPY data that starts at line {self.copy_start_line} "
                              "(no `\\.` end marker; truncated script?)")
        if self.mode in (SQUOTE, ESTRING, DQUOTE, DOLLAR, BLOCK_COMMENT) and self.start is not None:
            what = {SQUOTE: "a quoted string", ESTRING: "a quoted string", DQUOTE: "a quoted identifier",
                    DOLLAR: f"a dollar-quoted string ({self.tag.decode(errors='replace')})",
                    BLOCK_COMMENT: "a comment"}[self.mode]
            raise ScriptError(f"the script ends inside {what} in the statement starting at line "
                              f"{self._line_at(self.start)} (truncated script?)")
        if self.start is not None:
            # psql runs a last statement that lacks its semicolon; so do we.
            self._emit_statement(len(self.buf))
        return self._take()

    # -- internals ------------------------------------------------------------------------

    def _take(self) -> list:
        events, self.events = self.events, []
        if self.start is None and self.mode != COPY:
            self._trim(self.pos)
        return events

    def _line_at(self, offset: int) -> int:
        return self.line + self.buf.count(b"\n", 0, offset)

    def _trim(self, upto: int, lines: int | None = None) -> None:
        if upto <= 0:
            return
        self.line += self.buf.count(b"\n", 0, upto) if lines is None else lines
        if upto == len(self.buf):
            self.buf = bytearray()  # the old one may have been handed on as COPY data
        else:
            del self.buf[:upto]
        self.pos -= upto
        if self.start is not None:
            self.start -= upto

    def _more(self, needed_end: int) -> bool:
        """True if a decision needs bytes up to needed_end that have not arrived yet."""
        return needed_end > len(self.buf) and not self.eof

    def _run(self) -> None:
        step = {NORMAL: self._normal, SQUOTE: self._squote, ESTRING: self._estring, DQUOTE: self._dquote,
                DOLLAR: self._dollar, LINE_COMMENT: self._line_comment, BLOCK_COMMENT: self._block_comment,
                COPY_LINE: self._copy_line, COPY: self._copy}
        while step[self.mode]():
            pass

    def _normal(self) -> bool:
        buf = self.buf
        if self.start is None:
            self.pos = _WS.match(buf, self.pos).end()
            if self.pos >= len(buf):
                return False
            c = buf[self.pos]
            if c in b"-/" and self._more(self.pos + 2):
                return False
            if buf[self.pos:self.pos + 2] not in (b"--", b"/*") and c != 0x5C:  # backslash
                self.start = self.pos
        if self.pos == self.start and buf.startswith(b"INSERT INTO ", self.pos):
            batch = self._batch_line()
            if batch is not None:
                return batch
        m = _NORMAL.search(buf, self.pos)
        if m is None:
            self.pos = len(buf)
            return False
        p = m.start()
        c = buf[p]
        if c == 0x27:  # '
            self.mode, self.pos = SQUOTE, p + 1
        elif c == 0x22:  # "
            self.mode, self.pos = DQUOTE, p + 1
        elif c == 0x3B:  # ;
            if self.parens or self.begins:
                self.pos = p + 1
            else:
                self._emit_statement(p)
        elif c == 0x28:  # (
            self.parens += 1
            self.pos = p + 1
        elif c == 0x29:  # )
            self.parens = max(0, self.parens - 1)
            self.pos = p + 1
        elif c == 0x5C:  # backslash: a psql meta-command
            return self._meta(p)
        elif c == 0x24:  # $
            tag = _DOLLAR_TAG.match(buf, p)
            if tag:
                self.mode, self.tag, self.pos = DOLLAR, tag.group(), tag.end()
            elif _DOLLAR_PREFIX.match(buf, p) and not self.eof:
                self.pos = p
                return False
            else:
                self.pos = p + 1  # a parameter such as $1, or a lone dollar
        elif c in b"-/":
            if self._more(p + 2):
                self.pos = p
                return False
            pair = buf[p:p + 2]
            if pair == b"--":
                self.mode, self.pos = LINE_COMMENT, p + 2
            elif pair == b"/*":
                self.mode, self.depth, self.pos = BLOCK_COMMENT, 1, p + 2
            else:
                self.pos = p + 1
        else:  # a word: identifier or keyword
            end = _IDENT_REST.match(buf, p + 1).end()
            if self._more(end + 1):
                self.pos = p
                return False
            word = bytes(buf[p:end])
            if word in (b"E", b"e") and buf[end:end + 1] == b"'":
                self.mode, self.pos = ESTRING, end + 1
            else:
                self._word(word.lower())
                self.pos = end
        return True

    def _batch_line(self) -> bool | None:
        """An INSERT batch of our CockroachDB dump, whole on its line: emitted in one match. None: the
        statement is of another form (or too long a line), for the general lexer."""
        nl = self.buf.find(b"\n", self.pos)
        if nl < 0:
            if not self.eof and len(self.buf) - self.pos <= _BATCH_LINE_MAX:
                return False  # the rest of the line is still to come
            return None
        if not batch_line().fullmatch(self.buf, self.pos, nl):
            return None
        self._emit_statement(nl - 1)
        return True

    def _word(self, word: bytes) -> None:
        # psql's heuristic: inside CREATE [OR REPLACE] FUNCTION|PROCEDURE, outside parentheses,
        # BEGIN ... END (and CASE ... END within it) nest, and semicolons there do not end the statement.
        if len(self.words) < 4:
            self.words.append(word)
        w = self.words
        routine = len(w) >= 2 and w[0] == b"create" and (
            w[1] in (b"function", b"procedure")
            or (len(w) >= 4 and w[1:3] == [b"or", b"replace"] and w[3] in (b"function", b"procedure")))
        if not routine or self.parens:
            return
        if word == b"begin":
            self.begins += 1
        elif word == b"case" and self.begins:
            self.begins += 1
        elif word == b"end" and self.begins:
            self.begins -= 1

    def _meta(self, p: int) -> bool:
        nl = self.buf.find(b"\n", p)
        if nl < 0 and not self.eof:
            self.pos = p
            return False
        end = len(self.buf) if nl < 0 else nl
        line = self._line_at(p)
        command = bytes(self.buf[p + 1:end]).split(None, 1)
        name = command[0] if command else b""
        if self.start is not None:
            raise ScriptError(f"line {line}: psql meta-command \\{name.decode(errors='replace')} inside the "
                              f"statement starting at line {self._line_at(self.start)}; only plain SQL can be replayed")
        if name not in SKIPPED_META:
            raise ScriptError(f"line {line}: psql meta-command \\{name.decode(errors='replace')} is not supported: "
                              "the restore replays SQL into one database (only \\restrict and \\unrestrict are "
                              "skipped)")
        self.pos = end + 1 if nl >= 0 else end
        return True

    def _emit_statement(self, end: int) -> None:
        raw = bytes(self.buf[self.start:end]).rstrip()
        line = self._line_at(self.start)
        if not raw:  # a lone semicolon: psql sends nothing either
            self._reset_after(end)
            return
        # Bytes go to the server as they are: the script's `SET client_encoding` says how to read them.
        sql = raw.decode("utf-8", errors="replace")
        is_copy = bool(_COPY_FROM_STDIN.match(sql))
        self.events.append(Statement(sql, line, is_copy, raw))
        self._reset_after(end)
        if is_copy:
            self.copy_start_line = line
            self.mode = COPY_LINE

    def _reset_after(self, end: int) -> None:
        self.pos = min(end + 1, len(self.buf))
        self.start = None
        self.parens = self.begins = 0
        self.words = []
        self._trim(self.pos)

    def _copy_line(self) -> bool:
        # COPY data starts on the line after the statement; only blanks may follow the semicolon.
        nl = self.buf.find(b"\n", self.pos)
        if nl < 0 and not self.eof:
            return False
        end = len(self.buf) if nl < 0 else nl
        if self.buf[self.pos:end].strip():
            raise ScriptError(f"line {self._line_at(self.pos)}: text after `COPY ... FROM stdin;` on the same "
                              "line; COPY data must start on the next line")
        self._trim(end + 1 if nl >= 0 else end)
        self.pos = 0
        self.mode = COPY
        self.copy_rows = 0
        self.copy_line_start = True
        return True

    def _copy(self) -> bool:
        buf = self.buf
        # The end marker is a line holding only `\.`; a data line can never be that,
        # because text-format COPY writes a backslash in a value as `\\`.
        if self.copy_line_start and buf:
            head = bytes(buf[:4])
            for marker in (b"\\.\n", b"\\.\r\n"):
                if head.startswith(marker):
                    return self._copy_done(0, len(marker))
            if self.eof and head in (b"\\.", b"\\.\r"):
                return self._copy_done(0, len(head))
        end = _copy_end(buf)
        if end:
            return self._copy_done(*end)
        # Pass on whole lines; keep a short last partial line, which may be a split end marker.
        nl = buf.rfind(b"\n")
        tail = len(buf) - nl - 1
        if tail >= 4 or (nl < 0 and not self.copy_line_start):
            cut = len(buf)
        else:
            cut = nl + 1
        if cut == 0:
            return False
        self._pass_copy(cut)
        return True

    def _pass_copy(self, cut: int) -> None:
        # The whole buffer is handed on as it is, without a copy (the common case: one input chunk).
        data = self.buf if cut == len(self.buf) else self.buf[:cut]
        rows = data.count(b"\n")
        self.copy_rows += rows
        self.copy_line_start = data.endswith(b"\n")
        self.events.append(data)
        self._trim(cut, rows)

    def _copy_done(self, data_end: int, marker_len: int) -> bool:
        if data_end:
            self._pass_copy(data_end)
        self.events.append(CopyEnd(self.copy_rows, self.line))
        self._trim(marker_len)
        self.pos = 0
        self.mode = NORMAL
        return True

    def _squote(self) -> bool:
        return self._quoted(0x27, self.buf.find(b"'", self.pos))

    def _dquote(self) -> bool:
        return self._quoted(0x22, self.buf.find(b'"', self.pos))

    def _quoted(self, quote: int, q: int) -> bool:
        if q < 0:
            self.pos = len(self.buf)
            return False
        if self._more(q + 2):
            self.pos = q
            return False
        if q + 1 < len(self.buf) and self.buf[q + 1] == quote:
            self.pos = q + 2  # doubled quote: still inside
        else:
            self.mode, self.pos = NORMAL, q + 1
        return True

    def _estring(self) -> bool:
        m = _ESTRING.search(self.buf, self.pos)
        if m is None:
            self.pos = len(self.buf)
            return False
        if m.group() == b"\\":
            if self._more(m.start() + 2):
                self.pos = m.start()
                return False
            self.pos = m.start() + 2
            return True
        return self._quoted(0x27, m.start())

    def _dollar(self) -> bool:
        q = self.buf.find(self.tag, self.pos)
        if q < 0:
            self.pos = max(self.pos, len(self.buf) - len(self.tag) + 1)
            return False
        self.mode, self.pos = NORMAL, q + len(self.tag)
        return True

    def _line_comment(self) -> bool:
        nl = self.buf.find(b"\n", self.pos)
        if nl < 0:
            self.pos = len(self.buf)
            return False
        self.mode, self.pos = NORMAL, nl + 1
        return True

    def _block_comment(self) -> bool:
        m = _BLOCK.search(self.buf, self.pos)
        if m is None:
            self.pos = max(self.pos, len(self.buf) - 1)
            return False
        self.depth += 1 if m.group() == b"/*" else -1
        self.pos = m.end()
        if self.depth == 0:
            self.mode = NORMAL
        return True


def _copy_end(buf: bytearray) -> tuple[int, int] | None:
    """(end of the data, length of the marker) of the first `\\.` line after a newline in buf.

    The marker begins with a backslash, rare in most rows, and a one-byte find() is memchr, ten
    times faster than a search for the whole marker; rows full of escapes (`\\N`, `\\t`) switch to
    that search after _BACKSLASHES_ALONE misses, so they never cost a Python step per backslash.
    """
    at = buf.find(b"\\")
    for _ in range(_BACKSLASHES_ALONE):
        if at < 0:
            return None
        if at and buf[at - 1] == 0x0A and (found := _marker_at(buf, at)):
            return found
        at = buf.find(b"\\", at + 1)
    if at < 0:
        return None
    at = buf.find(_COPY_END, at - 1)
    while at >= 0:
        if found := _marker_at(buf, at + 1):
            return found
        at = buf.find(_COPY_END, at + len(_COPY_END))
    return None


def _marker_at(buf: bytearray, at: int) -> tuple[int, int] | None:
    """The marker's (start, length) if the backslash at `at` begins a whole `\\.` line."""
    if buf[at + 1:at + 3] == b".\n":
        return at, 3
    if buf[at + 1:at + 4] == b".\r\n":
        return at, 4
    return None


class CopyBlock:
    """A COPY ... FROM stdin statement and its data, read lazily: iterate for byte pieces."""

    def __init__(self, statement: Statement, events: "_Events"):
        self.statement = statement
        self.rows = 0
        self._events = events
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        while not self._done:
            event = self._events.next()
            if isinstance(event, CopyEnd):
                self.rows = event.rows
                self._done = True
            elif isinstance(event, (bytes, bytearray)):
                yield event
            else:  # the splitter always closes a COPY block before anything else
                raise AssertionError(f"unexpected {event!r} inside COPY data")

    @property
    def rows_so_far(self) -> int:
        """Rows passed on so far, for progress while a big table streams."""
        return self.rows if self._done else self._events.splitter.copy_rows

    def drain(self) -> None:
        for _ in self:
            pass


class _Events:
    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self.splitter = Splitter()
        self._queue: deque = deque()
        self._finished = False

    def next(self):
        while not self._queue:
            if self._finished:
                return None
            chunk = next(self._chunks, None)
            if chunk is None:
                self._finished = True
                self._queue.extend(self.splitter.finish())
            else:
                self._queue.extend(self.splitter.feed(chunk))
        return self._queue.popleft()


def split(chunks: Iterable[bytes]) -> Iterator[Statement | CopyBlock]:
    """Statements and COPY blocks of the script; a CopyBlock must be consumed before the next item."""
    events = _Events(chunks)
    while (event := events.next()) is not None:
        if isinstance(event, Statement) and event.is_copy:
            block = CopyBlock(event, events)
            yield block
            block.drain()
        elif isinstance(event, Statement):
            yield event
        else:
            raise AssertionError(f"unexpected {event!r} outside COPY data")
