"""devkit.wireserver with the real psycopg client: startup, both query protocols, types, errors,
transactions, and the loud failure of a statement nobody recorded an answer for."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from decimal import Decimal

import psycopg
import pytest
from psycopg import generators
from psycopg.pq import ExecStatus
from psycopg.waiting import wait

from devkit.wireserver import (BOOL, CRDB_VERSION, FLOAT8, INT8, NUMERIC, TEXT, TIMESTAMP, TIMESTAMPTZ, Done, Fail,
                               Rows, WireServer, command_tag)

TYPES = Rows([("t", TEXT), ("i", INT8), ("f", FLOAT8), ("b", BOOL), ("ts", TIMESTAMP), ("tz", TIMESTAMPTZ),
              ("n", NUMERIC)],
             [("héllo", 9007199254740993, 0.25, True, datetime(2024, 7, 31, 1, 2, 3, 456789),
               datetime(2024, 7, 31, 1, 2, 3, 456789, tzinfo=timezone.utc), "1765072500123456789.0000000000"),
              (None, None, None, False, None, None, None)])


def echo(sql, params):
    return Rows([(f"p{i}", TEXT) for i in range(len(params))], [tuple(map(repr, params))])


RULES = [
    (re.compile(r"^SELECT version\(\)$"), Rows([("version", TEXT)], [(CRDB_VERSION,)])),
    (re.compile(r"^SELECT typed$"), TYPES),
    (re.compile(r"^SELECT echo"), echo),
    ("SELECT licence", Fail("XXC02", "use of BACKUP with revision_history requires an enterprise license.")),
    ("SELECT denied", Fail("42501", "user backup does not have EXTERNALCONNECTION system privilege",
                           hint="GRANT SYSTEM EXTERNALCONNECTION TO backup")),
    (re.compile(r"^CREATE EXTERNAL CONNECTION "), Done()),
    (re.compile(r"^CANCEL JOB "), Done("CANCEL JOBS 1")),
]


@pytest.fixture(scope="module")
def server():
    with WireServer(RULES) as srv:
        yield srv


def connect(server: WireServer, **kwargs) -> psycopg.Connection:
    return psycopg.connect(host=server.host, port=server.port, user="root", dbname="defaultdb", sslmode="prefer",
                           connect_timeout=5, **kwargs)


def test_startup_announces_cockroachdb(server):
    with connect(server, application_name="enclave-backup") as conn:
        info = conn.info
        assert info.server_version == 130000
        assert info.parameter_status("crdb_version") == CRDB_VERSION
        assert info.parameter_status("application_name") == "enclave-backup"
        assert info.parameter_status("is_superuser") == "on"
        assert info.parameter_status("DateStyle") == "ISO, MDY"
        assert info.backend_pid > 0
        assert conn.pgconn.ssl_in_use is False
        assert server.sessions[-1].startup["user"] == "root"
        assert server.sessions[-1].startup["database"] == "defaultdb"


def test_values_arrive_as_python_types(server):
    with connect(server, autocommit=True) as conn:
        cur = conn.execute("SELECT typed")
        assert [c.type_code for c in cur.description] == [25, 20, 701, 16, 1114, 1184, 1700]
        first, second = cur.fetchall()
        assert first == ("héllo", 9007199254740993, 0.25, True, datetime(2024, 7, 31, 1, 2, 3, 456789),
                         datetime(2024, 7, 31, 1, 2, 3, 456789, tzinfo=timezone.utc),
                         Decimal("1765072500123456789.0000000000"))
        assert second == (None, None, None, False, None, None, None)
        assert cur.statusmessage == "SELECT 2"
        # Asked for binary results, the server still answers in text, and says so.
        assert conn.cursor(binary=True).execute("SELECT typed").fetchone()[1] == 9007199254740993


def test_parameters_are_decoded_and_recorded(server):
    with connect(server, autocommit=True) as conn:
        before = len(server.statements)
        row = conn.execute("SELECT echo %s, %s, %s, %s, %s, %s, %s",
                           (7, 2**40, 10**30, "it's", None, True, 1.5)).fetchone()
        assert row == ("7", "1099511627776", "Decimal('1000000000000000000000000000000')", '"it\'s"', "None",
                       "True", "1.5")
        sql, params, _ = server.statements[before]
        assert sql == "SELECT echo $1, $2, $3, $4, $5, $6, $7"
        assert params == (7, 2**40, Decimal(10**30), "it's", None, True, 1.5)
        assert server.sessions[-1].statements[-1].params == params
        assert server.matching(re.compile(r"^SELECT echo"))[-1].params == params
        # Repeated, psycopg prepares the statement (a named Parse, Bind after Bind).
        for n in range(7):
            assert conn.execute("SELECT echo %s", (n,), prepare=True).fetchone() == (str(n),)


def test_failures_carry_their_sqlstate(server):
    with connect(server, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as licence:
            conn.execute("SELECT licence")
        assert licence.value.sqlstate == "XXC02"
        assert "enterprise license" in str(licence.value)
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as denied:
            conn.execute("SELECT denied", ())  # extended protocol
        assert denied.value.diag.message_hint == "GRANT SYSTEM EXTERNALCONNECTION TO backup"
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("SELECT version()").fetchone() == (CRDB_VERSION,)


def test_unrecorded_statement_fails_loudly(server):
    with connect(server, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InternalError_) as missing:
            conn.execute("DROP TABLE nobody_recorded_this")
        assert missing.value.sqlstate == "XX000"
        assert str(missing.value) == "no recorded answer for: DROP TABLE nobody_recorded_this"
        # What client libraries send themselves has an answer.
        assert conn.execute("SHOW transaction_isolation").fetchone() == ("serializable",)
        assert conn.execute("SET statement_timeout = 0").statusmessage == "SET"


def test_lenient_server_completes_commands():
    with WireServer(strict=False) as srv, connect(srv, autocommit=True) as conn:
        assert conn.execute('DROP EXTERNAL CONNECTION "x"').statusmessage == "DROP EXTERNAL CONNECTION"
        with pytest.raises(psycopg.errors.InternalError_):
            conn.execute("SELECT 1")


def test_commands_and_tags(server):
    with connect(server, autocommit=True) as conn:
        cur = conn.execute("CREATE EXTERNAL CONNECTION \"c\" AS %s", ("s3://b/f?AUTH=implicit",))
        assert cur.statusmessage == "CREATE EXTERNAL CONNECTION"
        assert cur.description is None
        assert conn.execute("CANCEL JOB 42").statusmessage == "CANCEL JOBS 1"
    assert command_tag("CREATE TABLE t (a INT)") == "CREATE TABLE"
    assert command_tag("ALTER DATABASE x RENAME TO y") == "ALTER DATABASE"
    assert command_tag("COMMENT ON DATABASE x IS 'y'") == "COMMENT"
    assert command_tag("INSERT INTO t VALUES (1)") == "INSERT 0 0"


def test_transactions_track_status(server):
    status = psycopg.pq.TransactionStatus
    with connect(server) as conn:
        start = len(server.statements)
        conn.execute("SELECT version()")
        assert conn.info.transaction_status == status.INTRANS
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT denied")
        assert conn.info.transaction_status == status.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT version()")
        conn.rollback()
        assert conn.info.transaction_status == status.IDLE
        with conn.transaction():
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                with conn.transaction():  # a savepoint, rolled back to
                    conn.execute("SELECT denied")
            assert conn.execute("SELECT version()").fetchone() == (CRDB_VERSION,)
        assert conn.info.transaction_status == status.IDLE
        sent = [s.sql for s in server.statements[start:]]
        assert sent[:5] == ["BEGIN", "SELECT version()", "SELECT denied", "SELECT version()", "ROLLBACK"]
        assert sent[-1] == "COMMIT"
        assert any(s.startswith("ROLLBACK TO") for s in sent)


def test_stateful_answers_and_simple_protocol_batches():
    polls = iter(["running", "running", "succeeded"])
    rules = [(re.compile(r"crdb_internal\.jobs WHERE job_id = \$1"),
              lambda sql, params: Rows([("status", TEXT), ("job_id", INT8)], [(next(polls), params[0])]))]
    with WireServer(rules) as srv, connect(srv, autocommit=True) as conn:
        seen = [conn.execute("SELECT status FROM crdb_internal.jobs WHERE job_id = %s", (9,)).fetchone()
                for _ in range(3)]
        assert seen == [("running", 9), ("running", 9), ("succeeded", 9)]
        cur = conn.cursor()
        cur.execute("BEGIN; SET a = 1; COMMIT")  # one Query, three statements
        assert [s.sql for s in srv.statements[-3:]] == ["BEGIN", "SET a = 1", "COMMIT"]
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        cur.execute("")
        assert cur.pgresult.status == psycopg.pq.ExecStatus.EMPTY_QUERY


def test_describe_prepared_and_pipeline(server):
    with connect(server, autocommit=True) as conn:
        pgconn = conn.pgconn  # Parse + Sync, then Describe (statement) + Sync, as libpq sends them
        pgconn.send_prepare(b"s1", b"SELECT typed")
        assert [r.status for r in wait(generators.execute(pgconn), pgconn.socket)] == [ExecStatus.COMMAND_OK]
        pgconn.send_describe_prepared(b"s1")
        (described,) = wait(generators.execute(pgconn), pgconn.socket)
        assert [described.ftype(i) for i in range(described.nfields)] == [25, 20, 701, 16, 1114, 1184, 1700]
        with conn.pipeline():
            first = conn.execute("SELECT echo %s", (1,))
            second = conn.execute("SELECT version()", ())
        assert first.fetchone() == ("1",) and second.fetchone() == (CRDB_VERSION,)


def test_killed_connections_and_terminate():
    with WireServer(RULES) as srv:
        conn = connect(srv, autocommit=True)
        srv.kill_connections()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT version()")
        conn.close()
        with connect(srv, autocommit=True) as again:
            assert again.execute("SELECT version()").fetchone() == (CRDB_VERSION,)
        deadline = time.monotonic() + 2
        while srv._live and time.monotonic() < deadline:  # Terminate ends the session on the server too
            time.sleep(0.01)
        assert not srv._live
    with pytest.raises(psycopg.OperationalError):
        connect(srv)
