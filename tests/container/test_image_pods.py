"""The rendered pods run from the image: the CronJob's backup, the restore hook Job, the helm test pod.

Each runs under podman with its pod's security context, env, volumes and memory limit
(tests/container/imagerunner.py), against a real PostgreSQL server and moto in auth mode.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import uuid

import pytest

from devkit.corpus import add_bulk, build_corpus, fingerprint
from devkit.imagerunner import memory_bytes
from devkit.podrunner import PodResult
from devkit.release import BACKUP_CRONJOB, BUCKET, image_runner as runner

DB = "malbork"


@pytest.fixture
def malbork(image_pg):
    image_pg.recreate_database(DB)
    return image_pg


@pytest.fixture
def prefix() -> str:
    return f"image/{uuid.uuid4().hex[:8]}"


def completed(result: PodResult) -> PodResult:
    assert (result.reason, result.exit_code) == ("Completed", 0), \
        f"{result.workload.pod_name}: {result.reason} {result.exit_code} {result.message}\n{result.logs}"
    return result


def stored(store, prefix) -> list[str]:
    listed = store.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/")
    return sorted(o["Key"] for o in listed.get("Contents", []))


def pending_uploads(store, prefix) -> list[dict]:
    return store.client().list_multipart_uploads(Bucket=BUCKET, Prefix=prefix + "/").get("Uploads", [])


def state(pg) -> dict:
    with pg.connect(DB) as conn:
        return fingerprint(conn)


def test_backup_restore_and_helm_test_pods_from_the_image(image, image_store, malbork, prefix):
    pg, store = malbork, image_store
    with pg.connect(DB) as conn:
        build_corpus(conn)
    backed_up = state(pg)

    r, objects = runner(image, store, pg, prefix)
    wl = r.cronjob(BACKUP_CRONJOB)
    ctr = wl.pod_spec["containers"][0]
    # What the container runs under: the chart's own settings, applied by the runner.
    assert ctr["image"] == image and ctr["securityContext"]["readOnlyRootFilesystem"] is True
    assert ctr["resources"]["limits"]["memory"] == "512Mi"
    backup = completed(r.run(wl, timeout=300))
    key = backup.event("backup complete")["key"]
    assert stored(store, prefix) == [key, key + ".manifest.json"]
    assert store.secret_key not in backup.logs and pg.password not in backup.logs

    with pg.connect(DB) as conn:
        conn.execute("DELETE FROM public.counters WHERE id < 100")
        conn.execute("DROP TABLE public.audited")
    assert state(pg) != backed_up

    r, objects = runner(image, store, pg, prefix, f"enclaveos-chart.restore.fromObject={key}")
    restored = completed(r.run(r.hook_job(), timeout=300))
    assert restored.event("restore complete")["key"] == key
    assert state(pg) == backed_up

    r, _ = runner(image, store, pg, prefix)
    assert completed(r.run(r.test_pod(), timeout=120)).event("bucket reachable")["bucket"] == BUCKET
    wrong = "wrong" + store.secret_key[5:]
    r, _ = runner(image, store, pg, prefix, secret_key=wrong)
    bad = r.run(r.test_pod(), timeout=120)
    assert (bad.reason, bad.exit_code) == ("Error", 4), bad.logs
    assert wrong not in bad.logs and store.secret_key not in bad.logs


# About 180 MB of SQL: nine 20 MiB parts uncompressed, several seconds of upload.
BULK_ROWS = 400_000


@pytest.fixture
def bulk(malbork):
    with malbork.connect(DB) as conn:
        add_bulk(conn, BULK_ROWS, width=400)
    return malbork


def test_backup_within_a_tight_memory_limit(image, image_store, bulk, prefix):
    # The chart's memory request as the limit: a quarter of the default limit, page cache included.
    r, _ = runner(image, image_store, bulk, prefix, "enclaveos-chart.Backup.Resources.limits.memory=128Mi")
    wl = r.cronjob(BACKUP_CRONJOB)
    assert memory_bytes(wl.pod_spec["containers"][0]["resources"]["limits"]["memory"]) == 128 << 20
    result = completed(r.run(wl, timeout=300))
    summary = result.event("backup complete")
    assert summary["rows"] == BULK_ROWS and summary["sql_bytes"] > 150e6
    assert stored(image_store, prefix) == [summary["key"], summary["key"] + ".manifest.json"]


def test_backup_killed_by_its_memory_limit_leaves_no_backup(image, image_store, bulk, prefix):
    # Control: the limit is really enforced. Below what the interpreter and its libraries
    # need, the kernel kills the program (SIGKILL, exit 137) and no backup appears.
    # (podman on cgroup v1 does not always flag the OOM kill itself.)
    r, _ = runner(image, image_store, bulk, prefix, "enclaveos-chart.Backup.Resources.limits.memory=48Mi")
    result = r.run(r.cronjob(BACKUP_CRONJOB), timeout=300)
    assert result.exit_code == 137 and result.reason in ("OOMKilled", "Error"), (result.reason, result.logs)
    assert "backup complete" not in result.logs
    assert stored(image_store, prefix) == []


def test_sigterm_to_the_container_mid_backup_aborts_the_upload(image, image_store, bulk, prefix):
    store = image_store
    r, _ = runner(image, store, bulk, prefix, "enclaveos-chart.Backup.Compression=none")
    running = r.start(r.cronjob(BACKUP_CRONJOB))
    # The program is PID 1: the container runtime's SIGTERM reaches it, not a shell.
    pid1 = running.pid1_cmdline()
    assert pid1[1:] == ["/opt/venv/bin/enclave-backup", "backup"], pid1
    deadline = time.monotonic() + 120
    while True:   # until a part is stored in the multipart upload: mid-upload
        uploads = pending_uploads(store, prefix)
        if uploads and store.client().list_parts(Bucket=BUCKET, Key=uploads[0]["Key"],
                                                 UploadId=uploads[0]["UploadId"]).get("Parts"):
            break
        assert running.proc.poll() is None, "the backup ended before a part was uploaded:\n" + "".join(running.out)
        assert time.monotonic() < deadline, "no part uploaded within 120 s:\n" + "".join(running.out)
        time.sleep(0.05)
    running.kill("TERM")
    result = running.wait(timeout=120)
    assert (result.reason, result.exit_code) == ("Error", 1), result.logs
    assert "SIGTERM" in result.event("backup failed")["error"]
    result.event("multipart upload aborted: no object was written")
    assert stored(store, prefix) == [] and pending_uploads(store, prefix) == []


def probe(workload, script: str):
    """The same pod with its command replaced by a shell script: what the container is given."""
    spec = copy.deepcopy(workload.pod_spec)
    spec["containers"][0]["command"] = ["/bin/sh", "-c", script]
    spec["containers"][0].pop("args", None)
    return dataclasses.replace(workload, pod_spec=spec)


def test_pod_security_context_and_limits_reach_the_container(image, image_store, image_pg, prefix):
    r, _ = runner(image, image_store, image_pg, prefix)
    wl = r.cronjob(BACKUP_CRONJOB)
    script = ("id -u; id -g; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; "
              "touch /opt/x 2>/dev/null && echo root-writable || echo root-read-only; "
              "touch /tmp/x && echo tmp-writable; "
              "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes")  # v2, v1
    result = completed(r.run(probe(wl, script), timeout=120))
    lines = result.stdout.split("\n")
    status = dict(line.split(":\t") for line in lines[2:6])
    assert lines[:2] == ["10001", "10001"]
    assert status == {"CapEff": "0000000000000000", "CapBnd": "0000000000000000", "NoNewPrivs": "1",
                      "Seccomp": "2"}   # 2: a seccomp filter (RuntimeDefault)
    assert lines[6:8] == ["root-read-only", "tmp-writable"]
    assert int(lines[8]) == 512 << 20   # Backup.Resources.limits.memory
    # Env from the rendered pod, Secrets resolved; nothing of the caller's environment.
    assert result.env["ENCLAVE_BACKUP_BUCKET"] == BUCKET and "VIRTUAL_ENV" not in result.env


def test_run_as_root_is_refused_before_the_container_starts(image, image_store, image_pg, prefix):
    r, _ = runner(image, image_store, image_pg, prefix)
    wl = r.cronjob(BACKUP_CRONJOB)
    spec = copy.deepcopy(wl.pod_spec)
    spec["securityContext"]["runAsUser"] = 0
    result = r.run(dataclasses.replace(wl, pod_spec=spec))
    assert (result.reason, result.exit_code) == ("CreateContainerConfigError", None)
    assert result.message == "container's runAsUser breaks non-root policy"
