"""The pod knobs operators set (ci/knobs-values.yaml) reach every pod that runs the program:
backup and verify CronJobs, the restore hook and both helm test pods. Strict validation against the
oldest and newest Kubernetes schemas runs on the same file in test_chart_kube_schemas.py."""

from __future__ import annotations

import pytest

from tests.chart.conftest import DOC_FLAGS, MANAGER_IMAGE, UMBRELLA, render, render_error

KNOBS = UMBRELLA / "ci" / "knobs-values.yaml"
SUB = "enclaveos-chart."


def program_pods(objs) -> dict[str, dict]:
    """Pod template or Pod spec of every object that runs enclave-backup, by object name."""
    pods = {}
    for o in objs:
        spec = {"CronJob": lambda: o["spec"]["jobTemplate"]["spec"]["template"],
                "Job": lambda: o["spec"]["template"], "Pod": lambda: o}.get(o["kind"], lambda: None)()
        if spec and any(c["name"] == "enclave-backup" for c in spec["spec"]["containers"]):
            pods[o["metadata"]["name"]] = spec
    return pods


def test_every_knob_reaches_every_program_pod(helm):
    objs = render(helm, f"{SUB}restore.fromObject=latest", files=[KNOBS])
    pods = program_pods(objs)
    assert set(pods) == {"r1-enclaveos-backup", "r1-enclaveos-verify", "r1-enclaveos-restore",
                         "r1-enclaveos-test-verify", "r1-enclaveos-test-storage"}, set(pods)
    for name, pod in pods.items():
        spec = pod["spec"]
        c = next(c for c in spec["containers"] if c["name"] == "enclave-backup")
        env = {e["name"]: e for e in c["env"]}
        assert pod["metadata"]["labels"]["team"] == "platform", name
        assert spec["priorityClassName"] == "backup-low"
        assert spec["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
        # OpenShift's restricted SCC picks the user and groups: none is fixed, the rest stays.
        assert spec["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "privileged": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}
        assert env["LOG_FORMAT"]["value"] == "json" and c["envFrom"] == [{"configMapRef": {"name": "enclave-backup-extra"}}]
        assert env["HTTPS_PROXY"]["value"] == env["https_proxy"]["value"] == "http://proxy.corp.example:3128"
        assert env["NO_PROXY"]["value"] == ".svc,.cluster.local,169.254.169.254" and "HTTP_PROXY" not in env
        assert {"name": "extra-ca", "configMap": {"name": "corp-ca"}} in spec["volumes"]
        assert {"name": "extra-ca", "mountPath": "/etc/corp-ca", "readOnly": True} in c["volumeMounts"]
        # Workload identity: no HMAC keys anywhere, boto3 takes the web identity the webhook injects.
        assert "AWS_ACCESS_KEY_ID" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    backup = next(o for o in objs if o["kind"] == "CronJob" and o["metadata"]["name"] == "r1-enclaveos-backup")
    assert backup["spec"]["suspend"] is True
    sa = next(o for o in objs if o["kind"] == "ServiceAccount")
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/enclave-backup"}


def test_defaults_keep_the_restricted_security_context_and_the_hmac_keys(helm):
    objs = render(helm, *DOC_FLAGS, *MANAGER_IMAGE)
    pod = program_pods(objs)["r1-enclaveos-backup"]
    assert pod["spec"]["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                              "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
    env = {e["name"] for e in pod["spec"]["containers"][0]["env"]}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= env and not env & {"HTTPS_PROXY", "https_proxy"}
    cron = next(o for o in objs if o["kind"] == "CronJob")
    assert cron["spec"]["suspend"] is False and "priorityClassName" not in pod["spec"]


def test_workload_identity_and_hmac_keys_are_one_or_the_other(helm):
    error = render_error(helm, *DOC_FLAGS, *MANAGER_IMAGE, "global.S3.WorkloadIdentity=true")
    assert "global.S3.WorkloadIdentity=true and global.S3.HmacSecretName are both set" in error, error
    no_keys = [f for f in DOC_FLAGS if not f.startswith("global.S3.HmacSecretName")]
    error = render_error(helm, *no_keys, *MANAGER_IMAGE)
    assert "global.S3.HmacSecretName is required" in error and "global.S3.WorkloadIdentity=true" in error, error


@pytest.mark.parametrize("label", ["app.kubernetes.io/component", "helm.sh/chart"])
def test_pod_labels_cannot_replace_the_chart_s_own(helm, label):
    error = render_error(helm, *DOC_FLAGS, *MANAGER_IMAGE, f"{SUB}Backup.PodLabels.{label.replace('.', chr(92) + '.')}=x")
    assert f"enclaveos-chart.Backup.PodLabels.{label}: the chart sets this label itself" in error, error
