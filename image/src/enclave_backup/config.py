"""Configuration from the environment: libpq and AWS variables plus ENCLAVE_BACKUP_*."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from .errors import ConfigError

MiB = 1 << 20

ENGINES = ("auto", "cockroachdb", "postgresql")
COMPRESSIONS = ("gzip", "zstd", "none")


@dataclass(frozen=True)
class Config:
    bucket: str
    prefix: str = ""
    database: str = "malbork"
    engine: str = "auto"
    compression: str = "gzip"
    compression_level: int | None = None
    compression_threads: int = 0  # 0: one per CPU
    part_size: int = 20 * MiB
    upload_concurrency: int = 2
    progress_interval: float = 10.0
    s3_max_attempts: int = 5
    s3_connect_timeout: float = 10.0
    s3_read_timeout: float = 60.0
    db_connect_timeout: int = 10
    retry_total_seconds: float = 60.0
    stale_upload_seconds: int = 86400
    restore_force: bool = False
    restore_keep_previous: int = 1
    restore_wait_for_clients_seconds: float = 60.0
    restore_terminate_clients: bool = False
    pg_dump: str = ""  # empty: the newest pg_dump installed
    lock_timeout_seconds: float = 600.0
    keep_last: int = 0  # retention rules; 0 everywhere keeps every backup
    keep_days: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    reader_marker_seconds: int = 86400  # a reader's marker older than this is left over from a killed run
    pushgateway_url: str = ""  # empty: no metrics are pushed

    @property
    def key_prefix(self) -> str:
        """Prefix as used in object keys: no leading slash, one trailing slash unless empty."""
        return f"{self.prefix}/" if self.prefix else ""


def _number(env: Mapping[str, str], name: str, default, minimum, kind):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not {'an integer' if kind is int else 'a number'}") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    return _number(env, name, default, minimum, int)


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    return _number(env, name, default, minimum, float)


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


def load(env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    bucket = env.get("ENCLAVE_BACKUP_BUCKET", "").strip()
    if not bucket:
        raise ConfigError("ENCLAVE_BACKUP_BUCKET is not set: name the bucket that holds the backups")
    compression = _choice(env, "ENCLAVE_BACKUP_COMPRESSION", "gzip", COMPRESSIONS)
    level_raw = env.get("ENCLAVE_BACKUP_COMPRESSION_LEVEL", "").strip()
    level = None
    if level_raw:
        level = _int(env, "ENCLAVE_BACKUP_COMPRESSION_LEVEL", 0, minimum=1)
        top = {"gzip": 9, "zstd": 22, "none": 0}[compression]
        if level > top:
            raise ConfigError(f"ENCLAVE_BACKUP_COMPRESSION_LEVEL={level} is above {top}, the maximum for {compression}")
    part_size = _int(env, "ENCLAVE_BACKUP_PART_SIZE_MIB", 20, minimum=5) * MiB
    if part_size > 512 * MiB:
        raise ConfigError("ENCLAVE_BACKUP_PART_SIZE_MIB must be at most 512")
    return Config(
        bucket=bucket,
        prefix=env.get("ENCLAVE_BACKUP_PREFIX", "").strip().strip("/"),
        database=env.get("PGDATABASE", "").strip() or "malbork",
        engine=_choice(env, "ENCLAVE_BACKUP_ENGINE", "auto", ENGINES),
        compression=compression,
        compression_level=level,
        compression_threads=_int(env, "ENCLAVE_BACKUP_COMPRESSION_THREADS", 0),
        part_size=part_size,
        upload_concurrency=_int(env, "ENCLAVE_BACKUP_UPLOAD_CONCURRENCY", 2, minimum=1),
        progress_interval=_float(env, "ENCLAVE_BACKUP_PROGRESS_SECONDS", 10.0, minimum=0.01),
        s3_max_attempts=_int(env, "ENCLAVE_BACKUP_S3_MAX_ATTEMPTS", 5, minimum=1),
        s3_connect_timeout=_float(env, "ENCLAVE_BACKUP_S3_CONNECT_TIMEOUT", 10.0, minimum=0.1),
        s3_read_timeout=_float(env, "ENCLAVE_BACKUP_S3_READ_TIMEOUT", 60.0, minimum=0.1),
        db_connect_timeout=_int(env, "ENCLAVE_BACKUP_DB_CONNECT_TIMEOUT", 10, minimum=1),
        retry_total_seconds=_float(env, "ENCLAVE_BACKUP_RETRY_SECONDS", 60.0),
        stale_upload_seconds=_int(env, "ENCLAVE_BACKUP_STALE_UPLOAD_SECONDS", 86400, minimum=1),
        restore_force=_bool(env, "ENCLAVE_BACKUP_RESTORE_FORCE", False),
        restore_keep_previous=_int(env, "ENCLAVE_BACKUP_RESTORE_KEEP_PREVIOUS", 1),
        restore_wait_for_clients_seconds=_float(env, "ENCLAVE_BACKUP_RESTORE_WAIT_FOR_CLIENTS_SECONDS", 60.0),
        restore_terminate_clients=_bool(env, "ENCLAVE_BACKUP_RESTORE_TERMINATE_CLIENTS", False),
        pg_dump=env.get("ENCLAVE_BACKUP_PG_DUMP", "").strip(),
        lock_timeout_seconds=_float(env, "ENCLAVE_BACKUP_LOCK_TIMEOUT_SECONDS", 600.0, minimum=1.0),
        keep_last=_int(env, "ENCLAVE_BACKUP_KEEP_LAST", 0),
        keep_days=_int(env, "ENCLAVE_BACKUP_KEEP_DAYS", 0),
        keep_daily=_int(env, "ENCLAVE_BACKUP_KEEP_DAILY", 0),
        keep_weekly=_int(env, "ENCLAVE_BACKUP_KEEP_WEEKLY", 0),
        keep_monthly=_int(env, "ENCLAVE_BACKUP_KEEP_MONTHLY", 0),
        reader_marker_seconds=_int(env, "ENCLAVE_BACKUP_READER_MARKER_SECONDS", 86400, minimum=1),
        pushgateway_url=env.get("ENCLAVE_BACKUP_PUSHGATEWAY_URL", "").strip(),
    )
