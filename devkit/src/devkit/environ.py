"""The caller's environment without the settings the program reads, so none leaks into a run."""

from __future__ import annotations

import os
from typing import Mapping

# libpq, AWS and the program's own variables (DESIGN.md section 4).
PROGRAM_PREFIXES = ("PG", "AWS_", "ENCLAVE_BACKUP_")


def is_program_setting(name: str) -> bool:
    return name.startswith(PROGRAM_PREFIXES)


def scrubbed(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """A copy of `environ` without any variable the program would read."""
    return {k: v for k, v in environ.items() if not is_program_setting(k)}
