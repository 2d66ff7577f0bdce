"""Shared fixtures: one real PostgreSQL server and one moto S3 server (auth mode) per run."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from devkit.environ import scrubbed
from devkit.motoserver import MotoServer
from devkit.paths import CLI
from devkit.pgserver import SUPPORTED_MAJORS, TOOLS, start_server
from devkit.signingkeys import SigningKeys, make_signing_keys, signed
from enclave_backup.segments import Segmenter


@pytest.fixture(scope="session")
def pg():
    server = start_server(tempfile.mkdtemp(prefix="enclave-pg-"))
    yield server
    server.remove()


@pytest.fixture(scope="session")
def moto():
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def bucket(moto):
    name = f"bkt-{uuid.uuid4().hex[:12]}"
    moto.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def dbname(pg):
    name = f"malbork_{uuid.uuid4().hex[:8]}"
    pg.create_database(name)
    yield name
    pg.drop_databases(name)


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict]:
        out = []
        for line in self.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def event(self, name: str) -> dict:
        matches = [e for e in self.events if e.get("event") == name]
        assert matches, f"no {name!r} event in:\n{self.stdout}\n{self.stderr}"
        return matches[-1]


# One ed25519 key pair for the run, as the chart mounts it from Backup.Signing.SecretName; module
# level, so that helpers which hand-make backups can sign their manifests as the backup Job would.
SIGNING_KEYS = make_signing_keys(Path(tempfile.mkdtemp(prefix="enclave-signing-")))


@pytest.fixture(scope="session")
def signing_keys() -> SigningKeys:
    return SIGNING_KEYS


@pytest.fixture
def cli_env(pg, moto, bucket, dbname, signing_keys):
    """The environment the CronJob gives the container, pointing at the loopback servers."""
    base = scrubbed()
    # Every major's pg_dump on PATH, as in the image: the program picks the server's own.
    path = ":".join([base.get("PATH", ""), *(str(TOOLS / str(m) / "bin") for m in SUPPORTED_MAJORS if m != 15)])
    return {**base, "PATH": path, **pg.env(dbname), **moto.env(), "ENCLAVE_BACKUP_BUCKET": bucket,
            "ENCLAVE_BACKUP_PREFIX": "nightly", "ENCLAVE_BACKUP_PROGRESS_SECONDS": "1", **signing_keys.env()}


def run_cli(env: dict, *args: str, timeout: float = 300) -> CliResult:
    proc = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def backup(env: dict) -> str:
    """Run a backup that must succeed; its object key."""
    result = run_cli(env, "backup")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.event("backup complete")["key"]


def segments_of(stored: bytes) -> dict:
    """The manifest's `segments` for these stored bytes, as the backup records them."""
    segmenter = Segmenter()
    segmenter.update(stored)
    return segmenter.result()


def plant_statement(s3, bucket: str, key: str, statement: str, *, recompute: bool = True,
                    signing_keys: SigningKeys | None = None) -> None:
    """What an attacker holding only the bucket's keys can do: append `statement` to a backup's script;
    with `recompute`, make the manifest's sizes, sha256 and segments match again, and sign it
    with `signing_keys` when given (the backup Job's key leaked)."""
    obj = s3.get_object(Bucket=bucket, Key=key)
    script = gzip.decompress(obj["Body"].read()) + b"\n" + statement.encode() + b"\n"
    stored = gzip.compress(script)
    s3.put_object(Bucket=bucket, Key=key, Body=stored, Metadata=obj["Metadata"])
    if recompute:
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=key + ".manifest.json")["Body"].read())
        manifest.update(stored_size=len(stored), sha256=hashlib.sha256(stored).hexdigest(),
                        uncompressed_size=len(script), segments=segments_of(stored))
        body = signed(manifest, signing_keys) if signing_keys else json.dumps(manifest).encode()
        s3.put_object(Bucket=bucket, Key=key + ".manifest.json", Body=body)


def spawn_cli(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
