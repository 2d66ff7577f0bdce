"""The chart and the image together: the rendered pods run as the kubelet would run them.

Every test renders the umbrella chart with the original documentation's --set flags
(Helm 3 and Helm 4) and runs against moto in auth mode and against Ceph RGW.
"""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest

from devkit.corpus import build_corpus, fingerprint
from devkit.podrunner import PodResult
from devkit.release import BUCKET, installed as pod, render, runner, user_secrets

DB = "malbork"


@pytest.fixture
def malbork(e2e_pg):
    """A fresh `malbork` with the full corpus, and no databases left over from other tests."""
    e2e_pg.recreate_database(DB)
    with e2e_pg.connect(DB) as conn:
        build_corpus(conn)
    return e2e_pg


@pytest.fixture
def prefix(helm) -> str:
    return f"prod/{helm}/{uuid.uuid4().hex[:8]}"


def state(pg) -> dict:
    with pg.connect(DB) as conn:
        return fingerprint(conn)


def sql(pg, *statements: str) -> None:
    with pg.connect(DB) as conn:
        for s in statements:
            conn.execute(s)


def completed(result: PodResult) -> PodResult:
    assert (result.reason, result.exit_code) == ("Completed", 0), \
        f"{result.workload.pod_name}: {result.reason} {result.exit_code} {result.message}\n{result.logs}"
    return result


def backups(store, prefix) -> list[str]:
    listed = store.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/")
    return sorted(o["Key"] for o in listed.get("Contents", []))


def run_backup(helm, store, pg, prefix) -> tuple[str, PodResult]:
    r, _ = pod(helm, store, pg, prefix)
    before = set(backups(store, prefix))
    result = completed(r.run(r.cronjob()))
    new = sorted(set(backups(store, prefix)) - before)
    assert len(new) == 2 and new[1] == new[0] + ".manifest.json", new
    return new[0], result


def run_restore(helm, store, pg, prefix, from_object) -> PodResult:
    r, objects = pod(helm, store, pg, prefix, f"enclaveos-chart.restore.fromObject={from_object}")
    # While a restore is set the Manager is held at 0 replicas (nothing writes meanwhile).
    manager = next(o for o in objects if o["kind"] == "Deployment")
    assert manager["spec"]["replicas"] == 0
    return completed(r.run(r.hook_job()))


def test_backup_restore_by_key_and_latest(helm, store, malbork, prefix):
    pg = malbork
    backed_up = state(pg)

    # The CronJob's pod: one complete backup under the prefix, manifest last.
    key, result = run_backup(helm, store, pg, prefix)
    assert key.startswith(f"{prefix}/{DB}-") and key.endswith(".sql.gz")
    s3 = store.client()
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=key + ".manifest.json")["Body"].read())
    assert manifest["database"] == DB and manifest["engine"] == "postgresql"
    assert manifest["sha256"] == hashlib.sha256(body).hexdigest() and manifest["stored_size"] == len(body)
    # Signed with the private key the backup pod alone mounts from the signing Secret.
    assert manifest["signature"]["algorithm"] == "ed25519"
    assert result.env["ENCLAVE_BACKUP_SIGNING_KEY_FILE"].endswith("/private.pem")
    assert "ENCLAVE_BACKUP_SIGNING_PUBLIC_KEY_FILE" not in result.env
    assert result.event("backup complete")["key"] == key
    # The credentials reached the program only through the Secret, and never its logs.
    assert result.env["AWS_SECRET_ACCESS_KEY"] == store.secret_key and store.secret_key not in result.logs
    assert pg.password not in result.logs

    # Change the database, then restore that object by its key through the hook Job.
    sql(pg, "DELETE FROM public.counters WHERE id < 100", "DROP TABLE public.audited",
        "INSERT INTO public.parent VALUES (3, NULL)")
    assert state(pg) != backed_up
    restored = run_restore(helm, store, pg, prefix, key)
    assert restored.event("restore complete")["key"] == key
    assert state(pg) == backed_up
    with pg.connect() as conn:
        kept = [n for (n,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'malbork_pre_restore_%'")]
    assert len(kept) == 1   # the changed database is kept, not dropped

    # The same hook again (helm upgrade --reuse-values): nothing happens, later writes survive.
    sql(pg, "INSERT INTO public.counters (label) VALUES ('written after the restore')")
    after_restore = state(pg)
    again = run_restore(helm, store, pg, prefix, key)
    assert again.event("restore skipped: the database already holds this backup")["key"] == key
    assert state(pg) == after_restore

    # A second backup, damage, restore `latest`: the newest backup comes back.
    key2, _ = run_backup(helm, store, pg, prefix)
    assert key2 > key
    sql(pg, "TRUNCATE public.counters", "DROP VIEW public.happy_rows")
    latest = run_restore(helm, store, pg, prefix, "latest")
    assert latest.event("restore complete")["key"] == key2
    assert state(pg) == after_restore
    sql(pg, "INSERT INTO public.counters (label) VALUES ('after latest')")
    after_latest = state(pg)
    run_restore(helm, store, pg, prefix, "latest").event("restore skipped: the database already holds this backup")
    assert state(pg) == after_latest


def test_helm_test_pod_checks_the_credentials(helm, store, malbork, prefix):
    r, _ = pod(helm, store, malbork, prefix)
    good = completed(r.run(r.test_pod()))
    assert good.event("bucket reachable")["bucket"] == BUCKET

    wrong = "wrong" + store.secret_key[5:]
    r, _ = pod(helm, store, malbork, prefix, secret_key=wrong)
    bad = r.run(r.test_pod())
    assert bad.reason == "Error" and bad.exit_code == 4, bad.logs   # object storage error
    assert "rejected the credentials" in bad.logs
    assert wrong not in bad.logs and store.secret_key not in bad.logs


def test_backup_pod_without_the_secret_does_not_start(helm, store, malbork, prefix):
    objects = render(helm, store.endpoint, prefix)
    # The user forgot `kubectl create secret generic enclave-manager-backup-credentials ...`.
    only_db = [s for s in user_secrets("x", "y", malbork.password)
               if s["metadata"]["name"] != "enclave-manager-backup-credentials"]
    r = runner(objects, only_db, malbork.port)
    result = r.run(r.cronjob())
    assert result.reason == "CreateContainerConfigError" and result.exit_code is None
    assert result.message == 'secret "enclave-manager-backup-credentials" not found'
    assert backups(store, prefix) == []


def test_restore_without_the_signing_secret_does_not_start_and_changes_nothing(helm, store, malbork, prefix):
    key, _ = run_backup(helm, store, malbork, prefix)
    live = state(malbork)
    objects = render(helm, store.endpoint, prefix, f"enclaveos-chart.restore.fromObject={key}")
    # The user deleted the signing Secret: the restore pod cannot mount the public key.
    without = [s for s in user_secrets(store.access_key, store.secret_key, malbork.password)
               if s["metadata"]["name"] != "enclave-backup-signing"]
    r = runner(objects, without, malbork.port)
    result = r.run(r.hook_job())
    assert result.reason == "CreateContainerConfigError" and result.exit_code is None
    assert result.message == ('MountVolume.SetUp failed for volume "signing-public-key" : '
                              'secret "enclave-backup-signing" not found')
    assert state(malbork) == live


def test_rendered_pods_use_the_documented_values(helm, store, malbork, prefix):
    r, objects = pod(helm, store, malbork, prefix)
    cron = next(o for o in objects if o["kind"] == "CronJob")
    assert cron["spec"]["schedule"] == "0 0 * * *"
    wl = r.cronjob()
    env = r.container_env(wl.pod_spec["containers"][0], wl)
    assert env["ENCLAVE_BACKUP_PREFIX"] == prefix and env["ENCLAVE_BACKUP_BUCKET"] == BUCKET
    assert env["AWS_ENDPOINT_URL"] == store.endpoint
    # The database address as the pod sees it, and where the cluster DNS stand-in sends it.
    assert env["PGHOST"] == "postgres.databases.svc.cluster.local" and env["PGPORT"] == "5432"
    assert env["PGPASSWORD"] == malbork.password   # from Secret malbork-db via secretKeyRef
    routed = r.resolve_env(env)
    assert (routed["PGHOST"], routed["PGHOSTADDR"], routed["PGPORT"]) == (env["PGHOST"], "127.0.0.1", str(malbork.port))
    # The Job's activeDeadlineSeconds is what the runner enforces.
    assert wl.deadline == cron["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 21600


def test_retention_verify_cronjob_and_helm_test_verify(helm, store, malbork, prefix):
    pg = malbork
    ops = ("enclaveos-chart.Backup.Retention.KeepLast=1", "enclaveos-chart.Verify.CronSchedule=0 3 * * 0",
           "enclaveos-chart.Verify.HelmTest=true")
    r, _ = pod(helm, store, pg, prefix, *ops)
    first = completed(r.run(r.cronjob("enclave-enclaveos-backup"))).event("backup complete")["key"]
    second = completed(r.run(r.cronjob("enclave-enclaveos-backup")))
    newest = second.event("backup complete")["key"]
    # The CronJob pruned after its backup: only the newest backup is left.
    assert second.event("prune: deleted")["key"] == first
    assert backups(store, prefix) == [newest, newest + ".manifest.json"]

    live = state(pg)
    verified = completed(r.run(r.cronjob("enclave-enclaveos-verify")))
    assert verified.event("verify complete")["key"] == newest
    record = json.loads(store.client().get_object(Bucket=BUCKET, Key=newest + ".verify.json")["Body"].read())
    assert record["passed"] is True
    on_demand = completed(r.run(r.test_pod("enclave-enclaveos-test-verify")))
    assert on_demand.event("verify complete")["key"] == newest
    assert state(pg) == live
    with pg.connect() as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'malbork\\_%'").fetchone()[0] == 0
