"""The release the end-to-end and container tests and the demo install: the documented flags,
rendered by Helm, and the runners of its pods.

The database is the chart's external-database option pointed at a PostgreSQL service in
another namespace: the chart's own CockroachDB cannot run here, and this is a
configuration the chart supports as is, with every database variable (the password via
secretKeyRef, the engine left to `auto`) rendered by the chart rather than patched in.
"""

from __future__ import annotations

import functools
import shlex
import subprocess

import yaml

from .helm import binary as helm_binary
from .imagerunner import ImagePodRunner
from .paths import REPO
from .podrunner import PodRunner, secret
from .signingkeys import signing_secret_data

UMBRELLA = REPO / "charts" / "data-shield"
SUBCHART = UMBRELLA / "charts" / "enclaveos-chart"

RELEASE = "enclave"
NAMESPACE = "apps"
BUCKET = "acme-enclave-manager-backups"          # <orgname>-enclave-manager-backups
CREDENTIALS = "enclave-manager-backup-credentials"
DB_SECRET = "malbork-db"
SIGNING_SECRET = "enclave-backup-signing"        # README: the key pair that signs every manifest
DB_SERVICE, DB_PORT = "postgres.databases", 5432  # a PostgreSQL Service in namespace "databases"
BACKUP_CRONJOB = f"{RELEASE}-enclaveos-backup"   # other CronJobs may render beside it


def doc_flags(endpoint: str, prefix: str) -> list[str]:
    """The original documentation's --set flags, as the shell passes them to helm."""
    return [
        "enclaveos-chart.Backup.CronSchedule=0 0 * * *",
        f"global.S3.Endpoint={endpoint}",
        f"global.S3.Bucket={BUCKET}",
        f"global.S3.HmacSecretName={CREDENTIALS}",
        f"enclaveos-chart.Backup.S3Prefix={prefix}",
    ]


# Signed backups, as README's install section sets them up.
SIGNING_FLAGS = [f"enclaveos-chart.Backup.Signing.SecretName={SIGNING_SECRET}"]


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
    cmd = [str(helm_binary(helm)), "template", RELEASE, str(UMBRELLA), "--namespace", NAMESPACE]
    for flag in [*doc_flags(endpoint, prefix), *REQUIRED_FLAGS, *SIGNING_FLAGS, *DB_FLAGS, *extra]:
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
    """What the user creates with kubectl before installing (the documented credentials Secret,
    the database password, the signing key pair: one pair per process, so every render agrees)."""
    return [secret(CREDENTIALS, {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}, NAMESPACE),
            secret(DB_SECRET, {"password": db_password}, NAMESPACE),
            secret(SIGNING_SECRET, _signing_pair(), NAMESPACE)]


@functools.cache
def _signing_pair() -> dict[str, str]:
    return signing_secret_data()


def runner(objects: list[dict], secrets: list[dict], pg_port: int, kind: type[PodRunner] = PodRunner) -> PodRunner:
    """The rendered objects and the user's Secrets, with the database Service mapped to `pg_port`."""
    return kind([*objects, *secrets], NAMESPACE, services={f"{DB_SERVICE}:{DB_PORT}": pg_port})


def installed(helm: str, store, pg, prefix: str, *flags: str, secret_key: str | None = None,
              kind: type[PodRunner] = PodRunner) -> tuple[PodRunner, list[dict]]:
    """The chart rendered with the documented flags against `store` and `pg` (the user's Secret
    holding `secret_key` if given), a runner of its pods, and the rendered objects."""
    objects = render(helm, store.endpoint, prefix, *flags)
    secrets = user_secrets(store.access_key, secret_key or store.secret_key, pg.password)
    return runner(objects, secrets, pg.port, kind), objects


def image_runner(image: str, store, pg, prefix: str, *flags: str,
                 secret_key: str | None = None) -> tuple[ImagePodRunner, list[dict]]:
    """The same (Helm 4) with the backup image set to `image`, its pods run from that image."""
    return installed("helm4", store, pg, prefix, f"enclaveos-chart.Backup.Image.Repository={image.rpartition(':')[0]}",
                     *flags, secret_key=secret_key, kind=ImagePodRunner)
