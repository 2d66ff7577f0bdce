"""Object keys and manifests: what a complete backup looks like in the bucket."""

from __future__ import annotations

import hashlib
import json
import re
from urllib.parse import quote, unquote
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from .errors import IntegrityError

FORMAT_VERSION = 1
# A native backup's manifest (method "native"): tools that read only version 1 refuse it rather
# than replay its pointer object as a script.
NATIVE_FORMAT_VERSION = 2
MANIFEST_SUFFIX = ".manifest.json"
EXTENSIONS = {"gzip": ".sql.gz", "zstd": ".sql.zst", "none": ".sql"}
CONTENT_TYPES = {"gzip": "application/gzip", "zstd": "application/zstd", "none": "application/sql"}
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
ENCRYPTED_SUFFIX = ".age"  # the compressed script encrypted to age recipients (encryption.py)
# A native backup's object in the prefix: a small text naming its place in the CockroachDB collection.
NATIVE_SUFFIX = ".crdb"

# The run id makes keys unique per run: two runs started in the same second never share one.
_KEY_RE = re.compile(r"^(?P<db>[^/]+)-(?P<ts>\d{8}T\d{6}Z)(?:-(?P<run>[0-9a-f]{8,32}))?"
                     r"(?P<ext>\.sql(?:\.gz|\.zst)?(?:\.age)?|\.crdb)$")


def installation_tag(installation: str) -> str:
    """8 hex digits of the installation's sha256: the first half of every run id it draws."""
    return hashlib.sha256(installation.encode()).hexdigest()[:8]


def run_id_of(key: str) -> str:
    """The run id in a backup key, "" for keys made before run ids."""
    match = _KEY_RE.match(key.rsplit("/", 1)[-1])
    return (match["run"] or "") if match else ""


def key_name(database: str) -> str:
    """The database name as it appears in keys: '/', '%', spaces and non-ASCII percent-encoded."""
    return quote(database, safe="")


def object_key(key_prefix: str, database: str, started: datetime, compression: str, run_id: str = "",
               encrypted: bool = False, native: bool = False) -> str:
    stamp = started.astimezone(timezone.utc).strftime(TIMESTAMP_FORMAT)
    run = f"-{run_id}" if run_id else ""
    if native:
        return f"{key_prefix}{key_name(database)}-{stamp}{run}{NATIVE_SUFFIX}"
    suffix = ENCRYPTED_SUFFIX if encrypted else ""
    return f"{key_prefix}{key_name(database)}-{stamp}{run}{EXTENSIONS[compression]}{suffix}"


def ascii_name(name: str) -> str:
    """A name for the script's human-readable header line, which must be ASCII (see backup.py)."""
    return name.encode("ascii", "backslashreplace").decode("ascii").replace("\n", "\\n")


def manifest_key(key: str) -> str:
    return key + MANIFEST_SUFFIX


def parse_key(key: str, key_prefix: str) -> tuple[str, datetime] | None:
    """(database, start time) of a backup object directly under `key_prefix`, else None.

    A key of this shape whose time cannot be (month 13, second 99) is no backup's: None too.
    """
    if not key.startswith(key_prefix):
        return None
    match = _KEY_RE.match(key[len(key_prefix):])
    if not match:
        return None
    try:
        started = datetime.strptime(match["ts"], TIMESTAMP_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return unquote(match["db"]), started


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
    installation: str = ""  # ENCLAVE_BACKUP_INSTALLATION of the run that wrote it; "" before it was recorded
    run_id: str = ""  # also in the object's header and metadata: the pair is one run's
    # {"scheme": "age", "recipients": [fingerprints]} when the stored bytes are encrypted; None: plain.
    encryption: dict | None = None
    # {"algorithm": "ed25519", "key_id": ..., "value": base64} over signed_bytes(); None: unsigned.
    signature: dict | None = None
    format_version: int = FORMAT_VERSION
    method: str = "dump"  # "native": CockroachDB's BACKUP; the object is a pointer into `native`'s collection
    # native only: {"collection", "folder", "type", "end_hlc", "end_time", "revision_history", "job_id", ...}
    native: dict | None = None
    # {"size": bytes, "sha256": [one per segment of the stored bytes]} (segments.py); None: read twice.
    segments: dict | None = None

    def signed_bytes(self) -> bytes:
        """What the signature covers: every field but the signature, in one canonical form (the
        later fields only where set, so manifests signed before they existed still verify)."""
        data = {k: v for k, v in asdict(self).items() if k != "signature"
                and not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])}
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

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
        if version not in (FORMAT_VERSION, NATIVE_FORMAT_VERSION):
            raise IntegrityError(f"the manifest of {key} has format version {repr(version)[:40]}; "
                                 f"this tool reads versions {FORMAT_VERSION} and {NATIVE_FORMAT_VERSION}")
        if (version == NATIVE_FORMAT_VERSION) != (data.get("method") == "native"):
            raise IntegrityError(f"the manifest of {key} has format version {version} and method "
                                 f"{repr(data.get('method'))[:40]}: version {NATIVE_FORMAT_VERSION} is for native "
                                 "backups only")
        from .schemas import problem  # every field checked here, once, before any is used
        if wrong := problem(data, "manifest"):
            raise IntegrityError(f"the manifest of {key} is not one this tool wrote: {wrong}")
        manifest = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        if manifest.key != key:
            raise IntegrityError(f"the manifest beside {key} describes another object ({manifest.key})")
        if manifest.compression not in EXTENSIONS:
            raise IntegrityError(f"the manifest of {key} names an unknown compression {manifest.compression!r}")
        return manifest

    def identity(self) -> dict[str, str]:
        """What the object's header and metadata must repeat for the pair to be one run's."""
        return {"database": self.database, "engine": self.engine, "installation": self.installation,
                "run_id": self.run_id}


_LATER_FIELDS = {"method": "dump", "native": None, "segments": None}

HEADER_TAG = b"-- enclave-backup-identity: "


def header_line(identity: dict[str, str]) -> bytes:
    """One ASCII comment line (JSON escapes any name), ignored by psql and cockroach sql."""
    return HEADER_TAG + json.dumps(identity, sort_keys=True, ensure_ascii=True).encode() + b"\n"


def parse_header(text: bytes) -> dict | None:
    """The identity in the script's first lines, or None if it has none."""
    for line in text.split(b"\n")[:8]:
        if line.startswith(HEADER_TAG):
            try:
                found = json.loads(line[len(HEADER_TAG):])
            except ValueError:
                return None
            return found if isinstance(found, dict) else None
    return None


def encode_metadata(identity: dict[str, str]) -> dict[str, str]:
    """S3 user metadata must be ASCII: names are percent-encoded (`run_id` -> `run-id`)."""
    return {k.replace("_", "-"): quote(v, safe="") for k, v in identity.items()}


def decode_metadata(metadata: dict[str, str]) -> dict[str, str]:
    return {k.replace("-", "_"): unquote(v) for k, v in metadata.items()}
