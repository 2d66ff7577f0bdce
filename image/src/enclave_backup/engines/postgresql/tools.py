"""Which pg_dump to run.

pg_dump N reads servers up to major N, never newer ones; and its output is only sure to load
into servers of major N or newer (pg_dump 17+ writes `SET transaction_timeout`, which 16 and
older reject). So the pg_dump of the server's own major is best, a newer one the fallback.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess

import psycopg

from ...errors import ConfigError, DatabaseError

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
    """Every pg_dump on PATH (not just the first) and in the packages' directories."""
    on_path = [os.path.join(d, "pg_dump") for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    found = [*on_path, *sorted(glob.glob(_PACKAGE_DIRS))]
    return list(dict.fromkeys(os.path.realpath(p) for p in found if os.path.isfile(p) and os.access(p, os.X_OK)))


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
    found = [(m, p) for p, m in ((p, client_major(p)) for p in candidates()) if m is not None]
    if not found:
        raise ConfigError("no pg_dump found on PATH or in /usr/lib/postgresql/*/bin; install the PostgreSQL "
                          "client programs or set ENCLAVE_BACKUP_PG_DUMP")
    return choose(server, found)


def choose(server: int, found: list[tuple[int, str]]) -> str:
    """The pg_dump of the server's major, else the oldest newer one; (major, path) pairs."""
    usable = sorted((m, p) for m, p in found if m >= server)
    if not usable:
        newest = max(found)
        raise DatabaseError(f"the server runs PostgreSQL {server} but the newest pg_dump here is {newest[0]} "
                            f"({newest[1]}), which cannot dump newer servers; use an image with pg_dump {server} "
                            "or set ENCLAVE_BACKUP_PG_DUMP")
    return usable[0][1]
