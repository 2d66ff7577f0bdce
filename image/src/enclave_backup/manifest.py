"""Object keys and manifests: what a complete backup looks like in the bucket."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from .errors import IntegrityError

FORMAT_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"
EXTENSIONS = {"gzip": ".sql.gz", "zstd": ".sql.zst", "none": ".sql"}
CONTENT_TYPES = {"gzip": "application/gzip", "zstd": "application/zstd", "none": "application/sql"}
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"

_KEY_RE = re.compile(r"^(?P<db>.+)-(?P<ts>\d{8}T\d{6}Z)(?P<ext>\.sql(?:\.gz|\.zst)?)$")


def object_key(key_prefix: str, database: str, started: datetime, compression: str) -> str:
    stamp = started.astimezone(timezone.utc).strftime(TIMESTAMP_FORMAT)
    return f"{key_prefix}{database}-{stamp}{EXTENSIONS[compression]}"


def manifest_key(key: str) -> str:
    return key + MANIFEST_SUFFIX


def parse_key(key: str, key_prefix: str) -> tuple[str, datetime] | None:
    """(database, start time) of a backup object directly under `key_prefix`, else None."""
    if not key.startswith(key_prefix):
        return None
    match = _KEY_RE.match(key[len(key_prefix):])
    if not match or "/" in match["db"]:
        return None
    started = datetime.strptime(match["ts"], TIMESTAMP_FORMAT).replace(tzinfo=timezone.utc)
    return match["db"], started


@dataclass
class Manifest:
    key: str
    database: str
    engine: str
    server_version: str
    started_at: str
    finished_at: str
    compression: str
    stored_size: int
    sha256: str
    uncompressed_size: int
    tables: dict[str, int] = field(default_factory=dict)
    tool_version: str = ""
    snapshot: str = ""
    database_state: dict | None = None  # PostgreSQL: privileges, settings, comment... (see dbstate)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes, key: str) -> "Manifest":
        try:
            data = json.loads(raw)
        except ValueError:
            raise IntegrityError(f"the manifest of {key} is not valid JSON") from None
        if not isinstance(data, dict):
            raise IntegrityError(f"the manifest of {key} is not a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise IntegrityError(f"the manifest of {key} has format version {version!r}; "
                                 f"this tool reads version {FORMAT_VERSION}")
        try:
            manifest = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except TypeError as exc:
            raise IntegrityError(f"the manifest of {key} lacks fields: {exc}") from None
        if manifest.key != key:
            raise IntegrityError(f"the manifest beside {key} describes another object ({manifest.key})")
        if manifest.compression not in EXTENSIONS:
            raise IntegrityError(f"the manifest of {key} names an unknown compression {manifest.compression!r}")
        return manifest
