"""The restore hook Job behind restore.fromObject (issue 4, chart part)."""

from __future__ import annotations

import pytest

from .conftest import DOC_FLAGS, MANAGER_IMAGE, env_of, find, notes as render_notes, pod_spec, render, render_error

KEY = "prod/enclave-manager/malbork-20250101T000000Z.sql.gz"


def restore_render(helm, *more):
    return render(helm, *MANAGER_IMAGE, *DOC_FLAGS, f"enclaveos-chart.restore.fromObject={KEY}", *more)


def test_no_restore_job_without_from_object(helm):
    for objs in (render(helm, *MANAGER_IMAGE), render(helm, *MANAGER_IMAGE, *DOC_FLAGS)):
        assert not [o for o in objs if o["kind"] == "Job"]


def test_restore_job_is_a_post_install_and_post_upgrade_hook(helm):
    job = find(restore_render(helm), "Job", "r1-enclaveos-restore")
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "post-install,post-upgrade"
    assert ann["helm.sh/hook-delete-policy"] == "before-hook-creation"
    assert ann["helm.sh/hook-weight"] == "10"
    assert job["spec"]["backoffLimit"] == 1
    assert job["spec"]["activeDeadlineSeconds"] == 21600
    spec = pod_spec(job)
    assert spec["restartPolicy"] == "Never"
    (c,) = spec["containers"]
    assert c["command"] == ["enclave-backup"]
    assert c["args"] == ["restore", "--object", KEY]


def test_restore_job_settings_reach_the_program(helm):
    job = find(
        restore_render(
            helm,
            "enclaveos-chart.restore.force=true",
            "enclaveos-chart.restore.keepPrevious=3",
            "enclaveos-chart.restore.waitForClientsSeconds=45",
            "enclaveos-chart.restore.terminateClients=true",
            "enclaveos-chart.restore.backoffLimit=0",
            "enclaveos-chart.restore.activeDeadlineSeconds=900",
        ),
        "Job",
    )
    env = env_of(pod_spec(job)["containers"][0])
    assert env["ENCLAVE_BACKUP_RESTORE_FORCE"]["value"] == "true"
    assert env["ENCLAVE_BACKUP_RESTORE_KEEP_PREVIOUS"]["value"] == "3"
    assert env["ENCLAVE_BACKUP_RESTORE_WAIT_FOR_CLIENTS_SECONDS"]["value"] == "45"
    assert env["ENCLAVE_BACKUP_RESTORE_TERMINATE_CLIENTS"]["value"] == "true"
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 900


def test_restore_defaults(helm):
    env = env_of(pod_spec(find(restore_render(helm), "Job"))["containers"][0])
    assert env["ENCLAVE_BACKUP_RESTORE_FORCE"]["value"] == "false"
    assert env["ENCLAVE_BACKUP_RESTORE_KEEP_PREVIOUS"]["value"] == "1"
    assert env["ENCLAVE_BACKUP_RESTORE_WAIT_FOR_CLIENTS_SECONDS"]["value"] == "300"
    assert env["ENCLAVE_BACKUP_RESTORE_TERMINATE_CLIENTS"]["value"] == "false"
    # The hook may start while a fresh database is still coming up: retry connecting for longer.
    assert env["ENCLAVE_BACKUP_RETRY_SECONDS"]["value"] == "600"


def test_restore_job_shares_the_cronjobs_storage_database_and_security(helm):
    objs = restore_render(helm)
    job, cj = pod_spec(find(objs, "Job")), pod_spec(find(objs, "CronJob"))
    restore_env, backup_env = env_of(job["containers"][0]), env_of(cj["containers"][0])
    own = ("ENCLAVE_BACKUP_RESTORE_", "ENCLAVE_BACKUP_RETRY_SECONDS", "ENCLAVE_BACKUP_ALLOW_UNVERIFIED")
    ops = ("ENCLAVE_BACKUP_KEEP_", "ENCLAVE_BACKUP_READER_MARKER_SECONDS", "ENCLAVE_BACKUP_PUSHGATEWAY_URL")
    # ENCLAVE_BACKUP_RESTORE_JOBS is every program's (the verify loads as the restore does).
    own_only = [k for k in restore_env if k.startswith(own) and k != "ENCLAVE_BACKUP_RESTORE_JOBS"]
    assert {k: v for k, v in restore_env.items() if k not in own_only} == \
        {k: v for k, v in backup_env.items() if not k.startswith(ops)}
    assert job["securityContext"] == cj["securityContext"]
    assert job["containers"][0]["securityContext"] == cj["containers"][0]["securityContext"]
    assert job["containers"][0]["image"] == cj["containers"][0]["image"]


def test_restore_without_backups_still_gets_storage_settings(helm):
    flags = [f for f in DOC_FLAGS if not f.startswith("enclaveos-chart.Backup.CronSchedule=")]
    objs = render(helm, *MANAGER_IMAGE, *flags, "enclaveos-chart.restore.fromObject=latest")
    assert not [o for o in objs if o["kind"] == "CronJob"]
    c = pod_spec(find(objs, "Job"))["containers"][0]
    assert c["args"] == ["restore", "--object", "latest"]
    assert env_of(c)["ENCLAVE_BACKUP_BUCKET"]["value"] == "acme-enclave-manager-backups"


def test_restore_needs_the_storage_settings(helm):
    err = render_error(helm, *MANAGER_IMAGE, "enclaveos-chart.restore.fromObject=latest")
    assert "global.S3.Endpoint is required because enclaveos-chart.restore.fromObject is set" in err, err


def test_manager_is_held_at_zero_replicas_during_a_restore(helm):
    objs = restore_render(helm, "enclaveos-chart.Manager.ReplicaCount=3")
    assert find(objs, "Deployment", "r1-enclaveos-manager")["spec"]["replicas"] == 0
    # Unsetting fromObject (the second helm upgrade) brings the Manager back.
    objs = restore_render(helm, "enclaveos-chart.Manager.ReplicaCount=3", "enclaveos-chart.restore.fromObject=")
    assert find(objs, "Deployment")["spec"]["replicas"] == 3
    assert not [o for o in objs if o["kind"] == "Job"]


@pytest.mark.parametrize(
    "flag, named",
    [
        ("enclaveos-chart.restore.keepPrevious=-1", "keepPrevious"),
        ("enclaveos-chart.restore.waitForClientsSeconds=soon", "waitForClientsSeconds"),
        ("enclaveos-chart.restore.force=maybe", "force"),
        ("enclaveos-chart.restore.terminateClients=7", "terminateClients"),
        ("enclaveos-chart.restore.fromobject=latest", "fromobject"),
        ("enclaveos-chart.restore.fromObject=two words", "fromObject"),
        ("enclaveos-chart.restore.activeDeadlineSeconds=0", "activeDeadlineSeconds"),
    ],
)
def test_bad_restore_values_fail_naming_them(helm, flag, named):
    err = render_error(helm, *MANAGER_IMAGE, *DOC_FLAGS, flag)
    assert named in err


def test_notes_say_what_the_restore_does_next():
    notes = render_notes(*MANAGER_IMAGE, *DOC_FLAGS, "enclaveos-chart.restore.fromObject=latest")
    assert "0 replicas while a restore is configured" in notes
    assert 'hook Job r1-enclaveos-restore restores "latest"' in notes
    assert "malbork_pre_restore_<time>" in notes
    assert "kubectl -n apps logs -f job/r1-enclaveos-restore" in notes
    assert "helm upgrade r1 <chart> --reuse-values --set enclaveos-chart.restore.fromObject=" in notes


def test_installation_identity_and_the_deliberate_foreign_restore(helm):
    objs = restore_render(helm, "enclaveos-chart.Backup.CronSchedule=0 0 * * *")
    backup_env = env_of(pod_spec(find(objs, "CronJob"))["containers"][0])
    restore_env = env_of(pod_spec(find(objs, "Job", "r1-enclaveos-restore"))["containers"][0])
    assert backup_env["ENCLAVE_BACKUP_INSTALLATION"]["value"] == restore_env["ENCLAVE_BACKUP_INSTALLATION"]["value"]
    assert restore_env["ENCLAVE_BACKUP_INSTALLATION"]["value"].endswith("/r1")  # <namespace>/<release>
    assert restore_env["ENCLAVE_BACKUP_RESTORE_SOURCE_INSTALLATION"]["value"] == ""  # never by accident
    chosen = restore_render(helm, "enclaveos-chart.restore.sourceInstallation=old-ns/old-release",
                            "enclaveos-chart.Backup.Installation=prod/shield")
    env = env_of(pod_spec(find(chosen, "Job", "r1-enclaveos-restore"))["containers"][0])
    assert env["ENCLAVE_BACKUP_RESTORE_SOURCE_INSTALLATION"]["value"] == "old-ns/old-release"
    assert env["ENCLAVE_BACKUP_INSTALLATION"]["value"] == "prod/shield"
    assert "Installation" in render_error(helm, *MANAGER_IMAGE, *DOC_FLAGS,
                                          "enclaveos-chart.Backup.Installation=a\tb")


def test_pods_get_the_grace_period_the_program_needs(helm):
    objs = restore_render(helm, "enclaveos-chart.Backup.CronSchedule=0 0 * * *")
    for obj in (find(objs, "CronJob"), find(objs, "Job", "r1-enclaveos-restore")):
        # errors.STOP_DEADLINE_SECONDS (10) for the abort, plus pg_dump's end and the exit
        assert pod_spec(obj)["terminationGracePeriodSeconds"] == 30
