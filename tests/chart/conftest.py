"""Fixtures of the chart tier: Helm 3 and Helm 4 binaries and cached renders."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import pytest
import yaml

from devkit import helm as helms
from devkit.paths import REPO  # noqa: F401 - the chart tests import it from here
from devkit.release import REQUIRED_FLAGS, SUBCHART, UMBRELLA, doc_flags

CI_VALUES = sorted(UMBRELLA.glob("ci/*-values.yaml"))
SUB_CI_VALUES = sorted(SUBCHART.glob("ci/*-values.yaml"))

# The original documentation's flags, verbatim (DESIGN.md section 2).
DOC_FLAGS = tuple(doc_flags("s3.eu-de.cloud-object-storage.appdomain.cloud", "prod/enclave-manager"))
# The Manager has no default image; every render needs one.
MANAGER_IMAGE = tuple(REQUIRED_FLAGS)


@pytest.fixture(scope="session", autouse=True)
def _helm_installed():
    helms.ensure_installed()


@pytest.fixture(params=helms.HELMS)
def helm(request) -> str:
    return str(helms.binary(request.param))


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


def notes(*sets: str, release: str = "r1") -> str:
    """The umbrella's NOTES: helm template does not render them; Helm 4 does in a client-side dry run."""
    cmd = [str(helms.binary("helm4")), "install", release, str(UMBRELLA), "--dry-run=client", "--namespace", "apps"]
    proc = subprocess.run(cmd + [a for s in sets for a in ("--set", s)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("NOTES:", 1)[1]


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
