"""The verification record beside a backup: `<backup key>.verify.json`, written by `verify`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from . import log
from .s3 import Storage

VERIFY_SUFFIX = ".verify.json"
MAX_RECORD_BYTES = 1 << 20  # a record lists at most the tables whose row counts differ


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
        """The record, or None if it is not ours or damaged (shown as "not verified"): checked against
        schemas.RECORD first, so no field of a wrong type reaches `list` or `status`."""
        from .schemas import problem
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        if problem(data, "record"):
            return None
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def describe(self) -> str:
        return f"{'passed' if self.passed else 'FAILED'} {self.verified_at}"


def write(storage: Storage, record: Record) -> None:
    storage.put_bytes(record_key(record.key), record.to_json(), "application/json")


def read(storage: Storage, key: str) -> Record | None:
    """The record beside `key`; None if there is none, or it is not ours (too large, not valid)."""
    head = storage.head(record_key(key))
    if head is None or head.size == 0:
        return None
    if head.size > MAX_RECORD_BYTES:  # never read: it would take its size in memory
        log.get().warning("ignored a verification record too large to be one of ours", key=record_key(key),
                          record_bytes=head.size, limit=MAX_RECORD_BYTES)
        return None
    raw = storage.read_range(record_key(key), head.size + 1)
    record = Record.from_json(raw) if len(raw) <= MAX_RECORD_BYTES else None
    return record if record and record.key == key else None
