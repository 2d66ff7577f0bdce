"""Fixtures of the chart tier: Helm 3 and Helm 4 binaries and cached renders."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools" / "bin"
UMBRELLA = REPO / "charts" / "data-shield"
SUBCHART = UMBRELLA / "charts" / "enclaveos-chart"
CI_VALUES = sorted(UMBRELLA.glob("ci/*-values.yaml"))
SUB_CI_VALUES = sorted(SUBCHART.glob("ci/*-values.yaml"))
HELMS = ("helm3", "helm4")

# The original documentation's flags, verbatim (DESIGN.md section 2).
DOC_FLAGS = (
    "enclaveos-chart.Backup.CronSchedule=0 0 * * *",
    "global.S3.Endpoint=s3.eu-de.cloud-object-storage.appdomain.cloud",
    "global.S3.Bucket=acme-enclave-manager-backups",
    "global.S3.HmacSecretName=enclave-manager-backup-credentials",
    "enclaveos-chart.Backup.S3Prefix=prod/enclave-manager",
)
# The Manager has no default image; every render needs one.
MANAGER_IMAGE = (
    "enclaveos-chart.Manager.Image.Repository=registry.example.com/enclave-manager",
    "enclaveos-chart.Manager.Image.Tag=1.0.0",
)


@pytest.fixture(scope="session", autouse=True)
def _helm_installed():
    # The install script is idempotent and fast when the binaries are present.
    if not all((TOOLS / h).is_file() for h in HELMS):
        subprocess.run([str(REPO / "scripts" / "install-helm.sh")], check=True)


@pytest.fixture(params=HELMS)
def helm(request) -> str:
    return str(TOOLS / request.param)


class HelmError(AssertionError):
    def __init__(self, stderr: str):
        super().__init__(stderr)
        self.stderr = stderr


@functools.lru_cache(maxsize=None)
def _template(helm: str, chart: str, release: str, files: tuple, sets: tuple, extra: tuple):
    cmd = [helm, "template", release, chart, "--namespace", "apps"]
    for f in files:
        cmd += ["-f", str(f)]
    for s in sets:
        # --set-string would bypass the schema's integer checks; --set is what users type.
        cmd += ["--set", s]
    cmd += list(extra)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


def render(helm: str, *sets: str, files=(), chart: Path = UMBRELLA, release: str = "r1", extra=()) -> list[dict]:
    """Render the chart and return its objects; raises HelmError on failure."""
    rc, out, err = _template(helm, str(chart), release, tuple(files), tuple(sets), tuple(extra))
    if rc != 0:
        raise HelmError(err)
    return [d for d in yaml.safe_load_all(out) if d]


def render_text(helm: str, *sets: str, files=(), chart: Path = UMBRELLA, release: str = "r1", extra=()) -> str:
    rc, out, err = _template(helm, str(chart), release, tuple(files), tuple(sets), tuple(extra))
    if rc != 0:
        raise HelmError(err)
    return out


def render_error(helm: str, *sets: str, files=(), chart: Path = UMBRELLA) -> str:
    """Render expecting failure; return Helm's error output."""
    rc, out, err = _template(helm, str(chart), "r1", tuple(files), tuple(sets), ())
    assert rc != 0, f"rendering succeeded but should have failed:\n{out[:2000]}"
    return err


def find(objs: list[dict], kind: str, name: str | None = None) -> dict:
    hits = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in hits]}"
    return hits[0]


def kinds(objs: list[dict]) -> list[tuple[str, str]]:
    return sorted((o["kind"], o["metadata"]["name"]) for o in objs)


def pod_spec(obj: dict) -> dict:
    if obj["kind"] == "Pod":
        return obj["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def env_of(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}
