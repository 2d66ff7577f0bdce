"""Which complete backups exist: this database's and this installation's, by what their manifests say.

An object counts only with its manifest beside it, and only if that manifest names the
same object, this database and the installation asked for. Order is the manifest's start
time (capped by the store's clock), not the key's timestamp: a key is a name anyone can forge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from . import log
from .errors import BackupError
from .manifest import Manifest, key_name, manifest_key, parse_key
from .s3 import Storage

# Beyond this the writer's clock and the store's disagree, and `list` says so.
STORE_CLOCK_RESOLUTION = timedelta(seconds=1)
CLOCK_TOLERANCE_SECONDS = 300
ANY_INSTALLATION = "*"  # only by explicit choice: restore.sourceInstallation


@dataclass(frozen=True)
class Backup:
    key: str
    database: str
    started: datetime  # from the manifest
    size: int
    installation: str = ""
    stored_at: datetime | None = None  # the store's clock: when the manifest was written

    @property
    def manifest_key(self) -> str:
        return manifest_key(self.key)

    @property
    def order_time(self) -> datetime:
        """What `latest` sorts by: the manifest's start, but never later than the store saw the manifest,
        so neither a writer's clock that runs ahead nor an edited start keeps a backup newest for ever."""
        if self.stored_at is None:
            return self.started
        # Stores stamp objects in whole seconds: the manifest may have been written up to 1 s later.
        return min(self.started, self.stored_at + STORE_CLOCK_RESOLUTION)

    @property
    def clock_skew_seconds(self) -> float:
        """How far the store's clock was ahead of the writer's when the manifest was written."""
        return (self.stored_at - self.started).total_seconds() if self.stored_at else 0.0

    @property
    def clocks_disagree(self) -> bool:
        # A manifest is written right after the dump: a store clock *behind* its start is skew.
        return self.stored_at is not None and self.clock_skew_seconds < -CLOCK_TOLERANCE_SECONDS


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def complete_backups(storage: Storage, key_prefix: str, database: str, *,
                     installation: str | None = None) -> list[Backup]:
    """Complete backups of `database` by `installation` (default: this one; "*": any) directly under
    `key_prefix`, newest first by the manifests' start times (see Backup.order_time).

    Other keys beside them (`<key>.verify.json`, files of other tools) are never backups.
    """
    installation = storage.config.installation if installation is None else installation
    objects = {o.key: o for o in storage.list(key_prefix)}
    found = []
    for key, obj in objects.items():
        parsed = parse_key(key, key_prefix)
        if not parsed:
            if _looks_like_backup(key, key_prefix, database):
                log.get().warning("skipped an object whose key is no backup's (its time cannot be read): "
                                  "not this tool's, left untouched", key=key)
            continue
        if parsed[0] != database or manifest_key(key) not in objects:
            continue
        try:
            manifest = read_manifest(storage, key)
            started = parse_time(manifest.started_at)
        except (BackupError, ValueError) as exc:
            log.get().warning("skipped an object whose manifest cannot be read", key=key, error=str(exc))
            continue
        if manifest.database != database or installation not in (ANY_INSTALLATION, manifest.installation):
            continue
        found.append(Backup(key, manifest.database, started, obj.size, manifest.installation,
                            objects[manifest_key(key)].last_modified))
    return sorted(found, key=lambda b: (b.order_time, b.started, b.key), reverse=True)


_BACKUP_SUFFIX = re.compile(r"\.sql(?:\.gz|\.zst)?(?:\.age)?$")


def _looks_like_backup(key: str, key_prefix: str, database: str) -> bool:
    """A key named like one of `database`'s backups (`<database>-...sql.gz`) directly under the prefix."""
    name = key[len(key_prefix):] if key.startswith(key_prefix) else ""
    return "/" not in name and name.startswith(key_name(database) + "-") and bool(_BACKUP_SUFFIX.search(name))


def read_manifest(storage: Storage, key: str) -> Manifest:
    return Manifest.from_json(storage.get_bytes(manifest_key(key)), key)

