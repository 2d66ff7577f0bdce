"""The restore's load step as CockroachDB uses it, run live on PostgreSQL: view statements held back.

The scratch database must hold no views when it is renamed (CockroachDB refuses the
rename otherwise; see test_swap_views_cockroach.py), so load() keeps them for the swap,
while table data, one INSERT batch per statement, commits as it goes.
"""

from __future__ import annotations

import hashlib
import io

from enclave_backup import db, replay
from enclave_backup.db import Connections
from enclave_backup.config import Config
from enclave_backup.manifest import Manifest
from enclave_backup.engines.cockroachdb.swap import HoldBack

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

    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.deleted: list[str] = []

    def open_read(self, key):
        assert any(k.startswith(key + ".reader-") for k in self.objects), "read before the reader marker"
        return Reader(SCRIPT)

    def put_bytes(self, key, data, content_type):
        self.objects[key] = data

    def delete(self, key):
        self.deleted.append(key)
        self.objects.pop(key)


def test_load_keeps_view_statements_for_the_swap_and_commits_the_data(pg, dbname, monkeypatch):
    for name, value in pg.env(dbname).items():
        monkeypatch.setenv(name, value)
    manifest = Manifest(key="k", database="malbork", engine="cockroachdb", server_version="v24.1.0",
                        started_at="", finished_at="", compression="none", stored_size=len(SCRIPT),
                        sha256=hashlib.sha256(SCRIPT).hexdigest(), uncompressed_size=len(SCRIPT))
    storage = Storage()
    config = Config(bucket="b")
    open_session = db.opener(config)
    with Connections(open_session("postgres"), "postgres", open_session) as conns:
        loaded = replay.load(config, conns, storage, "k", manifest, dbname, defer=HoldBack())
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
