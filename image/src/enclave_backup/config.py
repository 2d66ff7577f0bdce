"""Configuration from the environment: libpq and AWS variables plus ENCLAVE_BACKUP_*."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import urlsplit

from .errors import ConfigError

MiB = 1 << 20

ENGINES = ("auto", "cockroachdb", "postgresql")
COMPRESSIONS = ("gzip", "zstd", "none")
METHODS = ("dump", "native")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# S3's rules (3-63 characters, letters, digits, dots, hyphens; underscores for older stores).
_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")
DAY = 86400.0


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
    restore_jobs: int = 2  # connections that load a table's COPY rows or INSERT batches at once; 1: the main one
    pg_dump: str = ""  # empty: the newest pg_dump installed
    lock_timeout_seconds: float = 600.0
    installation: str = "default"  # who writes: the chart sets <namespace>/<release>
    restore_source_installation: str = ""  # restore another installation's backups (disaster recovery)

    @property
    def source_installation(self) -> str:
        """Whose backups a restore reads: this installation's unless the operator chose another."""
        return self.restore_source_installation or self.installation
    keep_last: int = 0  # retention rules; 0 everywhere keeps every backup
    keep_days: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    reader_marker_seconds: int = 86400  # a reader's marker older than this is left over from a killed run
    pushgateway_url: str = ""  # empty: no metrics are pushed
    # Authenticity (signing.py): the backup signs with the private key; restore and verify check
    # with the public key(s). Neither key is ever stored in the bucket.
    signing_key_file: str = ""
    signing_public_key_file: str = ""
    allow_unverified: bool = False  # accept a missing or wrong signature (logged on every use)
    # Client-side encryption (encryption.py): public recipients for the backup, an identity to read.
    encryption_recipients: tuple[str, ...] = ()
    encryption_identity_file: str = ""
    # Server-side encryption (sse.py): "" (the bucket's default), AES256, aws:kms or SSE-C.
    sse: str = ""
    sse_kms_key_id: str = ""
    sse_customer_key_file: str = ""
    # The backup method (README "Choosing a backup method"): a logical dump, or CockroachDB's own BACKUP.
    method: str = "dump"
    native_revision_history: bool = True  # where the cluster's licence allows it
    native_path_style: str = "auto"  # how the nodes address the bucket: auto | true | false
    native_poll_seconds: float = 5.0
    native_pause_seconds: float = 3600.0  # a paused job is cancelled after this
    restore_as_of: str = ""  # RFC 3339: point-in-time restore of a native backup with revision history

    @property
    def key_prefix(self) -> str:
        """Prefix as used in object keys: no leading slash, one trailing slash unless empty."""
        return f"{self.prefix}/" if self.prefix else ""


def _number(env: Mapping[str, str], name: str, default, minimum, maximum, kind):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw[:40]!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(value):  # nan and inf would make deadlines that never come
        raise ConfigError(f"{name}={raw!r} is not a finite number")
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={raw[:40]} must be between {minimum:g} and {maximum:g}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0, maximum: int = 1_000_000) -> int:
    return _number(env, name, default, minimum, maximum, int)


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0, maximum: float = DAY) -> float:
    return _number(env, name, default, minimum, maximum, float)


def _check_libpq(env: Mapping[str, str]) -> None:
    """libpq settings a retry cannot fix: fail at once rather than after a minute of retries."""
    port = env.get("PGPORT", "").strip()
    if port:
        for part in port.split(","):  # libpq takes one port per host
            if not part.strip().isdigit() or not 1 <= int(part) <= 65535:
                raise ConfigError(f"PGPORT={port[:40]!r} is not a port number (1-65535)")
    mode = env.get("PGSSLMODE", "").strip()
    if mode and mode not in SSL_MODES:
        raise ConfigError(f"PGSSLMODE={mode[:40]!r} is not one of {', '.join(SSL_MODES)}")
    _int(env, "PGCONNECT_TIMEOUT", 0, 0, 3600)
    root = env.get("PGSSLROOTCERT", "").strip()
    if mode in ("verify-ca", "verify-full") and root and root != "system" and not os.path.isfile(root):
        raise ConfigError(f"PGSSLROOTCERT={root[:200]!r} is not a file; PGSSLMODE={mode} needs the CA certificate")


def _check_aws(env: Mapping[str, str]) -> None:
    """Endpoint and CA bundle: boto3 would fail later, with a message that names neither."""
    endpoint = env.get("AWS_ENDPOINT_URL", "").strip()
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"AWS_ENDPOINT_URL={endpoint[:200]!r} is not an http(s) URL "
                              "(e.g. https://s3.eu-de.cloud-object-storage.appdomain.cloud)")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ConfigError(f"AWS_ENDPOINT_URL={endpoint[:200]!r} has an invalid port") from None
    bundle = env.get("AWS_CA_BUNDLE", "").strip()
    if bundle and not os.path.isfile(bundle):
        raise ConfigError(f"AWS_CA_BUNDLE={bundle[:200]!r} is not a file")


def _text(env: Mapping[str, str], name: str, default: str = "") -> str:
    value = env.get(name, "").strip()
    if any(ord(c) < 32 for c in value):
        raise ConfigError(f"{name} contains control characters")
    return value or default


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


SSE_MODES = ("AES256", "aws:kms", "SSE-C")


def _file(env: Mapping[str, str], name: str, what: str) -> str:
    """A path to a mounted file (a key, a certificate); it must exist when set."""
    path = _text(env, name)
    if path and not os.path.isfile(path):
        raise ConfigError(f"{name}={path[:200]!r} is not a file; mount {what} there or unset {name}")
    return path


def _recipients(env: Mapping[str, str]) -> tuple[str, ...]:
    """One recipient per line (SSH keys hold spaces); blank lines and # comments are ignored."""
    raw = env.get("ENCLAVE_BACKUP_ENCRYPTION_RECIPIENTS", "")
    lines = (line.strip() for line in raw.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


def _sse(env: Mapping[str, str]) -> tuple[str, str, str]:
    mode = _text(env, "ENCLAVE_BACKUP_SSE")
    canonical = {m.lower(): m for m in SSE_MODES}
    if mode and mode.lower() not in canonical:
        raise ConfigError(f"ENCLAVE_BACKUP_SSE={mode[:40]!r} is not one of {', '.join(SSE_MODES)} "
                          "(or empty for the bucket's default)")
    mode = canonical.get(mode.lower(), "")
    kms_key = _text(env, "ENCLAVE_BACKUP_SSE_KMS_KEY_ID")
    customer_key = _file(env, "ENCLAVE_BACKUP_SSE_CUSTOMER_KEY_FILE", "the SSE-C customer key")
    if kms_key and mode != "aws:kms":
        raise ConfigError("ENCLAVE_BACKUP_SSE_KMS_KEY_ID is set but ENCLAVE_BACKUP_SSE is not aws:kms")
    if mode == "SSE-C" and not customer_key:
        raise ConfigError("ENCLAVE_BACKUP_SSE=SSE-C needs ENCLAVE_BACKUP_SSE_CUSTOMER_KEY_FILE: "
                          "the file holding the base64 of a 32-byte key")
    if customer_key and mode != "SSE-C":
        raise ConfigError("ENCLAVE_BACKUP_SSE_CUSTOMER_KEY_FILE is set but ENCLAVE_BACKUP_SSE is not SSE-C")
    return mode, kms_key, customer_key


def _prefix(env: Mapping[str, str]) -> str:
    """The key prefix, outer slashes dropped. Whatever maps keys to file paths (a sync to disk, stores
    backed by a file system) resolves `..`, `.`, `//` and backslashes: such a prefix names other keys."""
    prefix = _text(env, "ENCLAVE_BACKUP_PREFIX").strip("/")
    if prefix and ("\\" in prefix or any(part in ("..", ".", "") for part in prefix.split("/"))):
        raise ConfigError(f"ENCLAVE_BACKUP_PREFIX={prefix[:200]!r} is not a plain path: no '.' or '..' segments, "
                          "empty segments (//) or backslashes")
    if len(prefix.encode()) > 512:
        raise ConfigError("ENCLAVE_BACKUP_PREFIX is longer than 512 bytes; S3 keys end at 1024")
    return prefix


def _installation(env: Mapping[str, str]) -> str:
    """Unset means "default"; set but blank would quietly share "default"'s backups with others."""
    if "ENCLAVE_BACKUP_INSTALLATION" in env and not env["ENCLAVE_BACKUP_INSTALLATION"].strip():
        raise ConfigError("ENCLAVE_BACKUP_INSTALLATION is set but empty: name the installation "
                          "(the chart sets <namespace>/<release>) or unset it")
    return _text(env, "ENCLAVE_BACKUP_INSTALLATION", "default")


def _pushgateway_url(env: Mapping[str, str]) -> str:
    """Checked now: a bad URL would otherwise only fail the push after the whole backup."""
    url = _text(env, "ENCLAVE_BACKUP_PUSHGATEWAY_URL")
    if not url:
        return url
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or " " in url:
        raise ConfigError(f"ENCLAVE_BACKUP_PUSHGATEWAY_URL={url[:200]!r} is not an http(s) URL "
                          "(e.g. http://pushgateway.monitoring:9091)")
    return url


def _as_of(env: Mapping[str, str]) -> str:
    """Checked now, in UTC: a bad time fails before any work."""
    raw = _text(env, "ENCLAVE_BACKUP_RESTORE_AS_OF")
    if not raw:
        return ""
    from .engines.cockroachdb.native import parse_as_of
    return parse_as_of(raw).isoformat().replace("+00:00", "Z")


def load(env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    bucket = env.get("ENCLAVE_BACKUP_BUCKET", "").strip()
    if not bucket:
        raise ConfigError("ENCLAVE_BACKUP_BUCKET is not set: name the bucket that holds the backups")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise ConfigError(f"ENCLAVE_BACKUP_BUCKET={bucket[:70]!r} is not a valid bucket name (3-63 letters, "
                          "digits, dots or hyphens, starting and ending with a letter or digit)")
    _check_libpq(env)
    _check_aws(env)
    prefix = _prefix(env)
    compression = _choice(env, "ENCLAVE_BACKUP_COMPRESSION", "gzip", COMPRESSIONS)
    level_raw = env.get("ENCLAVE_BACKUP_COMPRESSION_LEVEL", "").strip()
    level = None
    if level_raw:
        level = _int(env, "ENCLAVE_BACKUP_COMPRESSION_LEVEL", 0, minimum=1, maximum=22)
        top = {"gzip": 9, "zstd": 22, "none": 0}[compression]
        if level > top:
            raise ConfigError(f"ENCLAVE_BACKUP_COMPRESSION_LEVEL={level} is above {top}, the maximum for {compression}")
    part_size = _int(env, "ENCLAVE_BACKUP_PART_SIZE_MIB", 20, minimum=5, maximum=512) * MiB
    sse, sse_kms_key_id, sse_customer_key_file = _sse(env)
    return Config(
        bucket=bucket,
        prefix=prefix,
        database=env.get("PGDATABASE", "").strip() or "malbork",
        engine=_choice(env, "ENCLAVE_BACKUP_ENGINE", "auto", ENGINES),
        compression=compression,
        compression_level=level,
        compression_threads=_int(env, "ENCLAVE_BACKUP_COMPRESSION_THREADS", 0, maximum=256),
        part_size=part_size,
        upload_concurrency=_int(env, "ENCLAVE_BACKUP_UPLOAD_CONCURRENCY", 2, minimum=1, maximum=64),
        progress_interval=_float(env, "ENCLAVE_BACKUP_PROGRESS_SECONDS", 10.0, minimum=0.01, maximum=3600),
        s3_max_attempts=_int(env, "ENCLAVE_BACKUP_S3_MAX_ATTEMPTS", 5, minimum=1, maximum=100),
        s3_connect_timeout=_float(env, "ENCLAVE_BACKUP_S3_CONNECT_TIMEOUT", 10.0, minimum=0.1, maximum=3600),
        s3_read_timeout=_float(env, "ENCLAVE_BACKUP_S3_READ_TIMEOUT", 60.0, minimum=0.1, maximum=3600),
        db_connect_timeout=_int(env, "ENCLAVE_BACKUP_DB_CONNECT_TIMEOUT", 10, minimum=1, maximum=3600),
        retry_total_seconds=_float(env, "ENCLAVE_BACKUP_RETRY_SECONDS", 60.0),
        stale_upload_seconds=_int(env, "ENCLAVE_BACKUP_STALE_UPLOAD_SECONDS", 86400, minimum=1, maximum=30 * 86400),
        restore_force=_bool(env, "ENCLAVE_BACKUP_RESTORE_FORCE", False),
        restore_keep_previous=_int(env, "ENCLAVE_BACKUP_RESTORE_KEEP_PREVIOUS", 1, maximum=1000),
        restore_wait_for_clients_seconds=_float(env, "ENCLAVE_BACKUP_RESTORE_WAIT_FOR_CLIENTS_SECONDS", 60.0),
        restore_terminate_clients=_bool(env, "ENCLAVE_BACKUP_RESTORE_TERMINATE_CLIENTS", False),
        restore_jobs=_int(env, "ENCLAVE_BACKUP_RESTORE_JOBS", 2, minimum=1, maximum=32),
        pg_dump=_text(env, "ENCLAVE_BACKUP_PG_DUMP"),
        lock_timeout_seconds=_float(env, "ENCLAVE_BACKUP_LOCK_TIMEOUT_SECONDS", 600.0, minimum=1.0, maximum=DAY),
        installation=_installation(env),
        restore_source_installation=_text(env, "ENCLAVE_BACKUP_RESTORE_SOURCE_INSTALLATION"),
        keep_last=_int(env, "ENCLAVE_BACKUP_KEEP_LAST", 0),
        keep_days=_int(env, "ENCLAVE_BACKUP_KEEP_DAYS", 0, maximum=100_000),
        keep_daily=_int(env, "ENCLAVE_BACKUP_KEEP_DAILY", 0),
        keep_weekly=_int(env, "ENCLAVE_BACKUP_KEEP_WEEKLY", 0),
        keep_monthly=_int(env, "ENCLAVE_BACKUP_KEEP_MONTHLY", 0),
        reader_marker_seconds=_int(env, "ENCLAVE_BACKUP_READER_MARKER_SECONDS", 86400, minimum=1, maximum=int(30 * DAY)),
        pushgateway_url=_pushgateway_url(env),
        signing_key_file=_file(env, "ENCLAVE_BACKUP_SIGNING_KEY_FILE", "the signing key (private.pem)"),
        signing_public_key_file=_file(env, "ENCLAVE_BACKUP_SIGNING_PUBLIC_KEY_FILE",
                                      "the signing public key (public.pem)"),
        allow_unverified=_bool(env, "ENCLAVE_BACKUP_ALLOW_UNVERIFIED", False),
        encryption_recipients=_recipients(env),
        encryption_identity_file=_file(env, "ENCLAVE_BACKUP_ENCRYPTION_IDENTITY_FILE",
                                       "the age identity (identity.txt)"),
        sse=sse, sse_kms_key_id=sse_kms_key_id, sse_customer_key_file=sse_customer_key_file,
        method=_choice(env, "ENCLAVE_BACKUP_METHOD", "dump", METHODS),
        native_revision_history=_bool(env, "ENCLAVE_BACKUP_NATIVE_REVISION_HISTORY", True),
        native_path_style=_choice(env, "ENCLAVE_BACKUP_NATIVE_PATH_STYLE", "auto", ("auto", "true", "false")),
        native_poll_seconds=_float(env, "ENCLAVE_BACKUP_NATIVE_POLL_SECONDS", 5.0, minimum=0.01, maximum=600),
        native_pause_seconds=_float(env, "ENCLAVE_BACKUP_NATIVE_PAUSE_SECONDS", 3600.0, minimum=0, maximum=7 * DAY),
        restore_as_of=_as_of(env),
    )
