"""A database with every shape a dump must carry exactly, and fingerprints to compare two."""

from __future__ import annotations

import re
import subprocess

import psycopg

CORPUS_SQL = r'''
CREATE SCHEMA "Odd ""Schema"" name";
CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy', 'it''s complicated');
CREATE DOMAIN public.positive AS numeric(20, 6) CHECK (VALUE > 0);
CREATE TYPE public.pair AS (left_part text, right_part integer);

CREATE TABLE public.everything (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    t text,
    v varchar(50),
    n numeric,
    f8 double precision,
    f4 real,
    b bytea,
    ia integer[],
    ta text[],
    j json,
    jb jsonb,
    ts timestamptz,
    d date,
    iv interval,
    u uuid,
    m public.mood,
    p public.positive,
    c public.pair,
    doubled bigint GENERATED ALWAYS AS (id * 2) STORED
);

CREATE TABLE "Odd ""Schema"" name"."Table With Spaces" (
    "Column ""Quoted""" text,
    "MixedCase" integer,
    "select" boolean
);

-- Tables that reference each other: only loadable because constraints come after data.
CREATE TABLE public.parent (id integer PRIMARY KEY, favourite_child integer);
CREATE TABLE public.child (id integer PRIMARY KEY, parent_id integer NOT NULL REFERENCES public.parent(id));
ALTER TABLE public.parent ADD CONSTRAINT parent_favourite_fk FOREIGN KEY (favourite_child) REFERENCES public.child(id);

CREATE SEQUENCE public.invoice_numbers START 1000 INCREMENT 7;
CREATE TABLE public.counters (id serial PRIMARY KEY, label text NOT NULL);

CREATE TABLE public.measurements (at date NOT NULL, value numeric) PARTITION BY RANGE (at);
CREATE TABLE public.measurements_2025 PARTITION OF public.measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE public.measurements_2026 PARTITION OF public.measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');

CREATE TABLE public.audited (id integer PRIMARY KEY, note text);
-- If this trigger existed while data loads, every note would change: it must come after data.
CREATE FUNCTION public.shout() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    NEW.note := upper(NEW.note) || ' $$ ;';
    RETURN NEW;
END
$body$;
CREATE TRIGGER audited_shout BEFORE INSERT ON public.audited FOR EACH ROW EXECUTE FUNCTION public.shout();

CREATE INDEX everything_t_idx ON public.everything (t);
CREATE UNIQUE INDEX counters_label_idx ON public.counters (label);
CREATE VIEW public.happy_rows AS SELECT id, t FROM public.everything WHERE m = 'happy';
CREATE MATERIALIZED VIEW public.mood_counts AS SELECT m, count(*) AS n FROM public.everything GROUP BY m;
CREATE TABLE public.no_columns ();
'''

DATA_SQL = r'''
INSERT INTO public.everything (t, v, n, f8, f4, b, ia, ta, j, jb, ts, d, iv, u, m, p, c) VALUES
 (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 ('', '', 0, 0, 0, '', '{}', '{}', '{}', '{}', 'epoch', 'epoch', '0', '00000000-0000-0000-0000-000000000000', 'sad', 0.000001, ROW('', 0)),
 (E'\\N', E'\\', 12345678901234567890.123456789012345678901234567890, 'NaN', 'Infinity',
  '\x00ff5c0a0d09', '{1,NULL,3}', ARRAY['a,b', 'c"d', NULL, E'e\\f', ''], '{"a": [1, 2.50, "x"]}',
  '{"z": null, "a": {"nested": "\u00e9"}}', 'infinity', '-infinity', '1 year 2 mons 3 days 04:05:06.789',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy', 99999999999999.999999, ROW('x,"y"', -1)),
 (E'tab\there\nnewline\r\nCRLF and a backslash \\ and \\.', 'unicode: Zürich 東京 🙂', 'NaN', '-Infinity', '-0',
  '\x5c2e0a', '{}', '{"\\."}', '"just a string"', '[1, "two", {"three": 3}]', '2024-02-29 23:59:59.999999+00',
  '2000-01-01', '-1 day', NULL, 'it''s complicated', 1, NULL),
 (E'\\.', E'line1\n\\.\nline3', 1e-30, 1.7976931348623157e308, 3.4028235e38, '\x', NULL, NULL, 'null', 'null',
  '1970-01-01 00:00:00+00', '9999-12-31', '0', NULL, 'ok', 42, ROW(NULL, NULL));

INSERT INTO "Odd ""Schema"" name"."Table With Spaces" VALUES
 ('quote '' and "double"', 1, true), (NULL, NULL, NULL), ('', -2147483648, false);

INSERT INTO public.parent VALUES (1, NULL), (2, NULL);
INSERT INTO public.child VALUES (10, 1), (20, 2), (30, 1);
UPDATE public.parent SET favourite_child = 10 WHERE id = 1;
UPDATE public.parent SET favourite_child = 30 WHERE id = 2;

SELECT nextval('public.invoice_numbers'), nextval('public.invoice_numbers');
INSERT INTO public.counters (label) SELECT 'label ' || g FROM generate_series(1, 250) g;
DELETE FROM public.counters WHERE id % 10 = 0;

INSERT INTO public.measurements SELECT DATE '2025-06-01' + g, g * 1.5 FROM generate_series(0, 400) g;

INSERT INTO public.audited VALUES (1, 'quiet'), (2, NULL);
INSERT INTO public.no_columns DEFAULT VALUES;
INSERT INTO public.no_columns DEFAULT VALUES;
REFRESH MATERIALIZED VIEW public.mood_counts;
'''


def build_corpus(conn: psycopg.Connection) -> None:
    """Create the corpus in the (empty) database `conn` points at; conn must be autocommit."""
    conn.execute(CORPUS_SQL)
    conn.execute(DATA_SQL)


def add_bulk(conn: psycopg.Connection, rows: int, width: int = 200) -> None:
    """A wide table big enough to span many upload parts when needed."""
    conn.execute("CREATE TABLE IF NOT EXISTS public.bulk (id bigint PRIMARY KEY, payload text, n numeric)")
    conn.execute(
        "INSERT INTO public.bulk SELECT g, md5(g::text) || repeat(md5((g * 7)::text), %s), g * 1.25 "
        "FROM generate_series(1, %s) g", (max(1, width // 32), rows))


_FINGERPRINT_TABLES = r"""
SELECT format('%I.%I', n.nspname, c.relname), c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm', 'v', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
ORDER BY 1
"""


def fingerprint(conn: psycopg.Connection) -> dict[str, str]:
    """Every relation's full content (rows as text, sorted), sequences' state included."""
    out = {}
    for name, kind in conn.execute(_FINGERPRINT_TABLES).fetchall():
        if kind == "S":
            out[name] = str(conn.execute(f"SELECT last_value, is_called FROM {name}").fetchone())
        else:
            rows = conn.execute(f"SELECT t::text FROM {name} t ORDER BY 1").fetchall()
            out[name] = f"{len(rows)}:" + "|".join("" if r[0] is None else r[0] for r in rows)
    return out


def schema_dump(env: dict[str, str], database: str) -> str:
    """pg_dump --schema-only without the lines that differ between any two runs."""
    out = subprocess.run(["pg_dump", "--schema-only", "-d", database], env=env, check=True,
                         capture_output=True, text=True).stdout
    return "\n".join(line for line in out.splitlines()
                     if not re.match(r"^\\(un)?restrict |^-- Dumped", line))
