"""The contracts of DESIGN.md section 2 and issue 3, on Helm 3 and Helm 4."""

from __future__ import annotations

import re
import subprocess

import pytest

from .conftest import (
    CI_VALUES,
    DOC_FLAGS,
    MANAGER_IMAGE,
    UMBRELLA,
    env_of,
    find,
    kinds,
    notes as render_notes,
    pod_spec,
    render,
    render_error,
    render_text,
)


def doc_render(helm, *more, release="r1"):
    return render(helm, *MANAGER_IMAGE, *DOC_FLAGS, "enclaveos-chart.Manager.ReplicaCount=0", *more, release=release)


def test_documented_flags_give_the_backup_cronjob(helm):
    cj = find(doc_render(helm), "CronJob", "r1-enclaveos-backup")
    assert cj["spec"]["schedule"] == "0 0 * * *"
    assert cj["spec"]["timeZone"] == "Etc/UTC"
    assert cj["spec"]["concurrencyPolicy"] == "Forbid"
    assert cj["spec"]["startingDeadlineSeconds"] == 3600
    job = cj["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 2 and job["activeDeadlineSeconds"] == 21600
    (c,) = pod_spec(cj)["containers"]
    assert c["command"] == ["enclave-backup"] and c["args"] == ["backup"]
    env = env_of(c)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key] == {
            "name": key,
            "valueFrom": {"secretKeyRef": {"name": "enclave-manager-backup-credentials", "key": key}},
        }
    assert env["ENCLAVE_BACKUP_PREFIX"]["value"] == "prod/enclave-manager"
    assert env["ENCLAVE_BACKUP_BUCKET"]["value"] == "acme-enclave-manager-backups"
    # IBM's endpoint table lists bare hosts; the program needs a URL.
    assert env["AWS_ENDPOINT_URL"]["value"] == "https://s3.eu-de.cloud-object-storage.appdomain.cloud"
    assert env["AWS_DEFAULT_REGION"]["value"] == "us-east-1"
    assert env["ENCLAVE_BACKUP_COMPRESSION"]["value"] == "gzip"
    # Parts of a pod killed at its deadline are removed by the next run, not a day later.
    assert env["ENCLAVE_BACKUP_STALE_UPLOAD_SECONDS"]["value"] == "21600"


def test_cronjob_points_at_the_charts_cockroachdb(helm):
    objs = doc_render(helm)
    env = env_of(pod_spec(find(objs, "CronJob"))["containers"][0])
    svc = find(objs, "Service", env["PGHOST"]["value"])
    assert [p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc"] == [26257]
    assert env["PGPORT"]["value"] == "26257"
    assert env["PGUSER"]["value"] == "root"
    assert env["PGDATABASE"]["value"] == "malbork"
    assert env["PGSSLMODE"]["value"] == "disable"
    assert env["ENCLAVE_BACKUP_ENGINE"]["value"] == "cockroachdb"
    assert "PGPASSWORD" not in env


def test_endpoint_url_with_scheme_is_kept(helm):
    objs = doc_render(helm, "global.S3.Endpoint=http://minio.storage:9000")
    env = env_of(pod_spec(find(objs, "CronJob"))["containers"][0])
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.storage:9000"


def test_other_time_zone_and_macro(helm):
    cj = find(doc_render(helm, "enclaveos-chart.Backup.CronSchedule=@daily", "enclaveos-chart.Backup.TimeZone=Europe/Berlin"), "CronJob")
    assert cj["spec"]["schedule"] == "@daily" and cj["spec"]["timeZone"] == "Europe/Berlin"


def test_no_cronjob_without_schedule(helm):
    objs = render(helm, *MANAGER_IMAGE)
    assert [k for k, _ in kinds(objs)].count("CronJob") == 0
    assert not [o for o in objs if o["kind"] == "Pod"], "no helm test pod without object storage settings"


def test_manager_replica_count(helm):
    assert find(doc_render(helm), "Deployment", "r1-enclaveos-manager")["spec"]["replicas"] == 0
    assert find(render(helm, *MANAGER_IMAGE), "Deployment")["spec"]["replicas"] == 1
    objs = render(helm, *MANAGER_IMAGE, "enclaveos-chart.Manager.ReplicaCount=3")
    assert find(objs, "Deployment")["spec"]["replicas"] == 3


def test_cockroachdb_statefulset_name_gives_the_documented_pod(helm):
    for release in ("r1", "prod"):
        sts = find(doc_render(helm, release=release), "StatefulSet")
        # Pod <release>-enclaveos-cockroachdb-0 = StatefulSet name + ordinal 0 of 1 replica.
        assert sts["metadata"]["name"] == f"{release}-enclaveos-cockroachdb"
        assert sts["spec"]["replicas"] == 1
        assert sts["spec"]["serviceName"] == f"{release}-enclaveos-cockroachdb"
        (claim,) = sts["spec"]["volumeClaimTemplates"]
        assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
        c = pod_spec(sts)["containers"][0]
        assert "--insecure" in c["command"] and "start-single-node" in c["command"]
        # The manual restore copies into /cockroach and runs ./cockroach there: writable.
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert c["workingDir"] == "/cockroach" and "/cockroach" in mounts
        volumes = {v["name"]: v for v in pod_spec(sts)["volumes"]}
        assert "emptyDir" in volumes[mounts["/cockroach"]]


def test_external_database_replaces_cockroachdb(helm):
    objs = render(helm, files=[UMBRELLA / "ci" / "external-db-values.yaml"])
    assert not [o for o in objs if o["kind"] in ("StatefulSet", "Service")]
    env = env_of(pod_spec(find(objs, "CronJob"))["containers"][0])
    assert env["PGHOST"]["value"] == "postgres.db.svc.cluster.local"
    assert env["PGPORT"]["value"] == "5432"
    assert env["ENCLAVE_BACKUP_ENGINE"]["value"] == "postgresql"
    assert env["PGSSLMODE"]["value"] == "verify-full"
    assert env["PGPASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "enclave-db", "key": "backup-password"}}


def test_backup_image_defaults_to_app_version_and_takes_a_digest(helm):
    c = pod_spec(find(doc_render(helm), "CronJob"))["containers"][0]
    assert c["image"] == "ghcr.io/enclaveos/enclave-backup:0.1.0"
    digest = "sha256:" + "ab" * 32
    c = pod_spec(find(doc_render(helm, f"enclaveos-chart.Backup.Image.Digest={digest}"), "CronJob"))["containers"][0]
    assert c["image"] == f"ghcr.io/enclaveos/enclave-backup@{digest}"


def test_helm_test_pod_checks_the_bucket(helm):
    pod = find(doc_render(helm), "Pod", "r1-enclaveos-test-storage")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (c,) = pod["spec"]["containers"]
    assert c["image"].startswith("ghcr.io/enclaveos/enclave-backup")
    assert c["command"] == ["enclave-backup"] and c["args"] == ["check"]
    assert env_of(c)["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "enclave-manager-backup-credentials"


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_every_pod_is_restricted(helm, values):
    objs = render(helm, files=[values])
    for obj in objs:
        if obj["kind"] == "ServiceAccount":
            assert obj["automountServiceAccountToken"] is False
        if obj["kind"] not in ("Pod", "Deployment", "StatefulSet", "CronJob", "Job"):
            continue
        spec = pod_spec(obj)
        what = f"{obj['kind']}/{obj['metadata']['name']}"
        assert spec["automountServiceAccountToken"] is False, what
        assert spec["securityContext"]["runAsNonRoot"] is True, what
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, what
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, what
            assert sc["readOnlyRootFilesystem"] is True, what
            assert sc["capabilities"] == {"drop": ["ALL"]}, what


@pytest.mark.parametrize(
    "bad",
    ["0 0 * *", "0 0 * * * *", "every day", "@fortnightly", "CRON_TZ=UTC 0 0 * * *"],
)
def test_bad_cron_schedule_fails_naming_the_value(helm, bad):
    err = render_error(helm, *MANAGER_IMAGE, *DOC_FLAGS, f"enclaveos-chart.Backup.CronSchedule={bad}")
    assert "CronSchedule" in err


@pytest.mark.parametrize("missing", ["Endpoint", "Bucket", "HmacSecretName"])
def test_missing_storage_setting_fails_while_backups_are_on(helm, missing):
    flags = [f for f in DOC_FLAGS if not f.startswith(f"global.S3.{missing}=")]
    err = render_error(helm, *MANAGER_IMAGE, *flags)
    assert f"S3/{missing}" in err or f"S3.{missing}" in err
    # The same chart renders without backups and without the storage settings.
    assert render(helm, *MANAGER_IMAGE)


def test_missing_storage_setting_fails_even_without_schema_validation(helm):
    flags = [f for f in DOC_FLAGS if not f.startswith("global.S3.Bucket=")]
    proc = subprocess.run(
        [helm, "template", "r1", str(UMBRELLA), "--skip-schema-validation"]
        + [a for f in (*MANAGER_IMAGE, *flags) for a in ("--set", f)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "global.S3.Bucket is required because enclaveos-chart.Backup.CronSchedule is set" in proc.stderr


@pytest.mark.parametrize(
    "flag, named",
    [
        ("enclaveos-chart.Backup.CronSchedul=0 0 * * *", "CronSchedul"),
        ("global.S3.Bukcet=x", "Bukcet"),
        ("enclaveos-chart.Manager.Replicacount=0", "Replicacount"),
        ("enclaveos-chart.backup.S3Prefix=x", "backup"),
        ("globl.S3.Bucket=x", "globl"),
    ],
)
def test_misspelt_key_fails_naming_it(helm, flag, named):
    err = render_error(helm, *MANAGER_IMAGE, flag)
    assert named in err


@pytest.mark.parametrize(
    "flag, named",
    [
        ("enclaveos-chart.Manager.ReplicaCount=-1", "ReplicaCount"),
        ("enclaveos-chart.Backup.Compression=lz4", "Compression"),
        ("global.S3.Bucket=Not_A_Bucket", "Bucket"),
        ("enclaveos-chart.cockroachdb.enabled=false", "externalDatabase"),
    ],
)
def test_bad_values_fail_naming_them(helm, flag, named):
    err = render_error(helm, *MANAGER_IMAGE, flag)
    assert named in err


def test_missing_manager_image_fails_naming_it(helm):
    err = render_error(helm, *DOC_FLAGS)
    assert "enclaveos-chart.Manager.Image.Repository is required" in err


def test_no_secret_value_reaches_rendered_output(helm):
    sentinel = "wJalrXUtnFEMIK7MDENGbPxRfiCYzz9sentinel"
    # No value carries credentials: trying to pass one is refused and not echoed back.
    err = render_error(helm, *MANAGER_IMAGE, *DOC_FLAGS, f"global.S3.SecretAccessKey={sentinel}")
    assert sentinel not in err
    for values in CI_VALUES:
        objs = render(helm, files=[values])
        assert not [o for o in objs if o["kind"] in ("Secret", "ConfigMap")]
        for obj in objs:
            if obj["kind"] not in ("Pod", "Deployment", "StatefulSet", "CronJob", "Job"):
                continue
            for c in pod_spec(obj)["containers"]:
                env = env_of(c)
                for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD"):
                    if key in env:
                        assert "value" not in env[key] and "secretKeyRef" in env[key]["valueFrom"]
                assert not any("SECRET" in a or "PASSWORD" in a for a in c.get("args", []))


def test_umbrella_and_subchart_render_the_same_backup(helm):
    # The subchart on its own (globals passed directly) gives the same CronJob.
    sub = UMBRELLA / "charts" / "enclaveos-chart"
    sets = [f.removeprefix("enclaveos-chart.") for f in (*MANAGER_IMAGE, *DOC_FLAGS)]
    a = find(render(helm, *sets, chart=sub), "CronJob")
    b = find(doc_render(helm), "CronJob")
    assert pod_spec(a)["containers"] == pod_spec(b)["containers"]


def test_notes_tell_schedule_trigger_and_listing():
    notes = render_notes(*MANAGER_IMAGE, *DOC_FLAGS)
    assert 'runs on "0 0 * * *" (Etc/UTC)' in notes
    assert "The next backup starts at " in notes and " 00:00 UTC." in notes
    assert "kubectl -n apps create job --from=cronjob/r1-enclaveos-backup r1-enclaveos-backup-manual-$(date +%s)" in notes
    assert "s3 ls s3://acme-enclave-manager-backups/prod/enclave-manager/" in notes
    assert "helm test r1" in notes


def test_notes_name_the_objects_the_chart_renders_for_a_long_release_name(helm):
    release = "enclave-manager-production-eu-de-frankfurt-zone-1"   # the chart shortens its names
    objs = doc_render(helm, release=release)
    text = render_notes(*MANAGER_IMAGE, *DOC_FLAGS, release=release)
    statefulset = find(objs, "StatefulSet")["metadata"]["name"]
    assert not statefulset.startswith(f"{release}-enclaveos")
    assert f"StatefulSet {statefulset} (pod {statefulset}-0)" in text
    assert f"CronJob {find(objs, 'CronJob')['metadata']['name']} runs on" in text
    public = next(o["metadata"]["name"] for o in objs if o["kind"] == "Service" and o["metadata"]["name"].endswith("-public"))
    assert f"client service {public}:26257" in text
    manual = re.search(r"create job --from=cronjob/(\S+) (\S+)-\$\(date \+%s\)", text)
    assert manual and manual.group(1) == find(objs, "CronJob")["metadata"]["name"]
    assert len(manual.group(2)) + len("-1796646127") <= 63  # a Job's name carries into its pods' labels


# Kubernetes: a CronJob's or StatefulSet's name leaves room for its Jobs' and Pods' suffixes.
NAME_LIMITS = {"CronJob": 52, "StatefulSet": 52, "Service": 63, "Job": 63}
EVERY_COMPONENT = [
    ("enclaveos-chart.Backup.Method=native", "enclaveos-chart.Backup.IncrementalSchedule=0 1-23 * * *",
     "enclaveos-chart.restore.fromObject=latest"),
    ("enclaveos-chart.Verify.CronSchedule=0 4 * * 0",),
]


def _names(helm, release: str) -> dict[tuple[str, str, bool], str]:
    """(kind, component, incremental) -> name, for every object of the components whose names have a limit."""
    names = {}
    for sets in EVERY_COMPONENT:
        for o in render(helm, *MANAGER_IMAGE, *DOC_FLAGS, *sets, release=release):
            if o["kind"] in NAME_LIMITS:
                name = o["metadata"]["name"]
                component = "public" if name.endswith("-public") else o["metadata"]["labels"].get(
                    "app.kubernetes.io/component", name)
                incremental = "--incremental" in str(o["spec"])
                names[(o["kind"], component, incremental)] = name
    return names


def test_object_names_fit_kubernetes_limits_for_any_release_name(helm):
    short = _names(helm, "r1")
    assert set(short.values()) >= {"r1-enclaveos-backup", "r1-enclaveos-backup-incremental", "r1-enclaveos-verify",
                                   "r1-enclaveos-restore", "r1-enclaveos-cockroachdb", "r1-enclaveos-cockroachdb-public"}
    # Helm's longest release names (53 characters), two that differ only at the end.
    a, b = "a" * 52 + "1", "a" * 52 + "2"
    long_a, long_b = _names(helm, a), _names(helm, b)
    assert long_a.keys() == short.keys() == long_b.keys()
    for (kind, *_), name in long_a.items():
        assert len(name) <= NAME_LIMITS[kind], (kind, name, len(name))
    for key in short:
        assert long_a[key] != long_b[key], key  # a cut name carries a hash of the release name
        assert long_a[key].endswith(short[key].removeprefix("r1-enclaveos")), (long_a[key], short[key])
    # The longest release name each CronJob fits keeps the name whole.
    fits = "r" * (52 - len("-enclaveos-backup-incremental"))
    assert f"{fits}-enclaveos-backup-incremental" in _names(helm, fits).values()


def test_rendered_output_is_deterministic(helm):
    assert render_text(helm, *MANAGER_IMAGE, *DOC_FLAGS) == render_text(helm, *MANAGER_IMAGE, *DOC_FLAGS, extra=("--namespace", "apps"))
