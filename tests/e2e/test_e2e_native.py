"""The native method end to end: the chart rendered with Backup.Method=native and an incremental
schedule, its two CronJobs' pods run as the kubelet would, against moto and a server that answers
as CockroachDB does (devkit.wireserver with the recorded answers of tests/unit/crdb_recorded/native.py;
no CockroachDB can run here). One Helm version and one S3 server: the rendering and the stores are
covered for both by test_e2e.py.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import runpy
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from devkit.helm import HELMS
from devkit.release import BACKUP_CRONJOB, BUCKET, render, runner, user_secrets
from devkit.wireserver import WireServer

from .test_e2e import backups, completed

RECORDED = runpy.run_path(str(Path(__file__).parents[1] / "unit" / "crdb_recorded" / "native.py"))
DB = "malbork"
HELM = HELMS[-1]
INCREMENTAL_CRONJOB = f"{BACKUP_CRONJOB}-incremental"
DB_PASSWORD = "crdb-wire-password-Xq7"
# Two polls per job (running, then done): the program waits its 5 s poll interval once per run.
JOB_STATES = [("running", 0.5, "", "exporting ranges"), ("succeeded", 1.0)]


@pytest.fixture
def cluster():
    rules = RECORDED["cockroach_rules"](DB, job_states=JOB_STATES)
    with WireServer(rules, crdb_version=RECORDED["VERSION"]) as server:
        yield server, rules


def manifest_of(store, key: str) -> dict:
    return json.loads(store.client().get_object(Bucket=BUCKET, Key=key + ".manifest.json")["Body"].read())


def test_native_full_then_incremental(moto_store, cluster):
    store, (server, crdb) = moto_store, cluster
    secret_forms = {store.secret_key, quote(store.secret_key, safe=""), quote(store.secret_key)}
    prefix = f"prod/native/{uuid.uuid4().hex[:8]}"
    objects = render(HELM, store.endpoint, prefix, "enclaveos-chart.Backup.Method=native",
                     "enclaveos-chart.Backup.IncrementalSchedule=0 1-23 * * *")
    r = runner(objects, user_secrets(store.access_key, store.secret_key, DB_PASSWORD), server.port)

    full = completed(r.run(r.cronjob(BACKUP_CRONJOB)))
    after_full = len(server.statements)
    incremental = completed(r.run(r.cronjob(INCREMENTAL_CRONJOB)))
    assert incremental.argv[1:] == ["backup", "--incremental"]

    # What the server saw, in order, run by run.
    sent = [s.sql for s in server.statements]
    backup_stmts = [s for s in sent if s.startswith("BACKUP ")]
    assert len(backup_stmts) == 2
    first, second = backup_stmts
    assert re.fullmatch(r"BACKUP DATABASE \"malbork\" INTO 'external://enclave_backup_[0-9a-f]{16}' AS OF SYSTEM "
                        r"TIME \d+\.\d{10} WITH detached, revision_history", first), first
    folder = RECORDED["folder_of"](crdb.timestamps[0])
    assert re.fullmatch(rf"BACKUP DATABASE \"malbork\" INTO '{re.escape(folder)}' IN 'external://enclave_backup_"
                        r"[0-9a-f]{16}' AS OF SYSTEM TIME \d+\.\d{10} WITH detached, revision_history", second), second
    assert sent.index(second) >= after_full
    for run in (sent[:after_full], sent[after_full:]):
        created = [s for s in run if s.startswith("CREATE EXTERNAL CONNECTION ")]
        dropped = [s for s in run if s.startswith("DROP EXTERNAL CONNECTION ")]
        assert len(created) == len(dropped) == 1
        name = re.match(r'CREATE EXTERNAL CONNECTION ("[^"]+")', created[0]).group(1)
        assert dropped[0] == f"DROP EXTERNAL CONNECTION {name}"
        assert run.index(created[0]) < run.index(next(s for s in run if s.startswith("BACKUP "))) \
            < run.index(next(s for s in run if "SHOW BACKUP" in s)) < run.index(dropped[0])
        # The credentials go to the cluster inside the connection's URL (URL-encoded), and nowhere else.
        assert f"AWS_SECRET_ACCESS_KEY={quote(store.secret_key, safe='')}&" in created[0]
        assert [s for s in run if any(form in s for form in secret_forms)] == created
    assert crdb.connections == {}  # both runs dropped their connection
    assert [s.params for s in server.statements if "crdb_internal.jobs" in s.sql] == \
        [(RECORDED["FIRST_JOB_ID"],)] * 2 + [(RECORDED["FIRST_JOB_ID"] + 1,)] * 2

    # Per run a pointer object and its manifest, method native; the incremental in the full's chain.
    keys = backups(store, prefix)
    pointers = [k for k in keys if k.endswith(".crdb")]
    assert len(pointers) == 2 and sorted(keys) == sorted([*pointers, *(p + ".manifest.json" for p in pointers)])
    assert full.event("backup complete")["key"] in pointers and incremental.event("backup complete")["key"] in pointers
    m_full = manifest_of(store, full.event("backup complete")["key"])
    m_inc = manifest_of(store, incremental.event("backup complete")["key"])
    first_job = RECORDED["FIRST_JOB_ID"]
    for m, kind, job in ((m_full, "full", first_job), (m_inc, "incremental", first_job + 1)):
        assert (m["method"], m["engine"], m["database"]) == ("native", "cockroachdb", DB)
        assert m["native"]["type"] == kind and m["native"]["job_id"] == job and m["native"]["folder"] == folder
        assert m["native"]["revision_history"] is True
        assert m["tables"] == {"public.users": 281 if kind == "full" else 28,
                               "public.vehicles": 2 if kind == "full" else 0}
    assert m_inc["native"]["collection"] == m_full["native"]["collection"]
    assert m_full["snapshot"] == crdb.timestamps[0] and m_inc["snapshot"] == crdb.timestamps[1]

    # No credential in any line the pods printed, the rendered objects, the manifests or the pointers.
    assert not any(form in json.dumps(objects) for form in secret_forms)
    s3 = store.client()
    for result in (full, incremental):
        assert result.env["AWS_SECRET_ACCESS_KEY"] == store.secret_key
        assert not any(form in result.logs for form in secret_forms)
    for key in keys:
        text = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
        assert not any(form in text for form in secret_forms), key

    # `enclave-backup list` in the backup CronJob's pod (its env, mounts and image), newest first.
    wl = r.cronjob(BACKUP_CRONJOB)
    spec = copy.deepcopy(wl.pod_spec)
    spec["containers"][0]["args"] = ["list", "--json"]
    listed = completed(r.run(dataclasses.replace(wl, pod_spec=spec)))
    rows = json.loads(listed.stdout)
    assert [row["key"] for row in rows] == [incremental.event("backup complete")["key"],
                                           full.event("backup complete")["key"]]
    assert [(row["method"], row["native"]["type"]) for row in rows] == [("native", "incremental"), ("native", "full")]
    assert not any(form in listed.logs for form in secret_forms)


def test_native_without_licence_backs_up_without_revision_history(moto_store):
    """A 23.1 cluster without an Enterprise licence refuses revision_history (XXC02): the run takes
    the full backup without it, says so, and SHOW BACKUP's TIMESTAMP (not yet TIMESTAMPTZ) end
    time still finds the layer."""
    store = moto_store
    version = "CockroachDB CCL v23.1.28 (x86_64-pc-linux-gnu, built 2024/09/23 18:00:00, go1.22.5)"
    crdb = RECORDED["cockroach_rules"](DB, version=version, job_states=["succeeded"], licensed=False)
    prefix = f"prod/native/{uuid.uuid4().hex[:8]}"
    objects = render(HELM, store.endpoint, prefix, "enclaveos-chart.Backup.Method=native")
    with WireServer(crdb, crdb_version=version) as server:
        r = runner(objects, user_secrets(store.access_key, store.secret_key, DB_PASSWORD), server.port)
        result = completed(r.run(r.cronjob(BACKUP_CRONJOB)))
    attempts = [s.sql for s in server.statements if s.sql.startswith("BACKUP ")]
    assert [a.endswith("WITH detached, revision_history") for a in attempts] == [True, False]
    assert attempts[1].endswith("WITH detached")
    assert "revision history" in result.event("the cluster's licence does not allow revision history: this backup "
                                              "has none, so it restores to its own end time only (restore.asOf "
                                              "needs revision history)")["hint"]
    manifest = manifest_of(store, result.event("backup complete")["key"])
    assert manifest["native"]["revision_history"] is False and manifest["tables"]["public.users"] == 281


def test_helm_test_storage_check_asks_the_nodes_to_reach_the_store(moto_store):
    """The rendered `helm test` pod (`check`) with Method=native: the bucket from the pod, then a probe
    database backed up by the cluster's nodes into the store (the recorded cluster writes its files with
    the URL's keys), and all of it removed again."""
    store = moto_store
    writer = RECORDED["s3_writer"]()
    written = []
    crdb = RECORDED["cockroach_rules"](DB, job_states=JOB_STATES,
                                       writer=lambda url, path, body: (written.append(url), writer(url, path, body)))
    prefix = f"prod/native/{uuid.uuid4().hex[:8]}"
    objects = render(HELM, store.endpoint, prefix, "enclaveos-chart.Backup.Method=native")
    with WireServer(crdb, crdb_version=RECORDED["VERSION"]) as server:
        r = runner(objects, user_secrets(store.access_key, store.secret_key, DB_PASSWORD), server.port)
        pod = next(o["metadata"]["name"] for o in objects if o.get("kind") == "Pod"
                   and o["metadata"]["name"].endswith("-test-storage"))
        result = completed(r.run(r.test_pod(pod)))
    assert result.argv[1:] == ["check"]
    assert result.event("bucket reachable")["bucket"] == BUCKET
    result.event("the CockroachDB nodes reach the store: a probe backup was written and removed")
    created = [s.sql for s in server.statements if s.sql.startswith("CREATE DATABASE ")]
    assert len(created) == 1
    name = re.fullmatch(r'CREATE DATABASE "(enclave_backup_probe_[0-9a-f]{16})"', created[0]).group(1)
    backups_sent = [s.sql for s in server.statements if s.sql.startswith("BACKUP ")]
    assert len(backups_sent) == 1 and backups_sent[0].startswith(f'BACKUP DATABASE "{name}" INTO \'external://')
    assert f'DROP DATABASE IF EXISTS "{name}" CASCADE' in [s.sql for s in server.statements]
    assert name not in crdb.databases and crdb.connections == {}
    assert written and all(f"/{prefix}/native/probe-" in url for url in written)
    assert backups(store, f"{prefix}/native") == []  # the probe's objects are gone
    secret_forms = {store.secret_key, quote(store.secret_key, safe=""), quote(store.secret_key)}
    assert not any(form in result.logs for form in secret_forms)
