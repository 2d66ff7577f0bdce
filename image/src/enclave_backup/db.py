"""Database connections (libpq variables), engine detection, error translation."""

from __future__ import annotations

import contextlib
import os
from typing import Callable

import psycopg
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from . import log
from .config import Config
from .errors import ConfigError, DatabaseError, NoSuchDatabase

# SQLSTATEs that no retry can fix: bad password/role, unknown database, no permission.
_PERMANENT_SQLSTATES = {"28P01", "28000", "3D000", "42501", "08004"}
_PERMANENT_PHRASES = ("password authentication failed", "does not exist", "no pg_hba.conf entry",
                      "permission denied", "role", "authentication")
# libpq's words when the server's certificate cannot be checked: a retry gets the same certificate.
_TLS_PHRASES = ("certificate verify failed", "does not match host name", "root certificate file",
                "server does not support ssl", "certificate present, but not private key")


def is_missing_database(exc: Exception) -> bool:
    """SQLSTATE 3D000 (invalid_catalog_name). A failed connect carries no SQLSTATE (libpq keeps
    only the server's message), so there, and only there, the server's FATAL text says it."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate == psycopg.errors.InvalidCatalogName.sqlstate
    text = str(exc)
    return "database" in text and "does not exist" in text


def describe(exc: Exception, database: str) -> str:
    text = log.scrub(str(exc).strip())
    sqlstate = getattr(exc, "sqlstate", None)
    if is_missing_database(exc):
        return (f"database {database!r} does not exist on the server ({text}); "
                "check PGDATABASE or create the database")
    if sqlstate in ("28P01", "28000") or "authentication failed" in text or "password" in text:
        return (f"the database server rejected the login ({text}); check PGUSER and the password "
                "Secret")
    if any(phrase in text.lower() for phrase in _TLS_PHRASES):
        return (f"the database server's certificate could not be checked ({text}); the CA in PGSSLROOTCERT "
                "(Helm value externalDatabase.caSecretName, or CockroachDB.Tls for the chart's own CockroachDB) must "
                "be the one that signed it, and PGHOST a name the certificate holds")
    return text


def _transient(exc: BaseException) -> bool:
    if not isinstance(exc, psycopg.OperationalError):
        return False
    if getattr(exc, "sqlstate", None) in _PERMANENT_SQLSTATES:
        return False
    text = str(exc).lower()
    return not any(phrase in text for phrase in (*_PERMANENT_PHRASES, *_TLS_PHRASES))


def connect(config: Config, *, dbname: str | None = None, autocommit: bool = False) -> psycopg.Connection:
    """Connect with the libpq environment; retry only failures a retry can fix."""

    @retry(retry=retry_if_exception(_transient), reraise=True,
           stop=stop_after_delay(config.retry_total_seconds),
           wait=wait_exponential(multiplier=0.5, max=10),
           before_sleep=lambda state: log.get().warning(
               "database connection failed, retrying", attempt=state.attempt_number,
               error=log.scrub(str(state.outcome.exception()).strip())))
    def attempt() -> psycopg.Connection:
        conn = psycopg.connect(dbname=dbname or config.database, autocommit=autocommit,
                               connect_timeout=config.db_connect_timeout, **_startup_options(),
                               application_name="enclave-backup",
                               # Our own queries read text as UTF-8 whatever the database's encoding
                               # (an SQL_ASCII database would hand psycopg bytes otherwise).
                               client_encoding="UTF8")
        try:
            _learn(conn)
            _own_timeouts(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    try:
        return attempt()
    except psycopg.Error as exc:
        kind = NoSuchDatabase if is_missing_database(exc) else DatabaseError
        raise kind(describe(exc, dbname or config.database)) from None


# A role's or database's timeouts are for its applications' sessions, not ours: the maintenance
# connection idles through a whole load, a COPY or an index build outlasts any statement limit.
_TIMEOUTS = ["statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
             "idle_session_timeout", "transaction_timeout"]


# A login event trigger (PostgreSQL 17+) fires on every connection, ours too: one that writes a row
# would change a database while it is restored or counted. Only superusers may turn event triggers off,
# in the startup packet (before the trigger fires), so the first connection finds out whether later
# ones of this run (into the scratch database, among others) can.
_server = {"event_triggers_off": False}


def _learn(conn: psycopg.Connection) -> None:
    _server["event_triggers_off"] = (conn.info.server_version >= 170000
                                     and conn.info.parameter_status("is_superuser") == "on"
                                     and conn.info.parameter_status("crdb_version") is None)


def _startup_options() -> dict:
    if not _server["event_triggers_off"]:
        return {}
    # `options` replaces PGOPTIONS: keep what the operator gave.
    return {"options": " ".join(filter(None, [os.environ.get("PGOPTIONS", ""), "-c event_triggers=off"]))}


def _own_timeouts(conn: psycopg.Connection) -> None:
    """All of _TIMEOUTS off for this session, those the server has (PostgreSQL 14 lacks the newer ones)."""
    if conn.info.parameter_status("crdb_version") is not None:
        return  # CockroachDB: its own names and defaults; pg_settings does not hold them all
    conn.execute("SELECT pg_catalog.set_config(name, '0', false) FROM pg_catalog.pg_settings "
                 "WHERE name = ANY(%s)", (_TIMEOUTS,))
    if not conn.autocommit:
        conn.commit()


def opener(config: Config) -> Callable[[str], psycopg.Connection]:
    """Opens an autocommit session in the database it is given, with the run's settings."""
    return lambda dbname: connect(config, dbname=dbname, autocommit=True)


class Connections:
    """The connections of one restore or verify: the maintenance connection (autocommit, outside the
    databases it creates, renames and drops), opened once and handed to every step, and the sessions
    those steps open in other databases through `open`; all closed together."""

    def __init__(self, maintenance: psycopg.Connection, maintenance_name: str,
                 open_session: Callable[[str], psycopg.Connection]):
        self.maintenance = maintenance
        self.maintenance_name = maintenance_name
        self._open_session = open_session
        self._opened: list[psycopg.Connection] = []

    def open(self, dbname: str) -> psycopg.Connection:
        """A new autocommit session in `dbname`: close it (or leave it to close()) before that database is renamed."""
        conn = self._open_session(dbname)
        self._opened = [c for c in self._opened if not c.closed] + [conn]
        return conn

    def working_maintenance(self) -> psycopg.Connection:
        """The maintenance connection, opened again if the server ended it (a restart, a terminated session)."""
        if self.maintenance.broken or self.maintenance.closed:
            self.maintenance = self.open(self.maintenance_name)
        return self.maintenance

    def close(self) -> None:
        for conn in [*self._opened, self.maintenance]:
            conn.close()

    def __enter__(self) -> "Connections":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def database_errors(database: str, action: str):
    try:
        yield
    except psycopg.Error as exc:
        raise DatabaseError(f"{action}: {describe(exc, database)}") from None


def detect_engine(conn: psycopg.Connection, configured: str) -> tuple[str, str]:
    """(engine, server version string)."""
    version = conn.execute("SELECT version()").fetchone()[0]
    detected = "cockroachdb" if "CockroachDB" in version else "postgresql"
    if configured not in ("auto", detected):
        raise ConfigError(f"ENCLAVE_BACKUP_ENGINE={configured} but the server reports {version!r}")
    return detected, version


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def split_quoted(text: str, separator: str, stop: str = "") -> list[str]:
    """`text` split at `separator` outside double quotes, quotes undone, up to the first `stop` character.

    `"Odd ""Schema"" name".t (a)` -> ['Odd "Schema" name', 't'] with "." and stop " (";
    `"$user", public` -> ['$user', ' public'] with ",".
    """
    parts, current, quoted, i = [], [], False, 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == '"' and text[i + 1:i + 2] == '"':
                current.append('"')
                i += 1
            elif ch == '"':
                quoted = False
            else:
                current.append(ch)
        elif ch == '"':
            quoted = True
        elif ch == separator:
            parts.append("".join(current))
            current = []
        elif ch in stop:
            break
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts
