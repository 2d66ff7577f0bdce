"""Which complete backups exist: an object counts only with its manifest beside it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .manifest import MANIFEST_SUFFIX, Manifest, manifest_key, parse_key
from .s3 import Storage


@dataclass(frozen=True)
class Backup:
    key: str
    database: str
    started: datetime
    size: int

    @property
    def manifest_key(self) -> str:
        return manifest_key(self.key)


def complete_backups(storage: Storage, key_prefix: str, database: str) -> list[Backup]:
    """Complete backups of `database` directly under `key_prefix`, newest first."""
    objects = {o.key: o for o in storage.list(key_prefix)}
    found = []
    for key, obj in objects.items():
        if key.endswith(MANIFEST_SUFFIX) or manifest_key(key) not in objects:
            continue
        parsed = parse_key(key, key_prefix)
        if parsed and parsed[0] == database:
            found.append(Backup(key, parsed[0], parsed[1], obj.size))
    return sorted(found, key=lambda b: (b.started, b.key), reverse=True)


def read_manifest(storage: Storage, key: str) -> Manifest:
    return Manifest.from_json(storage.get_bytes(manifest_key(key)), key)
