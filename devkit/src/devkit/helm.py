"""The pinned Helm binaries (Helm 3 and Helm 4) that scripts/install-helm.sh puts in .tools/bin."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .paths import SCRIPTS, TOOLS

HELMS = ("helm3", "helm4")
BIN = TOOLS / "bin"


def binary(name: str) -> Path:
    """helm3 or helm4 -> its path."""
    return BIN / name


def ensure_installed() -> None:
    # The install script is idempotent and fast when the binaries are present.
    if not all(binary(h).is_file() for h in HELMS):
        subprocess.run([str(SCRIPTS / "install-helm.sh")], check=True)
