"""The streaming statement splitter: quoting rules, COPY blocks, meta-commands, chunk boundaries."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from devkit.corpus import build_corpus, fingerprint, schema_dump
from devkit.pgserver import pg_bin
from enclave_backup import sqlscript
from enclave_backup.sqlscript import CopyBlock, ScriptError, Statement, split


def parse(script: bytes, chunk: int | None = None) -> list:
    """Split `script` fed in pieces of `chunk` bytes; COPY blocks become (sql, line, data, rows)."""
    pieces = [script] if chunk is None else [script[i:i + chunk] for i in range(0, len(script), chunk)]
    out = []
    for item in split(pieces):
        if isinstance(item, CopyBlock):
            data = b"".join(item)
            out.append(("COPY", item.statement.sql, item.statement.line, data, item.rows))
        else:
            out.append((item.sql, item.line))
    return out


def sqls(script: bytes) -> list[str]:
    return [item[0] if item[0] != "COPY" else item[1] for item in parse(script)]


@pytest.mark.parametrize("script, expected", [
    (b"SELECT 1; SELECT 2;", ["SELECT 1", "SELECT 2"]),
    (b"SELECT 'a;b', 'it''s; fine';", ["SELECT 'a;b', 'it''s; fine'"]),
    (b"SELECT E'back\\'slash; quote', e'\\\\';", ["SELECT E'back\\'slash; quote', e'\\\\'"]),
    # Outside E'' a backslash is an ordinary character (standard_conforming_strings).
    (b"SELECT 'C:\\';SELECT 2;", ["SELECT 'C:\\'", "SELECT 2"]),
    (b'CREATE TABLE "a;""b" (x int);', ['CREATE TABLE "a;""b" (x int)']),
    (b"SELECT $$a;'b$$, $fn$ $$; $fn$;", ["SELECT $$a;'b$$, $fn$ $$; $fn$"]),
    (b"SELECT $1; SELECT a$b$ FROM t;", ["SELECT $1", "SELECT a$b$ FROM t"]),
    (b"SELECT 1 -- not ; the end\n, 2;", ["SELECT 1 -- not ; the end\n, 2"]),
    (b"SELECT /* a /* nested ; */ still ; comment */ 1;", ["SELECT /* a /* nested ; */ still ; comment */ 1"]),
    (b"-- leading comment;\n/* block; */\n\n  SELECT 1;", ["SELECT 1"]),
    (b"CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2));",
     ["CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2))"]),
    (b"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END;"
     b" SELECT 3;",
     ["CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END",
      "SELECT 3"]),
    (b"CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (1); END; BEGIN; END;",
     ["CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (1); END", "BEGIN",
      "END"]),
    (b";;SELECT 1;;", ["SELECT 1"]),
    (b"SELECT 'unicode: \xc3\xa9\xe6\x9d\xb1 ; \xf0\x9f\x99\x82';", ["SELECT 'unicode: \u00e9\u6771 ; \U0001f642'"]),
    (b"SELECT 1", ["SELECT 1"]),  # psql runs a final statement without semicolon too
])
def test_statements_split_where_psql_splits_them(script, expected):
    assert sqls(script) == expected


def test_copy_blocks_carry_their_data_verbatim():
    script = (b"COPY public.t (a, b) FROM stdin;\n"
              b"1\t\\N\n2\t\\\\.\n3\t\\.x\n\\\\.\n"
              b"\\.\n\nCOPY s.\"e\" FROM STDIN;\n\\.\nSELECT 1;\n")
    assert parse(script) == [
        ("COPY", "COPY public.t (a, b) FROM stdin", 1, b"1\t\\N\n2\t\\\\.\n3\t\\.x\n\\\\.\n", 4),
        ("COPY", 'COPY s."e" FROM STDIN', 8, b"", 0),
        ("SELECT 1", 10),
    ]


def test_copy_end_marker_with_crlf_or_at_the_end_of_the_script():
    assert parse(b"COPY t FROM stdin;\r\na\r\n\\.\r\nSELECT 1;") == [
        ("COPY", "COPY t FROM stdin", 1, b"a\r\n", 1), ("SELECT 1", 4)]
    assert parse(b"COPY t FROM stdin;\na\n\\.") == [("COPY", "COPY t FROM stdin", 1, b"a\n", 1)]


@pytest.mark.parametrize("chunk", [None, 1, 7, 64, 4096])
def test_the_end_marker_is_found_after_rows_full_of_backslashes(chunk):
    # Far more backslashes than the one-byte search checks alone, each near a marker's look-alike
    # (`\\.` is a value of a backslash and a dot, `\.x` no whole line), before the real one.
    rows = b"".join(b"%d\t\\N\t\\\\.\n\\\\.\n\\.x\t\\N\n" % i for i in range(100))
    script = b"COPY t FROM stdin;\n" + rows + b"\\.\nSELECT 1;\n"
    assert parse(script, chunk) == [("COPY", "COPY t FROM stdin", 1, rows, 300), ("SELECT 1", 303)]


def test_line_numbers_count_every_line_before_the_statement():
    script = b"-- one\n\nSELECT 1;\nCOPY t FROM stdin;\nr1\nr2\n\\.\n\n  SELECT\n'a\nb';\n"
    assert [(i[0], i[-1] if i[0] != "COPY" else i[2]) for i in parse(script)] == [
        ("SELECT 1", 3), ("COPY", 4), ("SELECT\n'a\nb'", 9)]


def test_restrict_lines_are_skipped_and_other_meta_commands_refused():
    assert sqls(b"\\restrict AbC123\nSELECT 1;\n\\unrestrict AbC123\n") == ["SELECT 1"]
    with pytest.raises(ScriptError, match=r"line 2: psql meta-command \\connect is not supported"):
        sqls(b"SELECT 1;\n\\connect other\nSELECT 2;\n")
    with pytest.raises(ScriptError, match=r"line 2: psql meta-command \\gset inside the statement starting at line 1"):
        sqls(b"SELECT 1\n\\gset\n")
    with pytest.raises(ScriptError, match=r"\\\."):
        sqls(b"SELECT 1;\n\\.\n")


@pytest.mark.parametrize("script, message", [
    (b"SELECT 'open", "inside a quoted string in the statement starting at line 1"),
    (b"\nSELECT $x$ body", r"inside a dollar-quoted string \(\$x\$\)"),
    (b'SELECT "open', "inside a quoted identifier"),
    (b"SELECT 1 /* open", "inside a comment"),
    (b"SELECT 1;\nCOPY t FROM stdin;\nrow\n", "inside the COPY data that starts at line 2"),
    (b"COPY t FROM stdin; SELECT 1;\n\\.\n", "text after `COPY ... FROM stdin;`"),
])
def test_broken_scripts_are_refused_with_the_line(script, message):
    with pytest.raises(ScriptError, match=message):
        parse(script)


def test_statement_head_is_one_short_line():
    statement = Statement("INSERT INTO t\n  VALUES (" + "x, " * 50 + ")", 7)
    assert statement.head(30) == "INSERT INTO t VALUES (x, x, x,..."


SMALL = (b"\\restrict k1\nSET a = 'x;y';\n-- c;\nCREATE FUNCTION f() RETURNS text AS $q$ '$$' ; $q$\n"
         b"LANGUAGE sql;\nSELECT E'\\\\'';', E'a''\\';', \"q\"\"x\", /* /* n */ ; */ 1;\nCOPY t (a) FROM stdin;\n"
         b"a\\tb\n\\\\.\n\\.\nCREATE FUNCTION g() BEGIN ATOMIC SELECT 1; END;\n\\unrestrict k1\nSELECT 2")


def test_every_chunk_boundary_gives_the_same_split():
    whole = parse(SMALL)
    assert [i[0] if i[0] != "COPY" else "COPY" for i in whole] == [
        "SET a = 'x;y'", "CREATE FUNCTION f() RETURNS text AS $q$ '$$' ; $q$\nLANGUAGE sql",
        "SELECT E'\\\\'';', E'a''\\';', \"q\"\"x\", /* /* n */ ; */ 1", "COPY",
        "CREATE FUNCTION g() BEGIN ATOMIC SELECT 1; END", "SELECT 2"]
    for cut in range(1, len(SMALL)):
        assert parse_pieces([SMALL[:cut], SMALL[cut:]]) == whole, f"split at byte {cut}"
    for size in (1, 2, 3, 5):
        assert parse(SMALL, size) == whole, f"chunks of {size} bytes"


def parse_pieces(pieces: list[bytes]) -> list:
    out = []
    for item in split(pieces):
        if isinstance(item, CopyBlock):
            out.append(("COPY", item.statement.sql, item.statement.line, b"".join(item), item.rows))
        else:
            out.append((item.sql, item.line))
    return out


# As insertbatch writes a batch: every value form, quotes, escapes, semicolons and parentheses in strings.
BATCH = (b'INSERT INTO "public"."t" ("a", "b ""x""", "c") VALUES (\'1\'::INT8, e\'it\\\'s; a \\\\ (tab)\\t\'::STRING, '
         b"NULL), ('-2'::DECIMAL(14,2), 'semi;colon -- not a comment /* nor this */'::STRING, decode('00ff', 'hex')), "
         b"('''quoted'''::STRING, '$$ $x$'::\"my schema\".\"my type\"[], 'x'::STRING COLLATE en_US);")
# Batch-like but not of that form: the general lexer takes them.
NOT_BATCHES = [
    b'INSERT INTO "public"."t" ("a") VALUES (\'1\'::INT8); SELECT 2;',
    b'INSERT INTO "public"."t" ("a") VALUES (\'line\nbreak\'::STRING);',
    b'INSERT INTO "public"."t" ("a") VALUES (\'1\'::INT8) ;',
    b"INSERT INTO public.t (a) VALUES ('1'::INT8);",
    b'INSERT INTO "public"."t" ("a") VALUES (\'no cast\');',
    b'INSERT INTO "public"."t" DEFAULT VALUES;',
]


def test_insert_batch_lines_split_as_the_general_lexer_splits_them(monkeypatch):
    assert sqlscript.batch_line().fullmatch(BATCH)
    assert not any(sqlscript.batch_line().fullmatch(line.split(b"\n")[0]) for line in NOT_BATCHES)
    script = b"\n".join([BATCH, *NOT_BATCHES, BATCH, BATCH[:-1]]) + b"\n"
    fast = parse(script)
    assert [line for _, line in fast] == [1, 2, 2, 3, 5, 6, 7, 8, 9, 10]
    # The last one, its semicolon missing, runs as psql would run it.
    assert [fast[0], fast[-2], fast[-1]] == [(BATCH[:-1].decode(), n) for n in (1, 9, 10)]
    for size in (1, 7, 64, 1000):
        assert parse(script, size) == fast, f"chunks of {size} bytes"
    monkeypatch.setattr(sqlscript, "batch_line", lambda: re.compile(rb"(?!)"))  # the general lexer only
    assert parse(script) == fast
    assert parse(script, 7) == fast


def test_copy_data_streams_in_pieces_without_buffering_the_table():
    rows = b"".join(b"%d\tsome text for the row\n" % i for i in range(20000))
    script = b"COPY t FROM stdin;\n" + rows + b"\\.\n"
    block = next(split(script[i:i + 4096] for i in range(0, len(script), 4096)))
    pieces = list(block)
    assert b"".join(pieces) == rows and block.rows == 20000
    assert max(len(p) for p in pieces) <= 4096 + 4  # at most one chunk plus a held-back partial line


TRICKY_SQL = r'''
CREATE FUNCTION public.atomic_add(a integer, b integer) RETURNS integer LANGUAGE sql
BEGIN ATOMIC
  SELECT CASE WHEN a IS NULL THEN b ELSE a + b END;
END;
CREATE TABLE public.log (id serial PRIMARY KEY, msg text DEFAULT E'semi;colon\\and ''quote'' ', "we;ird ""col""" text);
CREATE TABLE public.log_copy (msg text);
CREATE RULE log_twice AS ON INSERT TO public.log DO ALSO (
  INSERT INTO public.log_copy VALUES (NEW.msg); INSERT INTO public.log_copy VALUES ('rule;' || NEW.msg));
CREATE FUNCTION public.nested() RETURNS text LANGUAGE plpgsql AS $outer$
BEGIN
  RETURN $inner$ ; $$ 'x' $inner$; -- ; comment
END
$outer$;
COMMENT ON TABLE public.log IS 'a /* not a comment */ -- nor this; ok';
INSERT INTO public.log (msg, "we;ird ""col""") VALUES (E'line\nbreak\t\\.', '\.'), ('', NULL), (NULL, $$x$$);
'''


def test_real_pg_dump_output_rejoined_replays_to_the_same_database(pg):
    """pg_dump of the corpus plus tricky DDL: split, re-join, replay with psql, compare."""
    source, rejoined = "split_src", "split_rejoined"
    for name in (source, rejoined):
        pg.create_database(name)
    with pg.connect(source) as conn:
        build_corpus(conn)
        conn.execute(TRICKY_SQL)
        expected = fingerprint(conn)
    env = {**os.environ, **pg.env(source)}
    script = subprocess.run([pg_bin("pg_dump"), "-d", source], env=env, check=True, capture_output=True).stdout
    assert b"\\restrict " in script and b"BEGIN ATOMIC" in script and b"$inner$" in script

    items = parse(script, 8192)
    assert parse(script) == items  # chunking does not change the split
    text = []
    for item in items:
        if item[0] == "COPY":
            text.append(item[1].encode() + b";\n" + item[3] + b"\\.\n")
        else:
            text.append(item[0].encode() + b";\n")
    joined = b"".join(text)
    # Splitting the re-joined script gives the same statements and COPY data again.
    assert [i[0] if i[0] != "COPY" else (i[1], i[3]) for i in parse(joined)] == \
        [i[0] if i[0] != "COPY" else (i[1], i[3]) for i in items]

    replay = pg.psql(rejoined, "-v", "ON_ERROR_STOP=1", input=joined, check=False)
    assert replay.returncode == 0, replay.stderr.decode()
    with pg.connect(rejoined) as conn:
        assert fingerprint(conn) == expected
        assert conn.execute("SELECT public.atomic_add(2, 3), public.nested()").fetchone() == (5, " ; $$ 'x' ")
    assert schema_dump(env, rejoined) == schema_dump(env, source)


def test_statements_keep_the_bytes_of_any_declared_encoding():
    """A LATIN1 script's bytes reach the server unchanged; the server reads them as the script declares."""
    script = b"SET client_encoding = 'LATIN1';\nCREATE TABLE \"caf\xe9\" (n text);\nCOPY \"caf\xe9\" FROM stdin;\n\xe9\n\\.\n"
    items = list(split([script]))
    assert items[1].data == b'CREATE TABLE "caf\xe9" (n text)'
    assert "caf\ufffd" in items[1].sql  # only the text used for messages is decoded
    assert items[2].statement.data == b'COPY "caf\xe9" FROM stdin'
