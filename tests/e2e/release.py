"""The release the end-to-end tests and the demo install: the documented flags, rendered by Helm.

The database is the chart's external-database option pointed at a PostgreSQL service in
another namespace: the chart's own CockroachDB cannot run here, and this is a
configuration the chart supports as is, with every database variable (the password via
secretKeyRef, the engine left to `auto`) rendered by the chart rather than patched in.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import yaml

from tests.e2e.podrunner import PodRunner, secret

REPO = Path(__file__).resolve().parents[2]
UMBRELLA = REPO / "charts" / "data-shield"
TOOLS = REPO / ".tools" / "bin"
HELMS = ("helm3", "helm4")

RELEASE = "enclave"
NAMESPACE = "apps"
BUCKET = "acme-enclave-manager-backups"          # <orgname>-enclave-manager-backups
CREDENTIALS = "enclave-manager-backup-credentials"
DB_SECRET = "malbork-db"
DB_SERVICE, DB_PORT = "postgres.databases", 5432  # a PostgreSQL Service in namespace "databases"


def doc_flags(endpoint: str, prefix: str) -> list[str]:
    """The original documentation's --set flags, as the shell passes them to helm."""
    return [
        "enclaveos-chart.Backup.CronSchedule=0 0 * * *",
        f"global.S3.Endpoint={endpoint}",
        f"global.S3.Bucket={BUCKET}",
        f"global.S3.HmacSecretName={CREDENTIALS}",
        f"enclaveos-chart.Backup.S3Prefix={prefix}",
    ]


# What the chart needs besides: the Manager's image (no default) and the database.
REQUIRED_FLAGS = [
    "enclaveos-chart.Manager.Image.Repository=registry.example.com/enclave-manager",
    "enclaveos-chart.Manager.Image.Tag=1.0.0",
]
DB_FLAGS = [
    "enclaveos-chart.cockroachdb.enabled=false",
    f"enclaveos-chart.externalDatabase.host={DB_SERVICE}.svc.cluster.local",
    f"enclaveos-chart.externalDatabase.port={DB_PORT}",
    "enclaveos-chart.externalDatabase.user=postgres",
    "enclaveos-chart.externalDatabase.sslMode=disable",
    f"enclaveos-chart.externalDatabase.existingSecret={DB_SECRET}",
]


def helm_command(helm: str, endpoint: str, prefix: str, *extra: str) -> list[str]:
    cmd = [str(TOOLS / helm), "template", RELEASE, str(UMBRELLA), "--namespace", NAMESPACE]
    for flag in [*doc_flags(endpoint, prefix), *REQUIRED_FLAGS, *DB_FLAGS, *extra]:
        cmd += ["--set", flag]
    return cmd


def render(helm: str, endpoint: str, prefix: str, *extra: str) -> list[dict]:
    proc = subprocess.run(helm_command(helm, endpoint, prefix, *extra), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"helm template failed:\n{proc.stderr}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def shell_line(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def user_secrets(access_key: str, secret_key: str, db_password: str) -> list[dict]:
    """What the user creates with kubectl before installing (the documented credentials Secret)."""
    return [secret(CREDENTIALS, {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}, NAMESPACE),
            secret(DB_SECRET, {"password": db_password}, NAMESPACE)]


def runner(objects: list[dict], secrets: list[dict], pg_port: int) -> PodRunner:
    return PodRunner([*objects, *secrets], NAMESPACE, services={f"{DB_SERVICE}:{DB_PORT}": pg_port})
