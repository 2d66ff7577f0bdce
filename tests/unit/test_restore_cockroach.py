"""The restore's CockroachDB SQL, replayed against recorded server output.

No CockroachDB server runs here; the row shapes below are those CockroachDB's documentation
shows for SHOW DATABASES [WITH COMMENT], SHOW CLUSTER SESSIONS and SHOW session_id.
"""

from __future__ import annotations

import pytest

from enclave_backup import engines, maintenance, swapping
from enclave_backup.config import Config
from enclave_backup.errors import DatabaseError
from enclave_backup.db import Connections
from enclave_backup.engines import Client
from enclave_backup.engines.cockroachdb.engine import CockroachDB
from enclave_backup.engines.postgresql.engine import PostgreSQL
from enclave_backup.marker import marker, parse_marker

OWN_SESSION = "1530fd8813ad694b0000000000000009"
# SHOW CLUSTER SESSIONS, reduced to the columns the restore selects.
SESSIONS = [
    ("1530fd8813ad694b0000000000000001", "test_app", "192.168.0.72:56194"),
    (OWN_SESSION, "enclave-backup", "10.0.0.5:40000"),
    ("1530fd8813ad694b0000000000000002", "$ internal-create-stats", ""),
    ("1530fd8813ad694b0000000000000003", "cockroach", "127.0.0.1:51234"),
]
DATABASES = ["defaultdb", "malbork", "malbork_pre_restore_20250101000000", "malbork_pre_restore_20250301000000",
             "malbork_restoring_20250401000000", "malbork_other", "malbork_pre_restore_x", "postgres", "system"]


class Recorded:
    """A connection that logs statements and answers with recorded rows."""

    def __init__(self, answers: dict[str, list], fail: dict[str, Exception] | None = None):
        self.answers = answers
        self.fail = fail or {}
        self.statements: list[tuple[str, tuple | None]] = []

    def execute(self, sql, params=None):
        self.statements.append((sql, params))
        for prefix, exc in self.fail.items():
            if sql.startswith(prefix):
                raise exc
        rows = next((rows for prefix, rows in self.answers.items() if sql.startswith(prefix)), [])
        return _Result(rows)

    def sql(self) -> list[str]:
        return [s for s, _ in self.statements]


class _Result:
    def __init__(self, rows):
        self.rows = rows

    def fetchall(self):
        return list(self.rows)

    def fetchone(self):
        return self.rows[0] if self.rows else None


def crdb_conn(**fail) -> Recorded:
    return Recorded({
        "SELECT database_name FROM [SHOW DATABASES]": [(d,) for d in DATABASES],
        "SELECT comment FROM [SHOW DATABASES WITH COMMENT]": [(marker("k.sql.gz", "ab", "t"),)],
        "SHOW session_id": [(OWN_SESSION,)],
        "SELECT session_id, application_name, client_address FROM [SHOW CLUSTER SESSIONS]": SESSIONS,
    }, fail)


def test_cockroachdb_statements_use_its_syntax():
    sql = engines.get("cockroachdb")
    assert isinstance(sql, CockroachDB) and isinstance(engines.get("postgresql"), PostgreSQL)
    assert sql.create_sql(None, "malbork_restoring_20250101000000", "malbork") == \
        'CREATE DATABASE "malbork_restoring_20250101000000"'
    assert sql.drop_sql("malbork_pre_restore_1", force=False) == 'DROP DATABASE IF EXISTS "malbork_pre_restore_1" CASCADE'
    assert sql.rename_sql("malbork", 'odd"name') == 'ALTER DATABASE "malbork" RENAME TO "odd""name"'
    assert sql.comment_sql("malbork", "it's") == "COMMENT ON DATABASE \"malbork\" IS 'it''s'"
    assert sql.maintenance_databases[0] == "defaultdb" and sql.defers_views
    # PostgreSQL has no CASCADE here; FORCE ends the sessions of a dead run.
    assert PostgreSQL().drop_sql("x", force=True) == 'DROP DATABASE IF EXISTS "x" WITH (FORCE)'


def test_cockroachdb_marker_is_read_from_show_databases_with_comment():
    conn = crdb_conn()
    comment = CockroachDB().read_comment(conn, "malbork")
    assert conn.statements[-1] == ("SELECT comment FROM [SHOW DATABASES WITH COMMENT] WHERE database_name = %s",
                                   ("malbork",))
    assert parse_marker(comment) == {"restored_by": "enclave-backup", "key": "k.sql.gz", "sha256": "ab",
                                     "restored_at": "t"}
    assert parse_marker(None) is None and parse_marker("a comment a user wrote") is None
    assert parse_marker('{"key": "k.sql.gz"}') is None  # not ours


def test_cockroachdb_never_lists_or_ends_sessions():
    # The server cannot say which database a session uses: pg_stat_activity is empty
    # (pkg/sql/pg_catalog.go @ 68e2d7e44a79a1e5fbd50aced79fa1521085db7a, "empty - monitoring
    # works differently in CockroachDB") and SHOW CLUSTER SESSIONS has no database column, so
    # any session count would include other applications' sessions.
    conn = crdb_conn()
    sql = CockroachDB()
    assert sql.clients(conn, "malbork") == [] and conn.sql() == []
    assert not sql.sees_clients
    with pytest.raises(AssertionError):
        sql.terminate(conn, Client("1530fd8813ad694b0000000000000001", "test_app", ""))


def test_leftover_scratch_and_old_previous_databases_are_found_by_name():
    conn = crdb_conn()
    sql = CockroachDB()
    conns = Connections(conn, "defaultdb", open_session=None)  # CockroachDB drops open no other session
    maintenance.drop_leftovers(conns, sql, "malbork")
    assert maintenance.keep_previous(conns, sql, "malbork", keep=1) == ["malbork_pre_restore_20250101000000"]
    assert [s for s in conn.sql() if s.startswith("DROP")] == [
        'DROP DATABASE IF EXISTS "malbork_restoring_20250401000000" CASCADE',
        'DROP DATABASE IF EXISTS "malbork_pre_restore_20250101000000" CASCADE']


def _config(**overrides) -> Config:
    return Config(bucket="b", restore_wait_for_clients_seconds=0.2, progress_interval=0.1, **overrides)


def test_cockroachdb_restore_does_not_wait_for_or_cancel_anyone(capsys):
    conn = crdb_conn()
    swapping.wait_for_clients(_config(restore_terminate_clients=True), conn, CockroachDB(), "malbork")
    assert conn.sql() == []
    assert "cannot tell which database a session uses" in capsys.readouterr().out


def test_postgresql_still_waits_for_the_clients_of_the_database():
    conn = Recorded({"SELECT pid": [(42, "manager", "10.0.0.7")]})
    with pytest.raises(DatabaseError, match=r"1 client\(s\) still connected to 'malbork'.*manager"):
        swapping.wait_for_clients(_config(), conn, PostgreSQL(), "malbork")
    assert conn.statements[0][1] == ("malbork",)  # filtered by pg_stat_activity.datname
