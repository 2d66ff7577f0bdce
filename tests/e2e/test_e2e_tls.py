"""`ci/external-db-values.yaml` end to end: the backup, the verify helm test and the restore hook
reach a PostgreSQL server that only accepts TLS, check its certificate against the CA from the
chart's Secret (verify-full: the chain and the Service name), and refuse a server they cannot
check. The rendered pods run as the kubelet would (devkit.podrunner), against moto."""

from __future__ import annotations

import subprocess
import tempfile
import uuid

import pytest
import yaml

from devkit.corpus import build_corpus, fingerprint
from devkit.helm import binary as helm_binary
from devkit.pgserver import start_server
from devkit.podrunner import PodRunner, secret
from devkit.release import BUCKET, CREDENTIALS, NAMESPACE, RELEASE, SIGNING_FLAGS, SIGNING_SECRET, UMBRELLA, \
    _signing_pair
from devkit.tlscerts import Authority

VALUES = UMBRELLA / "ci" / "external-db-values.yaml"
values = yaml.safe_load(VALUES.read_text())["enclaveos-chart"]["externalDatabase"]
DB_HOST, DB_PORT, DB_USER, DB = values["host"], values["port"], values["user"], values["database"]
DB_PASSWORD = "tls-backup-secret-Q7"
CA = Authority()


@pytest.fixture(scope="module")
def tls_pg():
    """A server whose certificate names the Service of the values file, reachable over TLS only."""
    server = start_server(tempfile.mkdtemp(prefix="enclave-e2e-tls-pg-"))
    issued = CA.issue(DB_HOST)
    server.require_tls(issued.cert_pem, issued.key_pem, CA.pem, DB_HOST)
    with server.connect() as conn:
        conn.execute(f"CREATE ROLE {DB_USER} SUPERUSER LOGIN PASSWORD '{DB_PASSWORD}'")
    yield server
    server.remove()


@pytest.fixture
def malbork(tls_pg):
    tls_pg.recreate_database(DB)
    with tls_pg.connect(DB) as conn:
        build_corpus(conn)
    return tls_pg


def release(helm: str, store, pg, prefix: str, *flags: str, ca_pem: bytes = CA.pem) -> PodRunner:
    """The values file as users apply it, with only the store moved to moto and signing on."""
    cmd = [str(helm_binary(helm)), "template", RELEASE, str(UMBRELLA), "--namespace", NAMESPACE, "-f", str(VALUES)]
    for flag in (f"global.S3.Endpoint={store.endpoint}", f"global.S3.Bucket={BUCKET}",
                 f"enclaveos-chart.Backup.S3Prefix={prefix}", "enclaveos-chart.Verify.HelmTest=true",
                 *SIGNING_FLAGS, *flags):
        cmd += ["--set", flag]
    rendered = subprocess.run(cmd, capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr
    objects = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    secrets = [secret(CREDENTIALS, {"AWS_ACCESS_KEY_ID": store.access_key,
                                    "AWS_SECRET_ACCESS_KEY": store.secret_key}, NAMESPACE),
               secret(values["existingSecret"], {values["existingSecretPasswordKey"]: DB_PASSWORD}, NAMESPACE),
               secret(values["caSecretName"], {"ca.crt": ca_pem.decode()}, NAMESPACE),
               secret(SIGNING_SECRET, _signing_pair(), NAMESPACE)]
    svc, _, _ = DB_HOST.partition(".svc")
    return PodRunner([*objects, *secrets], NAMESPACE, services={f"{svc}:{DB_PORT}": pg.port})


def done(result):
    assert (result.reason, result.exit_code) == ("Completed", 0), f"{result.message}\n{result.logs}"
    return result


def test_verify_full_backup_verify_and_restore_through_the_chart(helm, moto_store, malbork):
    prefix = f"tls/{helm}/{uuid.uuid4().hex[:8]}"
    with malbork.connect(DB) as conn:
        backed_up = fingerprint(conn)
    r = release(helm, moto_store, malbork, prefix)
    backup = done(r.run(r.cronjob()))
    assert backup.env["PGSSLMODE"] == "verify-full" and backup.env["PGHOST"] == DB_HOST
    key = backup.event("backup complete")["key"]
    assert DB_PASSWORD not in backup.logs

    done(r.run(r.test_pod(f"{RELEASE}-enclaveos-test-verify")))
    with malbork.connect(DB) as conn:
        conn.execute("INSERT INTO public.child VALUES (40, 2)")
    r = release(helm, moto_store, malbork, prefix, f"enclaveos-chart.restore.fromObject={key}")
    done(r.run(r.hook_job()))
    with malbork.connect(DB) as conn:
        assert fingerprint(conn) == backed_up


@pytest.mark.parametrize("trusted", ["another CA", "the right CA, another name"])
def test_a_server_that_cannot_be_checked_is_refused(helm, moto_store, malbork, trusted, tmp_path):
    prefix = f"tls/{helm}/{uuid.uuid4().hex[:8]}"
    if trusted == "another CA":
        r = release(helm, moto_store, malbork, prefix, ca_pem=Authority("someone else").pem)
        says = "certificate verify failed"
    else:
        # The same CA, a certificate for another name: only the host name check stops it.
        other = CA.issue("other.db.svc.cluster.local")
        malbork.require_tls(other.cert_pem, other.key_pem, CA.pem, "other.db.svc.cluster.local")
        r = release(helm, moto_store, malbork, prefix)
        says = "does not match host name"
    try:
        failed = r.run(r.cronjob())
    finally:
        right = CA.issue(DB_HOST)
        malbork.require_tls(right.cert_pem, right.key_pem, CA.pem, DB_HOST)
    assert (failed.reason, failed.exit_code) == ("Error", 3), failed.logs
    assert says in failed.logs and "the database server's certificate could not be checked" in failed.logs
    assert "externalDatabase.caSecretName" in failed.logs
    assert "retrying" not in failed.logs  # the same certificate comes back: fail at once
    listed = moto_store.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/")
    assert listed.get("KeyCount", 0) == 0
