"""The recorded CockroachDB of tests/unit/crdb_recorded/native.py answers RESTORE and the database
statements as CockroachDB does: the checks the program's own runs do not reach (it refuses first)."""

from __future__ import annotations

import runpy
from pathlib import Path

import psycopg
import pytest

from devkit.wireserver import WireServer

RECORDED = runpy.run_path(str(Path(__file__).parent / "crdb_recorded" / "native.py"))
COLLECTION = "s3://bkt/nightly/native/malbork-0"
URL = COLLECTION + "?AWS_ACCESS_KEY_ID=AK&AWS_SECRET_ACCESS_KEY=SK&AWS_REGION=us-east-1"
JOB_SQL = ("SELECT status, coalesce(fraction_completed, 0)::FLOAT8, coalesce(error, ''), "
           "coalesce(running_status, '') FROM crdb_internal.jobs WHERE job_id = %s")
FULL, INC = "1765072500123456789.0000000000", "1765076100123456789.0000000000"


@pytest.fixture
def cluster():
    rules = RECORDED["cockroach_rules"](job_states=["succeeded"])
    with WireServer(rules, crdb_version=rules.version) as server, \
            psycopg.connect(**{"host": server.host, "port": server.port, "user": "root", "dbname": "defaultdb",
                               "sslmode": "disable"}, autocommit=True) as conn:
        yield rules, conn


def restore(conn, folder: str, as_of: str, name: str = "malbork_restoring_1"):
    return conn.execute(f"RESTORE DATABASE \"malbork\" FROM '{folder}' IN '{URL}' AS OF SYSTEM TIME {as_of} "
                        f"WITH detached, new_db_name = '{name}'").fetchone()[0]


def test_restore_to_a_layers_end_creates_the_database_when_the_job_succeeds(cluster):
    rules, conn = cluster
    folder = RECORDED["folder_of"](FULL)
    rules.seed_chain(COLLECTION, folder, [FULL, INC])
    job = restore(conn, folder, FULL)
    assert "malbork_restoring_1" not in rules.databases
    assert conn.execute(JOB_SQL, (job,)).fetchone()[0] == "succeeded"
    assert "malbork_restoring_1" in rules.databases
    with pytest.raises(psycopg.Error, match='database "malbork_restoring_1" already exists'):
        restore(conn, folder, INC)


def test_restore_between_layers_needs_revision_history(cluster):
    rules, conn = cluster
    folder = RECORDED["folder_of"](FULL)
    rules.seed_chain(COLLECTION, folder, [FULL, INC])
    with pytest.raises(psycopg.Error, match=r"restoring to arbitrary time requires that BACKUP for requested time be "
                                            r"created with 'revision_history' option\. nearest BACKUP times are "
                                            r"2025-12-07 01:55:00\.123456789 \+0000 UTC or 2025-12-07 "
                                            r"02:55:00\.123456789 \+0000 UTC"):
        restore(conn, folder, "'2025-12-07 02:00:00+00:00'")
    with pytest.raises(psycopg.Error, match="nearest backup time is 2025-12-07 01:55:00.123456789 "):
        restore(conn, folder, "'2025-12-07 01:55:00.123456+00:00'")  # the end to the microsecond only
    with pytest.raises(psycopg.Error, match="supplied backups do not cover requested time"):
        restore(conn, folder, "'2025-12-07 03:00:00+00:00'")
    other = RECORDED["folder_of"](INC)
    rules.seed_chain(COLLECTION, other, [INC], revision_history=True)
    assert restore(conn, other, "'2025-12-07 02:00:00+00:00'")


def test_restore_refuses_a_newer_releases_backup_and_a_missing_one(cluster):
    rules, conn = cluster
    folder = RECORDED["folder_of"](FULL)
    rules.seed_chain(COLLECTION, folder, [FULL], version="CockroachDB CCL v24.3.1 (x)")
    with pytest.raises(psycopg.Error, match="backup from version 24.3 is newer than current version 24.1"):
        restore(conn, folder, FULL)
    with pytest.raises(psycopg.Error, match="no backup found"):
        restore(conn, "/2020/01/01-000000.00", FULL)


def test_databases_comments_and_renames_are_state(cluster):
    rules, conn = cluster
    conn.execute("""COMMENT ON DATABASE "malbork" IS '{"k": "it''s"}'""")
    conn.execute('ALTER DATABASE "malbork" RENAME TO "malbork_pre_restore_1"')
    conn.execute('CREATE DATABASE "malbork"')
    names = [r[0] for r in conn.execute("SELECT database_name FROM [SHOW DATABASES]").fetchall()]
    assert names == ["defaultdb", "malbork", "malbork_pre_restore_1", "postgres", "system"]
    comment = "SELECT comment FROM [SHOW DATABASES WITH COMMENT] WHERE database_name = %s"
    assert conn.execute(comment, ("malbork_pre_restore_1",)).fetchone() == ('{"k": "it\'s"}',)
    assert conn.execute(comment, ("malbork",)).fetchone() == (None,)
    with pytest.raises(psycopg.Error, match='the new database name "malbork" already exists'):
        conn.execute('ALTER DATABASE "malbork_pre_restore_1" RENAME TO "malbork"')
    with pytest.raises(psycopg.Error, match='database "gone" does not exist'):
        conn.execute('COMMENT ON DATABASE "gone" IS \'x\'')
    conn.execute('DROP DATABASE IF EXISTS "malbork_pre_restore_1" CASCADE')
    conn.execute('DROP DATABASE IF EXISTS "malbork_pre_restore_1" CASCADE')
    assert "malbork_pre_restore_1" not in rules.databases
    with pytest.raises(psycopg.Error, match="no recorded answer"):  # statements nobody recorded still fail
        conn.execute("SELECT * FROM crdb_internal.create_statements")
