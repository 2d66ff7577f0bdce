"""The engine-neutral half of the CockroachDB data path, run live against PostgreSQL.

insertbatch renders each value as the server's own text of it, cast back to the column's
type (bytes as hex through decode()). PostgreSQL follows the same rule (a type's text
output is what its input function reads), so a live round trip here checks the literal
quoting, the escapes, NULLs and the batching against a real parser, through psql and
through the restore's statement splitter.
"""

from __future__ import annotations

import subprocess

import pytest

from devkit.pgserver import pg_bin
from enclave_backup.engines.cockroachdb import insertbatch
from enclave_backup.db import quote_ident
from enclave_backup.sqlscript import Statement, split

TRICKY_TEXT = [
    "", " leading and trailing ", "it's", "back\\slash", "\\N", "\\.", "\\x00ff", "tab\there", "line\nbreak",
    "cr\rlf", "".join(chr(c) for c in range(1, 32)) + "\x7f", "Zażółć gęślą jaźń 🐘", "e'not an escape'",
    "$$dollar$$", "-- not a comment", "/* nor this */", ";", "(", "\\", "'", "''",
]

SCHEMA = """
CREATE TYPE mood AS ENUM ('happy', 'sad', 'it''s complicated');
CREATE TABLE src (
    id int8 PRIMARY KEY,
    t text, j jsonb, b bytea, f float8, n numeric, ts timestamptz, iv interval, d date,
    ia int8[], ta text[], u uuid, ip inet, ok boolean, m mood, tt time, js json
);
"""

TEXT_ROWS = "INSERT INTO src (id, t) SELECT i, v FROM unnest(%(texts)s::text[]) WITH ORDINALITY AS x(v, i)"
ROWS = """
INSERT INTO src (id, j, js) VALUES
    (100, '"abc\\n123"', '{"a": "b\\"c", "a": 2}'), (101, '{"q": "say \\"hi\\"\\\\", "n": null}', '[1, 2.50]'),
    (102, 'null', 'null'), (103, '[1, "hello", {"a": ["foo", {"b": 3}]}]', '"\\u00e9\\t"');
INSERT INTO src (id, b) VALUES (200, (SELECT string_agg(set_byte('\\x00'::bytea, 0, i), ''::bytea)
                                      FROM generate_series(0, 255) AS i)), (201, ''::bytea), (202, '\\x5c4e');
INSERT INTO src (id, f, n) VALUES (300, 'NaN', 'NaN'), (301, '-0', 0.000000000000000000001),
    (302, 'Infinity', 123456789012345678901234567890.123456789), (303, 1e-323, -1), (304, 0.1, 1.10);
INSERT INTO src (id, ts, iv, d, tt) VALUES (400, '2020-01-03 15:16:17.123456-10', '1 month 3 days 01:02:15.16',
    'infinity', '23:59:59.999999'), (401, '-infinity', '-1 year', '0001-01-01 BC', '00:00');
INSERT INTO src (id, ia, ta) VALUES (500, '{1,NULL,3}', '{"a,b","c\\"d",NULL,"NULL","",  "\\\\"}'),
    (501, '{}', '{}');
INSERT INTO src (id, u, ip, ok, m) VALUES (600, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2001:db8::1/64', false,
    'it''s complicated'), (601, NULL, '10.0.0.1', true, 'happy');
"""


@pytest.fixture
def loaded(pg, dbname):
    with pg.connect(dbname) as conn:
        conn.autocommit = True
        conn.execute(SCHEMA)
        conn.execute(TEXT_ROWS, {"texts": TRICKY_TEXT})
        conn.execute(ROWS)
        conn.execute("CREATE TABLE dst (LIKE src INCLUDING ALL)")
    return dbname


def render(pg, dbname: str, batch_rows: int) -> str:
    """The INSERT script of src, aimed at dst, read the way the CockroachDB dump reads."""
    with pg.connect(dbname) as conn:
        columns = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'src'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum").fetchall()
        casts = tuple(None if typ == "bytea" else typ for _, typ in columns)
        exprs = [f"encode({quote_ident(n)}, 'hex')" if c is None else f"{quote_ident(n)}::text"
                 for (n, _), c in zip(columns, casts)]
        target = insertbatch.Target('"public"."dst"', ", ".join(quote_ident(n) for n, _ in columns), casts)
        out: list[bytes] = []
        with conn.cursor() as cur:
            rows = cur.stream(f"SELECT {', '.join(exprs)} FROM src ORDER BY id")
            count = insertbatch.write_batches(rows, target, out.append, batch_rows=batch_rows)
        assert count == conn.execute("SELECT count(*) FROM src").fetchone()[0]
    return b"".join(out).decode()


def differences(pg, dbname: str) -> int:
    with pg.connect(dbname) as conn:
        # Compare as text: json (not jsonb) keeps its exact input text, so this checks that too.
        return conn.execute(
            "SELECT count(*) FROM ((SELECT rs::text FROM src rs EXCEPT ALL SELECT rd::text FROM dst rd) "
            "UNION ALL (SELECT rd::text FROM dst rd EXCEPT ALL SELECT rs::text FROM src rs)) diff").fetchone()[0]


def test_every_value_round_trips_through_psql(pg, loaded):
    script = render(pg, loaded, batch_rows=7)
    lines = script.splitlines()
    assert len(lines) == 6  # 39 rows in batches of 7
    assert all(line.startswith("INSERT INTO ") and line.endswith(");") for line in lines)
    env = {**pg.env(loaded), "PATH": "/usr/bin:/bin"}
    subprocess.run([pg_bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"], input=script.encode(), env=env,
                   check=True, capture_output=True)
    assert differences(pg, loaded) == 0


def test_every_value_round_trips_through_the_restore_splitter(pg, loaded):
    script = render(pg, loaded, batch_rows=1000)
    statements = list(split([script.encode()[i:i + 100] for i in range(0, len(script.encode()), 100)]))
    assert len(statements) == 1 and isinstance(statements[0], Statement)
    with pg.connect(loaded) as conn:
        conn.autocommit = True
        cur = conn.execute(statements[0].sql)
        assert cur.rowcount == 39
    assert differences(pg, loaded) == 0


def test_a_batch_ends_at_the_byte_bound_and_each_statement_commits_alone(pg, loaded):
    script = render(pg, loaded, batch_rows=1000)
    with pg.connect(loaded) as conn:
        conn.autocommit = True
        small = []
        insertbatch.write_batches([("1", "x" * 50), ("2", "y" * 50), ("3", None)],
                                  insertbatch.Target("dst", "id, t", ("int8", "text")), small.append, batch_bytes=60)
        assert len(small) == 3  # each row alone passes 60 bytes
        conn.execute(small[0].decode())
        with pytest.raises(Exception, match="duplicate key"):
            conn.execute(small[0].decode())  # a failed batch rolls back alone; the first stays
        assert conn.execute("SELECT t FROM dst WHERE id = 1").fetchone()[0] == "x" * 50
    assert script.count("\n") == 1


@pytest.mark.parametrize(("text", "literal"), [
    ("plain", "'plain'"),
    ("", "''"),
    ("it's", "'it''s'"),
    ("\\N", "e'\\\\N'"),
    ("a\tb\nc\rd", "e'a\\tb\\nc\\rd'"),
    ("quote ' and \\", "e'quote \\' and \\\\'"),
    ("bell\x07del\x7f", "e'bell\\x07del\\x7f'"),
    ("ünï 🐘", "'ünï 🐘'"),
])
def test_string_literals(text, literal):
    assert insertbatch.string_literal(text) == literal


def test_bytes_values_must_be_hex():
    assert insertbatch.value_literal("00ff", None) == "decode('00ff', 'hex')"
    with pytest.raises(ValueError, match="hex digits"):
        insertbatch.value_literal("'); DROP TABLE x; --", None)
