"""The restore's load step as CockroachDB uses it, run live on PostgreSQL: view statements held back,
INSERT batches over several connections where their order cannot show.

The scratch database must hold no views when it is renamed (CockroachDB refuses the
rename otherwise; see test_swap_views_cockroach.py), so load() keeps them for the swap,
while table data, one INSERT batch per statement, commits as it goes.
"""

from __future__ import annotations

import hashlib
import io

import pytest

from enclave_backup import db, replay
from enclave_backup.copyfanout import FanOut
from enclave_backup.db import Connections
from enclave_backup.config import Config
from enclave_backup.manifest import Manifest
from enclave_backup.engines.cockroachdb.swap import HoldBack
from enclave_backup.errors import DatabaseError
from enclave_backup.postdata import PostData
from enclave_backup.sqlscript import Statement

SCRIPT = b"""-- enclave-backup dump
-- engine: cockroachdb
CREATE TABLE public.parent (x INT8, note TEXT);
INSERT INTO "public"."parent" ("x", "note") VALUES ('1'::INT8, e'a\\nb'::TEXT), ('2'::INT8, NULL);
INSERT INTO "public"."parent" ("x", "note") VALUES ('3'::INT8, 'CREATE VIEW is data here'::TEXT);
COMMENT ON TABLE public.parent IS 'CREATE VIEW';
-- views
CREATE VIEW public.v (x) AS SELECT x FROM public.parent;
COMMENT ON VIEW public.v IS 'kept for the swap';
CREATE MATERIALIZED VIEW public.mv (s) AS SELECT sum(x) FROM public.parent;
"""


class Reader(io.BytesIO):
    """The object as Storage.open_read hands it out, in small pieces: statements span reads."""

    def read(self, size=-1):
        return super().read(7)


class Storage:
    bucket = "b"

    def __init__(self, script: bytes = SCRIPT):
        self.script = script
        self.objects: dict[str, bytes] = {}
        self.deleted: list[str] = []

    def open_read(self, key):
        assert any(k.startswith(key + ".reader-") for k in self.objects), "read before the reader marker"
        return Reader(self.script)

    def put_bytes(self, key, data, content_type):
        self.objects[key] = data

    def delete(self, key):
        self.deleted.append(key)
        self.objects.pop(key)


def load(pg, dbname, monkeypatch, storage: Storage, **settings) -> replay.Loaded:
    for name, value in pg.env(dbname).items():
        monkeypatch.setenv(name, value)
    script = storage.script
    manifest = Manifest(key="k", database="malbork", engine="cockroachdb", server_version="v24.1.0",
                        started_at="", finished_at="", compression="none", stored_size=len(script),
                        sha256=hashlib.sha256(script).hexdigest(), uncompressed_size=len(script))
    config = Config(bucket="b", **settings)
    open_session = db.opener(config)
    with Connections(open_session("postgres"), "postgres", open_session) as conns:
        return replay.load(config, conns, storage, "k", manifest, dbname, defer=HoldBack())


def test_load_keeps_view_statements_for_the_swap_and_commits_the_data(pg, dbname, monkeypatch):
    storage = Storage()
    loaded = load(pg, dbname, monkeypatch, storage)
    # The reader marker that keeps prune away was there while reading, and is gone.
    assert storage.objects == {} and [k.startswith("k.reader-") for k in storage.deleted] == [True]
    assert loaded.deferred == ["CREATE VIEW public.v (x) AS SELECT x FROM public.parent",
                               "COMMENT ON VIEW public.v IS 'kept for the swap'",
                               "CREATE MATERIALIZED VIEW public.mv (s) AS SELECT sum(x) FROM public.parent"]
    assert loaded.rows == 3 and loaded.statements == 7
    with pg.connect(dbname) as conn:
        assert conn.execute("SELECT x, note FROM parent ORDER BY x").fetchall() == [
            (1, "a\nb"), (2, None), (3, "CREATE VIEW is data here")]
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relkind IN ('v', 'm') "
                            "AND relnamespace = 'public'::regnamespace").fetchone()[0] == 0


def batch(table: str, columns: list[str], rows) -> str:
    """One statement as insertbatch writes it: quoted names, literals with casts."""
    names = ", ".join(f'"{c}"' for c in columns)
    values = ", ".join("(" + ", ".join(row) + ")" for row in rows)
    return f'INSERT INTO "public"."{table}" ({names}) VALUES {values};\n'


BATCHES = 150
ROWS = 20


def parallel_script(bad_batch: int | None = None) -> bytes:
    keyed = [batch("keyed", ["id", "at", "note"],
                   [(f"'{b * ROWS + i}'::INT8" if b != bad_batch else "'x'::INT8",
                     "'2024-01-01 09:00:00'::TIMESTAMPTZ", f"'row {b}.{i}'::TEXT") for i in range(ROWS)])
             for b in range(BATCHES)]
    unkeyed = [batch("unkeyed", ["n"], [(f"'{b * ROWS + i}'::INT8",) for i in range(ROWS)]) for b in range(BATCHES)]
    numbered = [batch("numbered", ["v"], [(f"'{b * ROWS + i}'::INT8",) for i in range(ROWS)]) for b in range(BATCHES)]
    child = [batch("child", ["k"], [(f"'{b * ROWS + i}'::INT8",) for i in range(ROWS)]) for b in range(BATCHES)]
    return ("-- enclave-backup dump\n-- engine: cockroachdb\n"
            "CREATE TABLE public.keyed (id INT8 PRIMARY KEY, at TIMESTAMPTZ, note TEXT);\n"
            "CREATE TABLE public.unkeyed (n INT8);\n"
            "CREATE TABLE public.numbered (id INT8 GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v INT8);\n"
            "CREATE TABLE public.child (k INT8);\n"
            "SET TimeZone = 'Asia/Tokyo';\n"
            + "".join(child) + "".join(unkeyed) + "".join(numbered)
            + "BEGIN;\n" + batch("keyed", ["id"], [("'-1'::INT8",)]) + batch("keyed", ["id"], [("'-2'::INT8",)])
            + "COMMIT;\n" + "".join(keyed)
            # As the dump's foreign keys come after the data: it finds every key only once every batch committed.
            + "ALTER TABLE public.child ADD CONSTRAINT child_k_fkey FOREIGN KEY (k) REFERENCES public.keyed (id);\n"
            ).encode()


FIRST_KEYED_LINE = 8 + 3 * BATCHES + 4  # after the header, the tables, the SET, three tables' rows, a transaction


def test_batches_of_keyed_tables_run_on_several_connections_and_the_rest_in_script_order(pg, dbname, monkeypatch):
    loaded = load(pg, dbname, monkeypatch, Storage(parallel_script()))
    total = BATCHES * ROWS
    assert loaded.rows == 4 * total + 2 and loaded.statements == 5 + 4 * BATCHES + 5
    assert loaded.connections == 2  # restore.jobs' default: the keyed table's batches went over both
    with pg.connect(dbname) as conn:
        # Every loader ran the script's SET before its batches: 09:00 in Tokyo is midnight UTC.
        assert conn.execute("SELECT count(*) FROM keyed WHERE at = '2024-01-01 00:00:00+00'").fetchone()[0] == total
        assert conn.execute("SELECT count(*), min(id), max(id) FROM keyed WHERE id >= 0").fetchone() == \
            (total, 0, total - 1)
        # No key: the rows lie in the order the script has them. A key the server numbers: numbered in that order.
        assert [n for n, in conn.execute("SELECT n FROM unkeyed")] == list(range(total))
        assert conn.execute("SELECT count(*) FROM numbered WHERE id <> v + 1").fetchone()[0] == 0
        # The script's own transaction stayed one, on the main connection.
        assert conn.execute("SELECT count(DISTINCT xmin::text) FROM keyed WHERE id < 0").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE conname = 'child_k_fkey'").fetchone()[0] == 1


def test_a_failing_batch_stops_the_load_with_its_line_and_nothing_after_it_runs(pg, dbname, monkeypatch):
    line = FIRST_KEYED_LINE + 50
    with pytest.raises(DatabaseError, match=rf"the statement at line {line} failed: .*invalid input syntax"):
        load(pg, dbname, monkeypatch, Storage(parallel_script(bad_batch=50)))
    with pg.connect(dbname) as conn:
        assert conn.execute("SELECT count(*) FROM keyed WHERE id >= 0").fetchone()[0] < BATCHES * ROWS
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE conname = 'child_k_fkey'").fetchone()[0] == 0


def test_one_job_loads_every_batch_on_the_main_connection(pg, dbname, monkeypatch):
    loaded = load(pg, dbname, monkeypatch, Storage(parallel_script()), restore_jobs=1)
    assert loaded.rows == 4 * BATCHES * ROWS + 2 and loaded.connections == 1


def test_a_stopped_load_runs_none_of_the_batches_still_queued(pg, dbname):
    with pg.connect(dbname) as conn:
        conn.execute("CREATE TABLE t (n int)")
    fanout = FanOut(lambda: pg.connect(dbname), 1)
    post = PostData(fanout, capture=lambda main: lambda loader: None)
    for n in range(4):
        sql = f"INSERT INTO t SELECT {n} FROM pg_sleep(0.3)"
        post.submit(None, Statement(sql, n + 1, data=sql.encode()))
    post.close()  # as the load's `with` does when SIGTERM or an error ends it: the first may still run
    fanout.close()
    with pg.connect(dbname) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] <= 1
