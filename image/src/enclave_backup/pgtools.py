"""Which pg_dump to run: pg_dump N reads servers up to major N, never newer ones."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

import psycopg

from .errors import ConfigError, DatabaseError

# Where Debian's and PGDG's packages put each major's client programs.
_PACKAGE_DIRS = "/usr/lib/postgresql/*/bin/pg_dump"
_VERSION = re.compile(rb"\(PostgreSQL\) (\d+)(?:\.(\d+))?")


def server_major(conn: psycopg.Connection) -> int:
    return conn.info.server_version // 10000


def client_major(path: str) -> int | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(out)
    return int(match.group(1)) if match else None


def candidates() -> list[str]:
    found = [shutil.which("pg_dump") or "", *sorted(glob.glob(_PACKAGE_DIRS))]
    return list(dict.fromkeys(p for p in found if p and os.access(p, os.X_OK)))


def find_pg_dump(server: int, configured: str = "") -> str:
    """The configured pg_dump, or the newest one installed; refuses one older than the server."""
    if configured:
        major = client_major(configured)
        if major is None:
            raise ConfigError(f"ENCLAVE_BACKUP_PG_DUMP={configured!r} is not a runnable pg_dump")
        if major < server:
            raise DatabaseError(f"the server runs PostgreSQL {server} but ENCLAVE_BACKUP_PG_DUMP is pg_dump {major}, "
                                f"which cannot dump newer servers; point it at pg_dump {server} or newer")
        return configured
    versions = {path: client_major(path) for path in candidates()}
    usable = sorted(((m, p) for p, m in versions.items() if m is not None), reverse=True)
    if not usable:
        raise ConfigError("no pg_dump found on PATH or in /usr/lib/postgresql/*/bin; install the PostgreSQL "
                          "client programs or set ENCLAVE_BACKUP_PG_DUMP")
    major, path = usable[0]
    if major < server:
        raise DatabaseError(f"the server runs PostgreSQL {server} but the newest pg_dump here is {major} ({path}), "
                            f"which cannot dump newer servers; use an image with pg_dump {server} or newer "
                            "or set ENCLAVE_BACKUP_PG_DUMP")
    return path
