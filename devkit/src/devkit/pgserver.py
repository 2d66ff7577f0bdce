"""A throw-away PostgreSQL server on loopback, for tests, the demo and benchmarks.

initdb refuses to run as root, so as root the server runs as the `postgres` user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from .net import free_port
from .paths import TOOLS as _TOOLS

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")
DEBIAN_MAJOR = 15
# Other majors, installed from PyPI wheels by scripts/install-postgres.sh.
TOOLS = _TOOLS / "postgresql"
SUPPORTED_MAJORS = (14, 15, 16, 17, 18)


def pg_bin(name: str, major: int | None = None) -> str:
    """A PostgreSQL program; of one major version if given."""
    if major is not None and major != DEBIAN_MAJOR:
        path = TOOLS / str(major) / "bin" / name
        if not path.exists():
            raise RuntimeError(f"{path} not found; run scripts/setup.sh (installs PostgreSQL {major})")
        return str(path)
    for directory in PG_BIN_CANDIDATES:
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found; run scripts/setup.sh (installs PostgreSQL)")
    return found


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class PgServer:
    root: Path
    port: int = field(default_factory=free_port)
    user: str = "postgres"
    password: str = "pg-test-secret-Zq81"
    proc_started: bool = False
    major: int | None = None  # None: the Debian server

    def bin(self, name: str) -> str:
        return pg_bin(name, self.major)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def env(self, database: str = "malbork") -> dict[str, str]:
        """libpq variables a client needs to reach this server."""
        return {"PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGUSER": self.user,
                "PGPASSWORD": self.password, "PGDATABASE": database, "PGSSLMODE": "disable"}

    def init(self) -> "PgServer":
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres")
        subprocess.run(_as_postgres([self.bin("initdb"), "-D", str(self.data), "-U", self.user,
                                     "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                                     "--locale=C.UTF-8"]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        pwfile.unlink()
        return self

    def start(self) -> "PgServer":
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
        subprocess.run(_as_postgres([self.bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
                                     "-w", "-t", "60", "-o", opts, "start"]),
                       check=True, stdout=subprocess.DEVNULL)
        self.proc_started = True
        return self

    def require_tls(self, cert_pem: bytes, key_pem: bytes, ca_pem: bytes, name: str) -> "PgServer":
        """Serve TLS with this certificate (for `name`, signed by `ca_pem`) and refuse every connection
        over TCP without it; returns once new connections get this certificate."""
        for file, data, mode in (("server.crt", cert_pem, 0o644), ("server.key", key_pem, 0o600)):
            path = self.data / file
            path.write_bytes(data)
            path.chmod(mode)
            if os.geteuid() == 0:
                shutil.chown(path, "postgres")
        (self.data / "pg_hba.conf").write_text("local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n"
                                               "host all all 0.0.0.0/0 reject\n")
        ca = self.root / "client-ca.crt"
        ca.write_bytes(ca_pem)
        with self.connect() as conn:
            conn.execute("ALTER SYSTEM SET ssl = on")
            conn.execute("SELECT pg_reload_conf()")
        for _ in range(100):  # the reload is signalled, not waited for
            try:
                psycopg.connect(host=name, hostaddr="127.0.0.1", port=self.port, user=self.user,
                                password=self.password, dbname="postgres", sslmode="verify-full",
                                sslrootcert=str(ca)).close()
                return self
            except psycopg.OperationalError:
                time.sleep(0.05)
        raise RuntimeError(f"the server did not start serving the certificate for {name}")

    def stop(self, mode: str = "fast") -> None:
        if self.proc_started:
            subprocess.run(_as_postgres([self.bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.proc_started = False

    def remove(self, mode: str = "fast") -> None:
        """Stop the server and delete its directory: a cluster holds a gigabyte or more of test data."""
        self.stop(mode)
        shutil.rmtree(self.root, ignore_errors=True)

    def connect(self, database: str = "postgres", autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                               dbname=database, autocommit=autocommit)

    def create_database(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')

    def drop_databases(self, prefix: str) -> None:
        """Every database whose name starts with `prefix`: a restore's kept and scratch copies too."""
        with self.connect() as conn:
            for (db,) in conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                                      (prefix,)).fetchall():
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    def recreate_database(self, name: str) -> None:
        """`name`, empty, with no database left from earlier runs whose name starts with it."""
        self.drop_databases(name)
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def databases(self) -> set[str]:
        with self.connect() as conn:
            return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}

    def psql(self, database: str, *args: str, input: bytes | None = None, check: bool = True):
        env = {**os.environ, **self.env(database)}
        return subprocess.run([self.bin("psql"), "-X", "-q", *args], input=input, env=env,
                              capture_output=True, check=check)


def start_server(root: str | None = None, major: int | None = None) -> PgServer:
    root = Path(root or tempfile.mkdtemp(prefix="enclave-pg-"))
    return PgServer(root, major=major).init().start()
