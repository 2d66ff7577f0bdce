"""The verification record beside a backup: `<backup key>.verify.json`, written by `verify`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .s3 import Storage

VERIFY_SUFFIX = ".verify.json"


def record_key(key: str) -> str:
    return key + VERIFY_SUFFIX


@dataclass
class Record:
    key: str
    verified_at: str  # ISO 8601, UTC
    passed: bool
    exit_code: int = 0
    error: str = ""
    sha256: str = ""
    tables: int = 0
    rows: int = 0
    duration_s: float = 0.0
    tool_version: str = ""
    row_mismatches: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> "Record | None":
        try:
            data = json.loads(raw)
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except (ValueError, TypeError, KeyError):
            return None  # not ours or damaged: shown as "not verified"

    def describe(self) -> str:
        return f"{'passed' if self.passed else 'FAILED'} {self.verified_at}"


def write(storage: Storage, record: Record) -> None:
    storage.put_bytes(record_key(record.key), record.to_json(), "application/json")


def read(storage: Storage, key: str) -> Record | None:
    if storage.head(record_key(key)) is None:
        return None
    record = Record.from_json(storage.get_bytes(record_key(key)))
    return record if record and record.key == key else None
