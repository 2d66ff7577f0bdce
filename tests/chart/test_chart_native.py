"""Backup.Method=native (CockroachDB's own BACKUP into the bucket): the incremental CronJob, the
method's settings in every program pod's environment, the rules that refuse what cannot work,
the NetworkPolicy's open egress and the NOTES, on Helm 3 and Helm 4. Strict validation against the
Kubernetes schemas and the lint checks run on ci/native-values.yaml with the other ci files."""

from __future__ import annotations

import re

import pytest

from tests.chart.conftest import DOC_FLAGS, MANAGER_IMAGE, UMBRELLA, env_of, find, notes, pod_spec, render, render_error
from tests.chart.test_chart_knobs import program_pods
from tests.chart.test_chart_networkpolicy import admitted, policy_of, pods

SUB = "enclaveos-chart."
NATIVE_CI = UMBRELLA / "ci" / "native-values.yaml"
NATIVE = (f"{SUB}Backup.Method=native", f"{SUB}Backup.IncrementalSchedule=0 1-23 * * *")
# Every program pod: both backup CronJobs, the restore hook, the verify CronJob, both helm test pods.
EVERY_POD = (f"{SUB}Verify.CronSchedule=0 3 * * 0", f"{SUB}Verify.HelmTest=true", f"{SUB}restore.fromObject=latest")
PROGRAM_PODS = {"r1-enclaveos-backup", "r1-enclaveos-backup-incremental", "r1-enclaveos-restore",
                "r1-enclaveos-verify", "r1-enclaveos-test-verify", "r1-enclaveos-test-storage"}


def names(error: str, path: str) -> bool:
    """The schema's error names the subchart and the value (Helm 3: a.b, Helm 4: /a/b)."""
    return "enclaveos-chart:" in error and bool(re.search(rf"{re.escape(path)}|/{re.escape(path.replace('.', '/'))}", error))


def container(obj: dict) -> dict:
    return next(c for c in pod_spec(obj)["containers"] if c["name"] == "enclave-backup")


def env_values(obj: dict) -> dict[str, str]:
    return {name: e.get("value") for name, e in env_of(container(obj)).items()}


def test_native_with_incrementals_renders_both_cronjobs_with_their_args(helm):
    objs = render(helm, *DOC_FLAGS, *MANAGER_IMAGE, *NATIVE)
    full = find(objs, "CronJob", "r1-enclaveos-backup")
    incremental = find(objs, "CronJob", "r1-enclaveos-backup-incremental")
    assert container(full)["args"] == ["backup"]
    assert container(incremental)["command"] == ["enclave-backup"]
    assert container(incremental)["args"] == ["backup", "--incremental"]
    assert incremental["spec"]["schedule"] == "0 1-23 * * *"
    assert incremental["spec"]["timeZone"] == full["spec"]["timeZone"] == "Etc/UTC"
    assert incremental["spec"]["concurrencyPolicy"] == "Forbid"
    # The same pod and the same Job settings as the backup CronJob's; only the arguments differ.
    for key in ("suspend", "startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        assert incremental["spec"][key] == full["spec"][key], key
    for key in ("backoffLimit", "activeDeadlineSeconds"):
        assert incremental["spec"]["jobTemplate"]["spec"][key] == full["spec"]["jobTemplate"]["spec"][key], key
    a, b = pod_spec(full), pod_spec(incremental)
    assert [dict(c, args=None) for c in a["containers"]] == [dict(c, args=None) for c in b["containers"]]
    assert {k: v for k, v in a.items() if k != "containers"} == {k: v for k, v in b.items() if k != "containers"}
    template = incremental["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert template["enclaveos-chart/sql-client"] == "true" and template["app.kubernetes.io/component"] == "backup"
    env = env_values(incremental)
    assert env["ENCLAVE_BACKUP_METHOD"] == "native"
    assert env["ENCLAVE_BACKUP_NATIVE_REVISION_HISTORY"] == "true"
    assert env["ENCLAVE_BACKUP_NATIVE_PATH_STYLE"] == "auto"


def test_retention_prunes_after_full_backups_only(helm):
    objs = render(helm, *DOC_FLAGS, *MANAGER_IMAGE, *NATIVE, f"{SUB}Backup.Retention.KeepDaily=7")
    assert container(find(objs, "CronJob", "r1-enclaveos-backup"))["args"] == ["backup", "--prune"]
    assert container(find(objs, "CronJob", "r1-enclaveos-backup-incremental"))["args"] == ["backup", "--incremental"]


def test_suspend_stops_incrementals_too(helm):
    objs = render(helm, *DOC_FLAGS, *MANAGER_IMAGE, *NATIVE, f"{SUB}Backup.Suspend=true")
    assert [o["spec"]["suspend"] for o in objs if o["kind"] == "CronJob"] == [True, True]


def test_every_program_pod_gets_the_method_and_the_native_settings(helm):
    objs = render(helm, *DOC_FLAGS, *MANAGER_IMAGE, *NATIVE, *EVERY_POD,
                  f"{SUB}Backup.Native.RevisionHistory=false", f"{SUB}Backup.Native.PathStyle=false",
                  f"{SUB}restore.asOf=2026-12-07T01:00:00Z")
    by_name = {o["metadata"]["name"]: o for o in objs}
    assert set(program_pods(objs)) == PROGRAM_PODS
    for name in PROGRAM_PODS:
        env = env_values(by_name[name])
        assert env["ENCLAVE_BACKUP_METHOD"] == "native", name
        assert env["ENCLAVE_BACKUP_NATIVE_REVISION_HISTORY"] == "false", name
        assert env["ENCLAVE_BACKUP_NATIVE_PATH_STYLE"] == "false", name
        # The point in time is the restore's alone.
        assert ("ENCLAVE_BACKUP_RESTORE_AS_OF" in env) == (name == "r1-enclaveos-restore"), name
    assert env_values(by_name["r1-enclaveos-restore"])["ENCLAVE_BACKUP_RESTORE_AS_OF"] == "2026-12-07T01:00:00Z"


def test_defaults_are_dump_without_incrementals(helm):
    objs = render(helm, *DOC_FLAGS, *MANAGER_IMAGE, *EVERY_POD)
    assert [o["metadata"]["name"] for o in objs if o["kind"] == "CronJob"] == ["r1-enclaveos-backup", "r1-enclaveos-verify"]
    by_name = {o["metadata"]["name"]: o for o in objs}
    for name in PROGRAM_PODS - {"r1-enclaveos-backup-incremental"}:
        env = env_values(by_name[name])
        assert env["ENCLAVE_BACKUP_METHOD"] == "dump", name
        assert env["ENCLAVE_BACKUP_NATIVE_REVISION_HISTORY"] == "true", name
        assert env["ENCLAVE_BACKUP_NATIVE_PATH_STYLE"] == "auto", name
    assert env_values(by_name["r1-enclaveos-restore"])["ENCLAVE_BACKUP_RESTORE_AS_OF"] == ""


@pytest.mark.parametrize("given,rendered", [("true", "true"), ("false", "false"), ("auto", "auto")])
def test_path_style_reaches_the_pods_as_a_string(helm, given, rendered):
    # --set turns true and false into booleans; the schema takes both spellings.
    objs = render(helm, *DOC_FLAGS, *MANAGER_IMAGE, *NATIVE, f"{SUB}Backup.Native.PathStyle={given}")
    assert env_values(find(objs, "CronJob", "r1-enclaveos-backup"))["ENCLAVE_BACKUP_NATIVE_PATH_STYLE"] == rendered


@pytest.mark.parametrize("as_of", ["2026-12-07T01:00:00Z", "2026-12-07T01:00:00.123456Z", "2026-02-28T23:59:59+05:30",
                                   "2026-12-07T01:00:00-08:00"])
def test_rfc3339_times_pass(helm, as_of):
    objs = render(helm, *DOC_FLAGS, *MANAGER_IMAGE, f"{SUB}Backup.Method=native", f"{SUB}restore.fromObject=latest",
                  f"{SUB}restore.asOf={as_of}")
    assert env_values(find(objs, "Job", "r1-enclaveos-restore"))["ENCLAVE_BACKUP_RESTORE_AS_OF"] == as_of


@pytest.mark.parametrize("as_of", ["2026-12-07", "2026-12-07T01:00:00", "2026-12-07 01:00:00Z", "yesterday",
                                   "2026-13-07T01:00:00Z", "2026-12-07T25:00:00Z", "2026-12-07T01:00:00+0100",
                                   "1733533200"])
def test_a_time_that_is_not_rfc3339_fails_naming_restore_as_of(helm, as_of):
    error = render_error(helm, *DOC_FLAGS, *MANAGER_IMAGE, f"{SUB}Backup.Method=native",
                         f"{SUB}restore.fromObject=latest", f"{SUB}restore.asOf={as_of}")
    if as_of.isdigit():  # --set makes it a number: the schema names the value
        assert names(error, "restore.asOf"), error
        return
    assert f'enclaveos-chart.restore.asOf="{as_of}" is not an RFC 3339 time with a zone: write it as ' \
           "2026-12-07T01:00:00Z (UTC)" in error, error


def test_what_native_backups_cannot_do_fails_at_install(helm):
    from tests.chart.test_chart_trust import AGE
    native = (*DOC_FLAGS, *MANAGER_IMAGE, f"{SUB}Backup.Method=native")
    error = render_error(helm, *native, f"{SUB}Backup.Encryption.Recipients[0]={AGE}")
    assert "enclaveos-chart.Backup.Encryption.Recipients (age) encrypts dumps" in error, error
    error = render_error(helm, *native, "global.S3.ServerSideEncryption=SSE-C", "global.S3.SseCustomerKeySecretName=c")
    assert "global.S3.ServerSideEncryption=SSE-C cannot be used with enclaveos-chart.Backup.Method=native" in error
    error = render_error(helm, *native, f"{SUB}Backup.IncrementalSchedule=0 0 * * *")
    assert "enclaveos-chart.Backup.IncrementalSchedule is the same as enclaveos-chart.Backup.CronSchedule" in error


def test_incrementals_with_dumps_fail_naming_the_value(helm):
    error = render_error(helm, *DOC_FLAGS, *MANAGER_IMAGE, f"{SUB}Backup.IncrementalSchedule=0 1-23 * * *")
    assert "enclaveos-chart.Backup.IncrementalSchedule is set but enclaveos-chart.Backup.Method is dump" in error, error
    assert "set enclaveos-chart.Backup.Method=native" in error


def test_incrementals_need_full_backups(helm):
    no_full = [f for f in DOC_FLAGS if not f.startswith(f"{SUB}Backup.CronSchedule")]
    error = render_error(helm, *no_full, *MANAGER_IMAGE, *NATIVE)
    assert "enclaveos-chart.Backup.IncrementalSchedule is set but enclaveos-chart.Backup.CronSchedule is empty" in error, error


def test_incrementals_need_the_storage_settings(helm):
    no_s3 = [f for f in DOC_FLAGS if not f.startswith(("global.S3.", f"{SUB}Backup.CronSchedule"))]
    error = render_error(helm, *no_s3, *MANAGER_IMAGE, *NATIVE)
    assert "global.S3.Endpoint is required because enclaveos-chart.Backup.IncrementalSchedule is set" in error, error


@pytest.mark.parametrize("schedule,says", [("0 25 * * *", "hour 25 is out of range 0-23"), ("0 * * *", "has 4 fields"),
                                           ("*/0 * * * *", "a step of 0 in the minute field")])
def test_a_bad_incremental_schedule_fails_naming_it(helm, schedule, says):
    error = render_error(helm, *DOC_FLAGS, *MANAGER_IMAGE, f"{SUB}Backup.Method=native",
                         f"{SUB}Backup.IncrementalSchedule={schedule}")
    assert f'enclaveos-chart.Backup.IncrementalSchedule="{schedule}"' in error and says in error, error


@pytest.mark.parametrize("flag,named", [
    (f"{SUB}Backup.Method=pg_dump", "Backup.Method"),
    (f"{SUB}Backup.Method=Native", "Backup.Method"),
    (f"{SUB}Backup.Native.PathStyle=yes", "Backup.Native.PathStyle"),
    (f"{SUB}Backup.Native.PathStyle=virtual", "Backup.Native.PathStyle"),
    (f"{SUB}Backup.Native.RevisionHistory=sometimes", "Backup.Native.RevisionHistory"),
])
def test_bad_native_values_fail_naming_them(helm, flag, named):
    error = render_error(helm, *DOC_FLAGS, *MANAGER_IMAGE, flag)
    assert names(error, named), error


def test_an_unknown_native_key_fails_naming_it(helm):
    error = render_error(helm, *DOC_FLAGS, *MANAGER_IMAGE, f"{SUB}Backup.Native.Bogus=1")
    assert "Bogus" in error, error


def test_native_with_postgresql_fails_naming_the_method(helm):
    external = (f"{SUB}cockroachdb.enabled=false", f"{SUB}externalDatabase.host=postgres.db.svc",
                f"{SUB}externalDatabase.engine=postgresql", f"{SUB}Backup.Method=native")
    error = render_error(helm, *DOC_FLAGS, *MANAGER_IMAGE, *external)
    assert "enclaveos-chart.Backup.Method=native is CockroachDB's own BACKUP" in error, error
    assert "externalDatabase.engine is postgresql" in error
    # An external CockroachDB takes native backups.
    cockroach = [f.replace("engine=postgresql", "engine=cockroachdb") for f in external]
    backup = find(render(helm, *DOC_FLAGS, *MANAGER_IMAGE, *cockroach), "CronJob", "r1-enclaveos-backup")
    assert env_values(backup)["ENCLAVE_BACKUP_METHOD"] == "native"


def test_the_nodes_keep_their_egress_to_the_store_and_the_check_reaches_sql(helm):
    objs = render(helm, *DOC_FLAGS, *MANAGER_IMAGE, *NATIVE, *EVERY_POD)
    policy = policy_of(objs)
    # Ingress only: no egress rule stands between the CockroachDB pods and the endpoint (or DNS).
    assert policy["spec"]["policyTypes"] == ["Ingress"] and "egress" not in policy["spec"]
    rendered = pods(objs)
    # The storage check has the nodes reach the store over SQL; the incremental backup connects too.
    for name in ("r1-enclaveos-test-storage", "r1-enclaveos-backup-incremental"):
        assert admitted(policy, 26257, rendered[name]), name
    # With dumps the check only talks to the bucket and stays out.
    dump = render(helm, *DOC_FLAGS, *MANAGER_IMAGE, *EVERY_POD)
    assert not admitted(policy_of(dump), 26257, pods(dump)["r1-enclaveos-test-storage"])


def test_secure_mode_gives_the_native_check_the_client_certificate(helm):
    tls = (f"{SUB}cockroachdb.tls.enabled=true", f"{SUB}cockroachdb.tls.secretName=enclave-cockroachdb-certs")
    for method, connects in (("native", True), ("dump", False)):
        objs = render(helm, *DOC_FLAGS, *MANAGER_IMAGE, *tls, f"{SUB}Backup.Method={method}")
        check = find(objs, "Pod", "r1-enclaveos-test-storage")
        env = env_values(check)
        assert ("PGSSLCERT" in env and "PGSSLKEY" in env) == connects, method
        assert any(v["name"] == "db-tls" for v in check["spec"]["volumes"]) == connects, method


def test_native_ci_values_render_everything_native(helm):
    objs = render(helm, files=[NATIVE_CI])
    assert set(program_pods(objs)) == PROGRAM_PODS
    assert container(find(objs, "CronJob", "r1-enclaveos-backup-incremental"))["args"] == ["backup", "--incremental"]
    assert container(find(objs, "CronJob", "r1-enclaveos-backup"))["args"] == ["backup", "--prune"]
    restore = env_values(find(objs, "Job", "r1-enclaveos-restore"))
    assert restore["ENCLAVE_BACKUP_METHOD"] == "native" and restore["ENCLAVE_BACKUP_RESTORE_AS_OF"] == "2026-12-07T01:00:00Z"
    assert restore["ENCLAVE_BACKUP_NATIVE_PATH_STYLE"] == "true"


def test_notes_say_the_nodes_reach_the_store():
    text = notes(*DOC_FLAGS, *MANAGER_IMAGE, *NATIVE)
    assert "writing CockroachDB's BACKUP files (Backup.Method=native)" in text
    assert 'Incremental backups: CronJob r1-enclaveos-backup-incremental runs on "0 1-23 * * *" (Etc/UTC).' in text
    assert "The CockroachDB nodes, not the backup pod, reach the store" in text
    assert "cloudstorage.http.custom_ca" in text and "`helm test r1` checks that they reach it." in text
    dump = notes(*DOC_FLAGS, *MANAGER_IMAGE)
    assert "gzip-compressed SQL dumps" in dump and "not the backup pod" not in dump
