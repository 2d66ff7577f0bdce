"""The native method's CockroachDB side: URLs, statements, job states, version rules and retention of chains.

No CockroachDB server runs here. What CockroachDB accepts and answers is taken from its source
and documentation, each named where it is used:
- URL parameters and addressing: cockroachdb/cockroach pkg/cloud/amazon/s3_storage.go @
  003d36c3d9a990ff753a363937d911050c637f8a (aws-sdk-go v1: `S3ForcePathStyle = aws.Bool(true)` with an
  endpoint; `cloud.RedactedParams(AWSSecretParam, AWSTempTokenParam)`), and the release notes of
  AWS_USE_PATH_STYLE in cockroachdb/docs@79e9a5d03f4b01203131e71af49a6f2eaae9ff63
  (src/current/_includes/releases/v24.3/v24.3.3.md, v25.1/v25.1.0-alpha.1.md, v24.1/v24.1.10.md).
- Folder names: pkg/backup/backupbase/constants.go @ 051090638ee981c80695768e5ac4b7a7ff9fa5d3
  (`DateBasedIntoFolderName = "/2006/01/02-150405.00"`, `DefaultIncrementalsSubdir = "incrementals"`).
- Job states: pkg/jobs/jobs.go @ 09ba9d5eaf9dbac1c562fb335f1fa516f1179c88 and docs src/current/v26.1/show-jobs.md.
- SHOW BACKUP rows: docs src/current/v24.3/show-backup.md ("View a list of the full and incremental backups").
- Restores across versions: docs src/current/v24.3/restoring-backups-across-versions.md.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import psycopg
import pytest
import structlog.testing

from enclave_backup.config import Config
from enclave_backup.engines.cockroachdb import jobs, native
from enclave_backup.errors import ConfigError, DatabaseError
from enclave_backup.retention import Decision, Link, chains_gone, keep_chains

KEYS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEYID", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}
RGW = native.Store("backups", "team/native/malbork-1a2b3c4d", endpoint="https://rgw.example:7480", region="")
AWS = native.Store("backups", "native/malbork-1a2b3c4d", region="eu-central-1")
IBM = native.Store("backups", "native/malbork-1a2b3c4d",
                   endpoint="https://s3.eu-de.cloud-object-storage.appdomain.cloud", region="eu-de")


def params(url: str) -> dict[str, str]:
    return dict(p.split("=", 1) for p in url.split("?", 1)[1].split("&"))


@pytest.mark.parametrize("release, path_param", [
    ((23, 2, 9), None),  # sdk v1: an endpoint is addressed path-style; the parameter is unknown there
    ((24, 1, 10), None),  # a no-op there: not sent
    ((24, 3, 3), "true"),  # sdk v2: virtual-hosted unless asked
    ((25, 1, 0), "true"),
    ((25, 4, 1), "true"),
])
def test_a_self_hosted_store_is_addressed_path_style_on_every_version(release, path_param):
    url = native.collection_url(RGW, release, KEYS)
    assert url.startswith("s3://backups/team/native/malbork-1a2b3c4d?")
    got = params(url)
    assert got.get("AWS_USE_PATH_STYLE") == path_param
    assert got["AWS_ENDPOINT"] == "https%3A%2F%2Frgw.example%3A7480"
    assert got["AWS_REGION"] == "us-east-1"  # the SDK needs one
    assert got["AWS_ACCESS_KEY_ID"] == KEYS["AWS_ACCESS_KEY_ID"]
    assert got["AWS_SECRET_ACCESS_KEY"] == "wJalrXUtnFEMI%2FK7MDENG%2BbPxRfiCYEXAMPLEKEY"  # '/' and '+' encoded


def test_24_3_before_3_cannot_address_a_self_hosted_store_path_style():
    with pytest.raises(ConfigError, match=r"24\.3\.3 or later.*PathStyle=false"):
        native.collection_url(RGW, (24, 3, 1), KEYS)
    # A store that serves <bucket>.<host> names works when asked for virtual-hosted addressing.
    url = native.collection_url(native.Store(**{**RGW.__dict__, "path_style": "false"}), (24, 3, 1), KEYS)
    assert "AWS_USE_PATH_STYLE" not in url


def test_virtual_hosted_addressing_needs_24_3():
    store = native.Store(**{**IBM.__dict__, "path_style": "false"})
    with pytest.raises(ConfigError, match="needs CockroachDB 24.3"):
        native.collection_url(store, (24, 1, 3), KEYS)
    assert "AWS_USE_PATH_STYLE" not in native.collection_url(store, (25, 2, 0), KEYS)


def test_aws_itself_and_the_nodes_own_credentials():
    url = native.collection_url(AWS, (24, 3, 5), {})
    assert params(url) == {"AUTH": "implicit", "AWS_REGION": "eu-central-1"}
    sse = native.Store(**{**AWS.__dict__, "sse_mode": "aws:kms", "kms_key_id": "arn:aws:kms:eu:1:key/x"})
    got = params(native.collection_url(sse, (24, 3, 5), KEYS))
    assert got["AWS_SERVER_ENC_MODE"] == "aws%3Akms" and got["AWS_SERVER_KMS_ID"].startswith("arn%3Aaws")


def test_the_store_comes_from_the_pods_environment_and_ssec_is_refused():
    config = Config(bucket="backups", sse="AES256")
    env = {"AWS_ENDPOINT_URL": "https://rgw.example:7480/", "AWS_DEFAULT_REGION": "zone", **KEYS}
    store = native.store_for(config, "native/m-1", env)
    assert (store.endpoint, store.region, store.sse_mode) == ("https://rgw.example:7480", "zone", "AES256")
    assert native.credentials(env) == KEYS
    with pytest.raises(ConfigError, match="SSE-C"):
        native.store_for(Config(bucket="b", sse="SSE-C", sse_customer_key_file="/k"), "f", env)


def test_credentials_are_redacted_from_any_text_and_the_shown_url():
    url = native.collection_url(RGW, (24, 3, 3), {**KEYS, "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEXAMPLETOKEN"})
    message = f"pq: failed to write to {url}: 403 Forbidden"
    redacted = native.redact(message)
    for secret in (*KEYS.values(), "wJalrXUtnFEMI%2FK7MDENG%2BbPxRfiCYEXAMPLEKEY", "FwoGZXIvYXdzEXAMPLETOKEN"):
        assert secret not in redacted
    assert "AWS_SECRET_ACCESS_KEY=redacted" in redacted and "403 Forbidden" in redacted
    shown = native.shown_url(url)
    assert shown == ("s3://backups/team/native/malbork-1a2b3c4d?AWS_ENDPOINT=https%3A%2F%2Frgw.example%3A7480"
                     "&AWS_REGION=us-east-1&AWS_USE_PATH_STYLE=true")
    # The job description CockroachDB itself shows (docs v24.3 manage-a-backup-schedule.md) keeps the key id.
    shown_by_crdb = ("BACKUP INTO '/2020/09/15-161444.99' IN 's3://test/scheduled-backup-0915?AWS_ACCESS_KEY_ID=x"
                     "&AWS_SECRET_ACCESS_KEY=redacted' AS OF SYSTEM TIME '2020-09-15 16:14:44.991631+00:00' "
                     "WITH revision_history, detached")
    assert "AWS_ACCESS_KEY_ID=redacted" in native.redact(shown_by_crdb)


def test_backup_and_restore_statements():
    hlc = "1765072500123456789.0000000001"
    assert native.backup_sql("malbork", "external://enclave_backup_1", hlc, True) == (
        "BACKUP DATABASE \"malbork\" INTO 'external://enclave_backup_1' AS OF SYSTEM TIME "
        "1765072500123456789.0000000001 WITH detached, revision_history")
    assert native.backup_sql('it"s', "s3://b/f?x='y'", hlc, False, "/2025/12/07-015500.12") == (
        "BACKUP DATABASE \"it\"\"s\" INTO '/2025/12/07-015500.12' IN 's3://b/f?x=''y''' AS OF SYSTEM TIME "
        "1765072500123456789.0000000001 WITH detached")
    with pytest.raises(DatabaseError):
        native.backup_sql("malbork", "x", "1; DROP DATABASE malbork", True)
    assert native.restore_sql("malbork", "/2025/12/07-015500.12", "external://c", "malbork_restoring_1", hlc) == (
        "RESTORE DATABASE \"malbork\" FROM '/2025/12/07-015500.12' IN 'external://c' AS OF SYSTEM TIME "
        "1765072500123456789.0000000001 WITH detached, new_db_name = 'malbork_restoring_1'")


@pytest.mark.parametrize("release, expected", [
    ((21, 2, 17), "SHOW BACKUP '/f' IN 'c'"),
    ((22, 1, 0), "SHOW BACKUP FROM '/f' IN 'c'"),
])
def test_show_backup_per_version(release, expected):
    assert native.show_backup_sql("/f", "c", release) == expected


def test_the_full_backups_folder_is_its_end_time_in_hundredths():
    # docs v24.3 show-backup.md: SHOW BACKUP FROM '2022/04/08-142355.33' lists end_time 2022-04-08 14:23:55.33557.
    end = datetime(2022, 4, 8, 14, 23, 55, 335570, tzinfo=timezone.utc)
    assert native.full_folder(end) == "/2022/04/08-142355.33"
    assert native.hlc_to_datetime("1649427835335570123.0000000002") == end
    assert native.full_folder(native.hlc_to_datetime("1649427835335570123.0000000002")) == "/2022/04/08-142355.33"


def test_as_of_is_rfc_3339_with_a_zone():
    assert native.parse_as_of("2026-12-07T02:00:00+01:00") == datetime(2026, 12, 7, 1, tzinfo=timezone.utc)
    for bad in ("2026-12-07 01:00", "yesterday", "1765072500"):
        with pytest.raises(ConfigError, match="RFC 3339"):
            native.parse_as_of(bad)
    assert native.as_of_literal(datetime(2026, 12, 7, 1, tzinfo=timezone.utc)) == "'2026-12-07 01:00:00.000000+00:00'"


@pytest.mark.parametrize("status, outcome", [
    ("pending", "wait"), ("running", "wait"), ("retry-running", "wait"), ("succeeded", "done"),
    ("failed", "failed"), ("canceled", "failed"), ("revert-failed", "failed"), ("reverting", "failed"),
    ("cancel-requested", "failed"), ("paused", "wait"), ("pause-requested", "wait"), ("frobnicated", "cancel"),
])
def test_each_job_state(status, outcome):
    verdict = native.judge(7, "backup", native.JobState(status, 0.5, ""), 0.0, 60.0)
    got = "done" if verdict.done else "cancel" if verdict.cancel else "failed" if verdict.failed else "wait"
    assert got == outcome


def test_a_failed_jobs_error_is_redacted_and_a_long_pause_cancels():
    error = "failed to write s3://b/f?AWS_ACCESS_KEY_ID=AKIAEXAMPLEKEYID&AWS_SECRET_ACCESS_KEY=s3cr3t: denied"
    verdict = native.judge(7, "backup", native.JobState("failed", 0.1, error), 0.0, 60.0)
    assert "s3cr3t" not in verdict.failed and "AKIAEXAMPLEKEYID" not in verdict.failed
    assert "backup job 7 failed" in verdict.failed and "denied" in verdict.failed
    assert native.judge(7, "backup", native.JobState("paused"), 59.0, 60.0) == native.Verdict()
    paused = native.judge(7, "backup", native.JobState("paused"), 60.0, 60.0)
    assert paused.cancel and "canceled" in paused.failed
    assert "gone" in native.judge(7, "backup", None, 0.0, 60.0).failed


@pytest.mark.parametrize("source, target, ok", [
    ((24, 1, 3), (24, 1, 9), True), ((24, 1, 3), (24, 2, 0), True), ((24, 1, 3), (24, 3, 1), True),
    ((24, 1, 3), (25, 1, 0), False), ((24, 2, 1), (24, 3, 0), True), ((24, 2, 1), (25, 1, 0), False),
    ((24, 3, 2), (25, 2, 0), True), ((23, 2, 5), (24, 1, 0), True), ((23, 2, 5), (24, 2, 0), False),
    ((24, 3, 0), (24, 1, 5), False), ((26, 1, 0), (26, 2, 0), True),
])
def test_restores_across_versions_follow_cockroachdbs_table(source, target, ok):
    assert (native.check_restorable(source, target) is None) == ok


class Recorded:
    """A session that answers with recorded rows, one list per statement prefix, in order."""

    def __init__(self, answers: dict[str, list], fail: dict[str, list[Exception]] | None = None):
        self.answers = {k: list(v) for k, v in answers.items()}
        self.fail = fail or {}
        self.statements: list[str] = []

    def execute(self, sql, params=None):
        self.statements.append(sql)
        for prefix, errors in self.fail.items():
            if sql.startswith(prefix) and errors:
                raise errors.pop(0)
        for prefix, rows in self.answers.items():
            if sql.startswith(prefix):
                return _Result(rows.pop(0) if rows and isinstance(rows[0], list) and len(rows) > 1 else
                               rows[0] if rows and isinstance(rows[0], list) else rows)
        return _Result([])


class _Result:
    def __init__(self, rows):
        self.rows = rows

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self):
        return list(self.rows)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def waiting(clock, pause_limit=60.0) -> jobs.Waiting:
    return jobs.Waiting(poll_seconds=5.0, pause_limit=pause_limit, progress_seconds=10.0, sleep=clock.sleep,
                        clock=clock)


def job_rows(*states) -> list[list]:
    return [[(status, fraction, error, "")] for status, fraction, error in states]


def test_waiting_for_a_job_logs_progress_until_it_succeeds():
    clock = Clock()
    conn = Recorded({"SELECT status": job_rows(("running", 0.1, ""), ("running", 0.5, ""), ("running", 0.9, ""),
                                               ("succeeded", 1.0, ""))})
    with structlog.testing.capture_logs() as events:
        jobs.wait(conn, 42, "backup", "malbork", waiting(clock))
    assert conn.statements == [native.JOB_SQL] * 4
    progress = [e["fraction_completed"] for e in events if e["event"] == "backup progress"]
    assert progress and progress[-1] == 0.9


def test_a_job_paused_past_the_limit_is_cancelled():
    clock = Clock()
    conn = Recorded({"SELECT status": [[("paused", 0.3, "", "")]]})
    with pytest.raises(DatabaseError, match="stayed paused for 60s"):
        jobs.wait(conn, 42, "backup", "malbork", waiting(clock))
    assert conn.statements[-1] == "CANCEL JOB 42"


def test_a_job_resumed_in_time_goes_on():
    clock = Clock()
    conn = Recorded({"SELECT status": job_rows(("paused", 0.3, ""), ("paused", 0.3, ""), ("running", 0.4, ""),
                                               ("paused", 0.5, ""), ("succeeded", 1.0, ""))})
    jobs.wait(conn, 42, "backup", "malbork", waiting(clock, pause_limit=9.0))
    assert "CANCEL JOB 42" not in conn.statements


def test_a_failed_job_fails_the_run_with_its_redacted_error():
    conn = Recorded({"SELECT status": job_rows(("failed", 0.2, "writing to s3://b?AWS_SECRET_ACCESS_KEY=abc: 403"))})
    with pytest.raises(DatabaseError) as failed:
        jobs.wait(conn, 42, "backup", "malbork", waiting(Clock()))
    assert "abc" not in str(failed.value) and "403" in str(failed.value)
    assert "CANCEL JOB 42" not in conn.statements  # it ended by itself


def test_a_stop_cancels_the_job_and_a_lost_session_is_opened_again():
    class Stop(BaseException):
        pass

    clock = Clock()
    conn = Recorded({"SELECT status": job_rows(("running", 0.1, ""))})
    how = waiting(clock)
    how.sleep = lambda _s: (_ for _ in ()).throw(Stop())
    with pytest.raises(Stop):
        jobs.wait(conn, 42, "backup", "malbork", how)
    assert conn.statements[-1] == "CANCEL JOB 42"

    lost = Recorded({}, fail={"SELECT status": [psycopg.OperationalError("server closed the connection")]})
    fresh = Recorded({"SELECT status": job_rows(("succeeded", 1.0, ""))})
    jobs.wait(lost, 42, "backup", "malbork", waiting(Clock()), reconnect=lambda: fresh)
    assert fresh.statements == [native.JOB_SQL]


# docs v24.3 show-backup.md, the chain of full backup 2022/04/08-142355.33, reduced to the selected columns.
FULL_END = datetime(2022, 4, 8, 14, 23, 55, 335570)
INC_END = datetime(2022, 4, 8, 14, 26, 1, 699694)
SHOW_BACKUP = [
    (None, "movr", "database", "full", FULL_END, 0, 0),
    (None, "public", "schema", "full", FULL_END, 0, 0),
    ("public", "users", "table", "full", FULL_END, 25856, 281),
    ("public", "rides", "table", "full", FULL_END, 156000, 1000),
    (None, "movr", "database", "incremental", INC_END, 0, 0),
    ("public", "users", "table", "incremental", INC_END, 99, 2),
]


def collection(conn, release=(24, 3, 3)) -> jobs.Collection:
    return jobs.Collection(conn, native.collection_url(RGW, release, KEYS), release, "1a2b3c4d0000aaaa", "movr")


def test_the_layer_of_a_backup_is_read_from_show_backup_by_its_end_time():
    conn = Recorded({"SELECT parent_schema_name": SHOW_BACKUP})
    with collection(conn) as target:
        full = jobs.layer(conn, target, "/2022/04/08-142355.33", FULL_END.replace(tzinfo=timezone.utc))
        inc = jobs.layer(conn, target, "/2022/04/08-142355.33",
                         datetime(2022, 4, 8, 14, 26, 1, 699694, tzinfo=timezone.utc))
    assert (full.backup_type, full.tables, full.rows, full.size_bytes) == \
        ("full", {"public.users": 281, "public.rides": 1000}, 1281, 181856)
    assert (inc.backup_type, inc.tables, inc.size_bytes) == ("incremental", {"public.users": 2}, 99)
    assert conn.statements[1] == ("SELECT parent_schema_name, object_name, object_type, backup_type, end_time, "
                                  "coalesce(size_bytes, 0), coalesce(rows, 0) FROM [SHOW BACKUP FROM "
                                  "'/2022/04/08-142355.33' IN 'external://enclave_backup_1a2b3c4d0000aaaa']")
    with pytest.raises(DatabaseError, match="lists no backup ending at"):
        jobs.layer(conn, target, "/2022/04/08-142355.33", datetime(2022, 4, 8, 15, tzinfo=timezone.utc))


def test_the_collection_is_an_external_connection_from_22_2_and_the_url_before():
    conn = Recorded({})
    with collection(conn) as target:
        assert target.target == "external://enclave_backup_1a2b3c4d0000aaaa"
    create, drop = conn.statements
    assert create.startswith('CREATE EXTERNAL CONNECTION "enclave_backup_1a2b3c4d0000aaaa" AS \'s3://backups/')
    assert drop == 'DROP EXTERNAL CONNECTION "enclave_backup_1a2b3c4d0000aaaa"'

    old = Recorded({})
    with collection(old, (22, 1, 9)) as target:
        assert target.target.startswith("s3://backups/") and KEYS["AWS_ACCESS_KEY_ID"] in target.target
    assert old.statements == []


def test_without_the_externalconnection_privilege_the_url_goes_into_the_job(capsys):
    denied = psycopg.errors.InsufficientPrivilege("user backup does not have EXTERNALCONNECTION system privilege")
    conn = Recorded({}, fail={"CREATE EXTERNAL CONNECTION": [denied]})
    with collection(conn) as target:
        assert target.target.startswith("s3://")
    assert not any(s.startswith("DROP") for s in conn.statements)
    assert "GRANT SYSTEM EXTERNALCONNECTION" in capsys.readouterr().out


T = datetime(2026, 12, 1, tzinfo=timezone.utc)


def decision(key: str, keep: bool) -> Decision:
    return Decision(key, T, keep, ("rule",))


def test_retention_keeps_what_a_kept_incremental_restores_from():
    chain_a, chain_b = ("native/m-1", "/2026/11/01-000000.00"), ("native/m-1", "/2026/11/08-000000.00")
    links = {
        "full-a": Link(chain_a, datetime(2026, 11, 1, tzinfo=timezone.utc)),
        "inc-a1": Link(chain_a, datetime(2026, 11, 2, tzinfo=timezone.utc)),
        "inc-a2": Link(chain_a, datetime(2026, 11, 3, tzinfo=timezone.utc)),
        "inc-a3": Link(chain_a, datetime(2026, 11, 4, tzinfo=timezone.utc)),
        "full-b": Link(chain_b, datetime(2026, 11, 8, tzinfo=timezone.utc)),
        "inc-b1": Link(chain_b, datetime(2026, 11, 9, tzinfo=timezone.utc)),
    }
    # KeepDaily kept inc-a2 and the newest: without its full and inc-a1 inc-a2 cannot be restored.
    decisions = [decision("inc-b1", True), decision("full-b", False), decision("inc-a3", False),
                 decision("inc-a2", True), decision("inc-a1", False), decision("full-a", False),
                 decision("dump.sql.gz", False)]
    adjusted = {d.key: d.keep for d in keep_chains(decisions, links)}
    assert adjusted == {"inc-b1": True, "full-b": True, "inc-a3": False, "inc-a2": True, "inc-a1": True,
                        "full-a": True, "dump.sql.gz": False}
    assert chains_gone(keep_chains(decisions, links), links) == set()
    only_b = [decision("inc-b1", True)] + [decision(k, False) for k in ("full-b", "inc-a3", "inc-a2", "inc-a1",
                                                                       "full-a")]
    assert chains_gone(keep_chains(only_b, links), links) == {chain_a}


def test_a_dumps_signed_bytes_do_not_change_with_the_native_fields():
    from enclave_backup.manifest import Manifest
    dump = Manifest(key="k.sql.gz", database="malbork", engine="cockroachdb", server_version="v", started_at="s",
                    finished_at="f", compression="gzip", stored_size=1, sha256="0" * 64, uncompressed_size=2)
    assert b"method" not in dump.signed_bytes() and b"native" not in dump.signed_bytes()
    assert b'"method":"native"' in replace(dump, method="native", native={"folder": "/x"}).signed_bytes()
