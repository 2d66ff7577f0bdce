"""Chart wiring of retention, the verify CronJob, the verify helm test and the Pushgateway."""

from __future__ import annotations

import kubernetes_validate
import pytest

from .conftest import DOC_FLAGS, MANAGER_IMAGE, env_of, find, pod_spec, render, render_error
from .test_chart_kube_schemas import NEWEST, OLDEST

VERIFY = "enclaveos-chart.Verify.CronSchedule=0 3 * * 0"


def ops_render(helm, *more):
    return render(helm, *MANAGER_IMAGE, *DOC_FLAGS, *more)


def backup_container(objs):
    return pod_spec(find(objs, "CronJob", "r1-enclaveos-backup"))["containers"][0]


def test_defaults_keep_every_backup_and_render_no_verify_or_alerting(helm):
    objs = ops_render(helm)
    c = backup_container(objs)
    assert c["args"] == ["backup"]
    env = env_of(c)
    assert {k: env[f"ENCLAVE_BACKUP_KEEP_{k}"]["value"] for k in ("LAST", "DAYS", "DAILY", "WEEKLY", "MONTHLY")} == \
        dict.fromkeys(("LAST", "DAYS", "DAILY", "WEEKLY", "MONTHLY"), "0")
    assert "ENCLAVE_BACKUP_PUSHGATEWAY_URL" not in env
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert ("CronJob", "r1-enclaveos-verify") not in names and ("Pod", "r1-enclaveos-test-verify") not in names
    assert not [o for o in objs if o["kind"] == "PrometheusRule"]


@pytest.mark.parametrize("rule, env", [("KeepLast", "KEEP_LAST"), ("KeepDays", "KEEP_DAYS"),
                                       ("KeepDaily", "KEEP_DAILY"), ("KeepWeekly", "KEEP_WEEKLY"),
                                       ("KeepMonthly", "KEEP_MONTHLY")])
def test_a_retention_rule_makes_the_cronjob_prune_after_its_backup(helm, rule, env):
    c = backup_container(ops_render(helm, f"enclaveos-chart.Backup.Retention.{rule}=5"))
    assert c["args"] == ["backup", "--prune"]
    assert env_of(c)[f"ENCLAVE_BACKUP_{env}"]["value"] == "5"


def test_retention_rules_refuse_negative_numbers(helm):
    err = render_error(helm, *MANAGER_IMAGE, *DOC_FLAGS, "enclaveos-chart.Backup.Retention.KeepLast=-1")
    assert "KeepLast" in err


def test_pushgateway_url_reaches_backup_and_verify(helm):
    objs = ops_render(helm, VERIFY, "enclaveos-chart.Backup.Metrics.PushgatewayUrl=http://pgw.monitoring:9091")
    for name in ("r1-enclaveos-backup", "r1-enclaveos-verify"):
        env = env_of(pod_spec(find(objs, "CronJob", name))["containers"][0])
        assert env["ENCLAVE_BACKUP_PUSHGATEWAY_URL"]["value"] == "http://pgw.monitoring:9091"
    err = render_error(helm, *MANAGER_IMAGE, *DOC_FLAGS, "enclaveos-chart.Backup.Metrics.PushgatewayUrl=pgw:9091")
    assert "PushgatewayUrl" in err


def test_verify_cronjob_has_its_own_schedule_deadline_and_resources(helm):
    objs = ops_render(helm, VERIFY, "enclaveos-chart.Verify.ActiveDeadlineSeconds=3600",
                      "enclaveos-chart.Verify.Resources.limits.memory=1Gi",
                      "enclaveos-chart.Verify.Object=prod/enclave-manager/malbork-20260101T000000Z.sql.gz")
    cj, backup = find(objs, "CronJob", "r1-enclaveos-verify"), find(objs, "CronJob", "r1-enclaveos-backup")
    assert cj["spec"]["schedule"] == "0 3 * * 0" and cj["spec"]["timeZone"] == "Etc/UTC"
    assert cj["spec"]["concurrencyPolicy"] == "Forbid"
    job = cj["spec"]["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] == 3600 and job["backoffLimit"] == 0
    assert cj["metadata"]["labels"]["app.kubernetes.io/component"] == "verify"
    c = pod_spec(cj)["containers"][0]
    assert c["args"] == ["verify", "--object", "prod/enclave-manager/malbork-20260101T000000Z.sql.gz"]
    assert c["resources"]["limits"]["memory"] == "1Gi"
    # Same database, storage and security as the backup; the live database is only named, never changed.
    b = pod_spec(backup)["containers"][0]
    reader = env_of(c)
    # Only a reader says whether it accepts unsigned backups (tests/chart/test_chart_trust.py).
    assert reader.pop("ENCLAVE_BACKUP_ALLOW_UNVERIFIED")["value"] == "false"
    assert reader == env_of(b)
    assert c["securityContext"] == b["securityContext"] and c["image"] == b["image"]
    # A verify may read for up to its deadline: prune honours reader markers at least that long.
    assert env_of(b)["ENCLAVE_BACKUP_READER_MARKER_SECONDS"]["value"] == "21600"  # the restore's is longer


@pytest.mark.parametrize("kube", [OLDEST, NEWEST])
def test_verify_cronjob_and_test_pod_pass_strict_schema_validation(helm, kube):
    objs = render(helm, *MANAGER_IMAGE, *DOC_FLAGS, VERIFY, "enclaveos-chart.Verify.HelmTest=true",
                  extra=("--kube-version", kube))
    for kind, name in (("CronJob", "r1-enclaveos-verify"), ("Pod", "r1-enclaveos-test-verify")):
        kubernetes_validate.validate(find(objs, kind, name), kube, strict=True)


def test_helm_test_pod_verifies_on_demand(helm):
    objs = ops_render(helm, "enclaveos-chart.Verify.HelmTest=true", "enclaveos-chart.Verify.ActiveDeadlineSeconds=1800")
    pod = find(objs, "Pod", "r1-enclaveos-test-verify")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["activeDeadlineSeconds"] == 1800 and pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["containers"][0]["args"] == ["verify", "--object", "latest"]
    assert ("CronJob", "r1-enclaveos-verify") not in {(o["kind"], o["metadata"]["name"]) for o in objs}


@pytest.mark.parametrize("flag", [VERIFY, "enclaveos-chart.Verify.HelmTest=true"])
def test_verify_without_storage_settings_is_refused(helm, flag):
    err = render_error(helm, *MANAGER_IMAGE, flag)
    assert "Bucket" in err or "Endpoint" in err or "HmacSecretName" in err


def test_verify_alone_renders_with_storage_and_no_backup_cronjob(helm):
    flags = [f for f in DOC_FLAGS if not f.startswith("enclaveos-chart.Backup.CronSchedule=")]
    objs = render(helm, *MANAGER_IMAGE, *flags, VERIFY)
    assert [o["metadata"]["name"] for o in objs if o["kind"] == "CronJob"] == ["r1-enclaveos-verify"]
    env = env_of(pod_spec(find(objs, "CronJob"))["containers"][0])
    assert env["ENCLAVE_BACKUP_BUCKET"]["value"] == "acme-enclave-manager-backups"
