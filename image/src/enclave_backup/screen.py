"""Refuses, before it runs, any statement of a backup's script that a dump never writes and that
reaches outside the database: programs, server files, libraries, the server's configuration.

Replay runs as a superuser (extensions, C functions and owners need one), so the script is
screened instead of the role being lowered; docs/security.md ("What replay allows") says what
this stops and what only the signature can. The rules follow what pg_dump and our CockroachDB
dump write; they look at tokens, never inside string literals, so no row value can trip them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import IntegrityError
from .sqlscript import Statement

# First words of the statements pg_dump (plain format, any supported version) and our
# CockroachDB dump write. DO, CALL, LOAD, EXECUTE, VACUUM, COPY ... TO, BACKUP, EXPORT and the
# like are never among them.
ALLOWED_FIRST = {"set", "reset", "select", "create", "alter", "comment", "grant", "revoke", "copy", "insert",
                 "security", "refresh", "drop", "begin", "commit", "start", "truncate"}

# Built-in functions that read or write the server's files or act on the server and its other
# sessions: no dump calls them, nor writes them into a view, default, check or index expression
# that the load evaluates. (Listing directories, pg_ls_*, and connecting out, dblink, are left to
# the monitoring views and materialized views that legitimately use them.)
SERVER_FUNCTIONS = {
    "lo_import", "lo_export", "pg_read_file", "pg_read_binary_file", "pg_file_write", "pg_file_rename",
    "pg_file_unlink", "pg_file_sync", "pg_reload_conf", "pg_rotate_logfile", "pg_terminate_backend",
    "pg_cancel_backend", "pg_promote", "pg_switch_wal", "pg_create_restore_point", "pg_backup_start",
    "pg_backup_stop", "pg_start_backup", "pg_stop_backup", "pg_log_backend_memory_contexts",
}


def _names_server_function(sql: str) -> bool:
    """Whether any of SERVER_FUNCTIONS appears in the text at all (then the tokens are checked): twenty
    plain searches of the lower-cased text, where one case-blind regex alternation ran at 10 MB/s."""
    low = sql.lower()
    return any(name in low for name in SERVER_FUNCTIONS)


# Settings that load libraries into a server process; pg_dump never sets them.
LIBRARY_SETTINGS = {"session_preload_libraries", "local_preload_libraries", "shared_preload_libraries",
                    "dynamic_library_path", "jit_provider"}
_LIBRARY_SETTING_HINT = re.compile("|".join(LIBRARY_SETTINGS), re.I)

# Second words after ALTER/CREATE/DROP (and SET CLUSTER SETTING) that reach beyond one database: pg_dump writes
# none of them for a single database (roles and tablespaces are pg_dumpall's), and our
# restore carries database-level settings itself.
CLUSTER_OBJECTS = {"system", "role", "user", "group", "database", "tablespace", "cluster", "range", "tenant",
                   "virtual"}

# The only functions a top-level SELECT of a dump calls, each with constant arguments.
DUMP_SELECTS = {"set_config", "setval", "lo_create", "lo_open", "lowrite", "lo_close",
                "pg_restore_relation_stats", "pg_restore_attribute_stats", "pg_restore_extended_stats",
                "pg_clear_relation_stats", "pg_clear_attribute_stats"}

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<comment>--[^\n]*)
  | (?P<block>/\*)
  | (?P<estring>[Ee]'(?:[^'\\]|\\.|'')*'?)
  | (?P<string>'(?:[^']|'')*'?)
  | (?P<ident>"(?:[^"]|"")*"?)
  | (?P<dollar>\$(?:[A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*)?\$)
  | (?P<word>[A-Za-z_\x80-\uffff][A-Za-z0-9_$\x80-\uffff]*)
  | (?P<number>[0-9][0-9.eE_]*)
  | (?P<punct>::|[(),.;\[\]]|[^\sA-Za-z0-9_'"$(),.;\[\]]+)
""", re.X | re.S)
_COMMENT_EDGE = re.compile(r"/\*|\*/")


class ScreenedOut(IntegrityError):
    """The script holds a statement no dump writes; nothing of it ran on the live database."""


@dataclass(frozen=True)
class Token:
    kind: str  # word, ident, string, number, punct
    text: str  # words lower-cased; strings and identifiers without their quotes

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and (not words or self.text in words)


def tokens(sql: str) -> list[Token]:
    """The statement's tokens, with comments and whitespace dropped and quotes taken off."""
    out: list[Token] = []
    pos, end = 0, len(sql)
    while pos < end:
        m = _TOKEN.match(sql, pos)
        if m is None:  # a stray byte the lexer does not know: keep it as punctuation
            out.append(Token("punct", sql[pos]))
            pos += 1
            continue
        kind, text, pos = m.lastgroup, m.group(), m.end()
        if kind == "block":
            depth = 1
            while depth and pos < end:
                nxt = _COMMENT_EDGE.search(sql, pos)
                if nxt is None:
                    pos = end
                    break
                depth += 1 if nxt.group() == "/*" else -1
                pos = nxt.end()
        elif kind == "dollar":
            close = sql.find(text, pos)
            body_end = end if close < 0 else close
            out.append(Token("string", sql[pos:body_end]))
            pos = end if close < 0 else close + len(text)
        elif kind == "estring":
            out.append(Token("string", text[2:-1]))
        elif kind == "string":
            out.append(Token("string", text[1:-1].replace("''", "'")))
        elif kind == "ident":
            out.append(Token("ident", text[1:-1].replace('""', '"')))
        elif kind == "word":
            out.append(Token("word", text.lower()))
        elif kind in ("number", "punct"):
            out.append(Token(kind, text))
    return out


def check(statement: Statement) -> None:
    """Raise ScreenedOut if the statement must not run; quick for the statements dumps are made of."""
    sql = statement.sql
    first = re.match(r"\s*([A-Za-z]+)", sql)
    head = first.group(1).lower() if first else ""
    if head == "insert":
        # Row batches are most of a CockroachDB script: tokenize only if a name to refuse appears.
        if _names_server_function(sql):
            _no_server_functions(statement, tokens(sql))
        return
    toks = tokens(sql)
    if not toks:
        return
    if not toks[0].is_word(*ALLOWED_FIRST):
        _refuse(statement, f"{_name(toks[0])} is not a statement a dump writes")
    word = toks[0].text
    if word == "copy":
        _check_copy(statement, toks)
    elif word == "select":
        _check_select(statement, toks)
    elif len(toks) > 1 and (word in ("alter", "create", "drop") and toks[1].is_word(*CLUSTER_OBJECTS)
                            or word == "set" and toks[1].is_word("cluster")):
        _refuse(statement, f"{word.upper()} {toks[1].text.upper()} acts on the whole server, outside the "
                           "database a dump restores")
    elif word in ("grant", "revoke") and not _has_top_level(toks, "on"):
        _refuse(statement, "a dump grants privileges ON objects, never membership in roles")
    elif word == "create":
        _check_create(statement, toks)
    if any(t.kind in ("word", "ident", "string") and t.text.lower() == "standard_conforming_strings" for t in toks) \
            and not _is_set_on(toks, "standard_conforming_strings"):
        # With it off, backslashes end strings where the splitter and this screen do not see it end.
        _refuse(statement, "a dump sets standard_conforming_strings only to on")
    # In the session only: a routine's own SET clause applies after its library is loaded.
    if word == "set" and _LIBRARY_SETTING_HINT.search(sql):
        for tok in toks:
            if tok.kind in ("word", "ident", "string") and tok.text.lower() in LIBRARY_SETTINGS:
                _refuse(statement, f"it sets {tok.text}, which loads libraries into the server")
    if _names_server_function(sql):
        _no_server_functions(statement, toks)


def _check_copy(statement: Statement, toks: list[Token]) -> None:
    # COPY name [ ( columns ) ] FROM stdin [options]: never TO, never a file or PROGRAM.
    i = 1
    while i < len(toks) and (toks[i].kind in ("word", "ident") or toks[i].text == ".") \
            and not toks[i].is_word("from", "to"):
        i += 1
    if i < len(toks) and toks[i].text == "(":
        i = _after_parens(toks, i)
    if not (i + 1 < len(toks) and toks[i].is_word("from") and toks[i + 1].is_word("stdin")) \
            or any(t.text == ";" or t.is_word("program") for t in toks[i + 2:]):
        _refuse(statement, "a dump's COPY only reads FROM stdin (this one reads or writes a file or a program)")


def _check_select(statement: Statement, toks: list[Token]) -> None:
    # SELECT [* FROM] [pg_catalog.]fn(constants) -- one call, nothing after it.
    i = 1
    if i + 1 < len(toks) and toks[i].text == "*" and toks[i + 1].is_word("from"):
        i += 2
    if i + 1 < len(toks) and toks[i].is_word("pg_catalog") and toks[i + 1].text == ".":
        i += 2
    ok = (i + 1 < len(toks) and toks[i].is_word(*DUMP_SELECTS) and toks[i + 1].text == "(")
    if ok:
        close = _after_parens(toks, i + 1)
        inner = toks[i + 2:close - 1]
        ok = close == len(toks) and not any(t.text == "(" for t in inner) \
            and not (toks[i].text == "set_config" and inner and inner[0].text.lower() in LIBRARY_SETTINGS)
    if not ok:
        _refuse(statement, "a dump's SELECT only calls setval, set_config, the large-object writers or the "
                           "statistics restorers, with constant arguments")


def _check_create(statement: Statement, toks: list[Token]) -> None:
    words = [t.text for t in toks[1:6] if t.kind == "word"]
    if words[:1] == ["table"] or words[:2] in (["temp", "table"], ["temporary", "table"], ["unlogged", "table"]):
        depth = 0
        for tok in toks:  # CREATE TABLE ... AS runs its query now; a dump never writes one
            depth += (tok.text == "(") - (tok.text == ")")
            if depth == 0 and tok.is_word("as"):
                _refuse(statement, "CREATE TABLE ... AS runs a query while loading")
    elif words[:1] == ["subscription"] and not _connect_false(toks):
        _refuse(statement, "a dump creates subscriptions WITH (connect = false)")
    elif words[:1] in (["changefeed"], ["schedule"]) or words[:2] == ["external", "connection"]:
        _refuse(statement, f"CREATE {' '.join(words[:2]).upper()} sends data out of the database")


def _no_server_functions(statement: Statement, toks: list[Token]) -> None:
    for i, tok in enumerate(toks[:-1]):
        if tok.kind in ("word", "ident") and tok.text.lower() in SERVER_FUNCTIONS and toks[i + 1].text == "(":
            _refuse(statement, f"it calls {tok.text}(), which reaches the server's files, programs or sessions")


def _has_top_level(toks: list[Token], word: str) -> bool:
    depth = 0
    for tok in toks:
        depth += (tok.text == "(") - (tok.text == ")")
        if depth == 0 and tok.is_word(word):
            return True
    return False


def _is_set_on(toks: list[Token], name: str) -> bool:
    texts = [t.text.lower() for t in toks]
    return len(texts) == 4 and texts[:2] == ["set", name] and texts[2] in ("=", "to") and texts[3] == "on"


def _connect_false(toks: list[Token]) -> bool:
    return any(a.is_word("connect") and b.text == "=" and c.text.lower() in ("false", "off", "0")
               for a, b, c in zip(toks, toks[1:], toks[2:]))


def _after_parens(toks: list[Token], i: int) -> int:
    """Index just after the parenthesis group that opens at toks[i]."""
    depth = 0
    for j in range(i, len(toks)):
        depth += (toks[j].text == "(") - (toks[j].text == ")")
        if depth == 0:
            return j + 1
    return len(toks)


def _name(tok: Token) -> str:
    return tok.text.upper() if tok.kind == "word" else repr(tok.text)


def _refuse(statement: Statement, why: str):
    raise ScreenedOut(f"line {statement.line}: refused to run `{statement.head()}`: {why}. A backup made by "
                      "this program or pg_dump never holds such a statement; the object was changed or is not "
                      "a backup. Nothing of it ran on the live database")
