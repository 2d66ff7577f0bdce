"""Where things are in this checkout: the kit runs from it (an editable install), never elsewhere."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]   # devkit/src/devkit/paths.py
TOOLS = REPO / ".tools"                       # what scripts/setup.sh installs besides .venv
VENV = REPO / ".venv"
SCRIPTS = REPO / "scripts"
# The console script of the interpreter running now (the virtualenv's).
CLI = str(Path(sys.executable).parent / "enclave-backup")
