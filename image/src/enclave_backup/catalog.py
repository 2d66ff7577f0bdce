"""Which complete backups exist: this database's and this installation's, by what their manifests say.

An object counts only with its manifest beside it, and only if that manifest names the
same object, this database and the installation asked for. Order is the manifest's start
time, not the key's timestamp (a key is a name anyone can forge), read on the store's clock
where the writer's clock disagreed with it (see Backup.order_time). `latest`, `list`, `status`
and retention all take this one order (retention.newest_first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from . import log
from .errors import BackupError, IntegrityError
from .manifest import Manifest, key_name, manifest_key, parse_key
from .retention import newest_first
from .s3 import Storage

# Beyond this the writer's clock and the store's disagree: the order follows the store's.
STORE_CLOCK_RESOLUTION = timedelta(seconds=1)
CLOCK_TOLERANCE_SECONDS = 300
# A manifest stored longer than this after its dump finished was copied or rewritten later
# (by hand, a bucket migration), not written by a late clock: its own start time counts.
LATE_CLOCK_LIMIT_SECONDS = 1800
ANY_INSTALLATION = "*"  # only by explicit choice: restore.sourceInstallation
# A manifest holds a row count per table: 1 MiB is tens of thousands of tables. Anything larger
# is not read at all (a 300 MiB one took about 1 GiB to parse).
MAX_MANIFEST_BYTES = 1 << 20


@dataclass(frozen=True)
class Backup:
    key: str
    database: str
    started: datetime  # from the manifest
    size: int
    installation: str = ""
    stored_at: datetime | None = None  # the store's clock: when the manifest was written
    finished: datetime | None = None  # from the manifest; the manifest is written right after it
    native: dict | None = None  # a native backup's place in its collection (Manifest.native)

    @property
    def manifest_key(self) -> str:
        return manifest_key(self.key)

    @property
    def _duration(self) -> timedelta:
        if self.finished is None:
            return timedelta(0)
        return max(timedelta(0), self.finished - self.started)  # a negative one would date it later

    @property
    def clock_skew_seconds(self) -> float:
        """How far the store's clock was ahead of the writer's when the manifest was written."""
        if self.stored_at is None:
            return 0.0
        return (self.stored_at - (self.started + self._duration)).total_seconds()

    @property
    def clocks_disagree(self) -> bool:
        """The store's clock was behind the writer's: the writer's runs ahead (or the start was edited)."""
        return self.stored_at is not None and self.clock_skew_seconds < -CLOCK_TOLERANCE_SECONDS

    @property
    def ordered_by_store_clock(self) -> bool:
        """The writer's clock ran ahead of the store's, or up to LATE_CLOCK_LIMIT_SECONDS behind it."""
        skew = self.clock_skew_seconds
        return self.stored_at is not None and (
            skew < -CLOCK_TOLERANCE_SECONDS or CLOCK_TOLERANCE_SECONDS < skew <= LATE_CLOCK_LIMIT_SECONDS)

    @property
    def order_time(self) -> datetime:
        """What `latest` and retention sort by: the start on the store's clock where the clocks disagree,
        else the manifest's start, never later than the store saw the manifest. So neither a writer's
        clock that runs ahead nor an edited start keeps a backup newest for ever (and makes KeepLast
        delete each new backup as it is made), and a backup made on a clock running a few minutes
        behind still sorts after the ones the store saw before it."""
        if self.stored_at is None:
            return self.started
        # Stores stamp objects in whole seconds: the manifest may have been written up to 1 s later.
        on_store_clock = self.stored_at + STORE_CLOCK_RESOLUTION - self._duration
        return on_store_clock if self.ordered_by_store_clock else min(self.started, on_store_clock)


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def complete_backups(storage: Storage, key_prefix: str, database: str, *,
                     installation: str | None = None) -> list[Backup]:
    """Complete backups of `database` by `installation` (default: this one; "*": any) directly under
    `key_prefix`, newest first (retention.newest_first over Backup.order_time).

    Other keys beside them (`<key>.verify.json`, files of other tools) are never backups.
    """
    installation = storage.config.installation if installation is None else installation
    # Backups are directly under the prefix; a native collection's files are in a folder below it.
    objects = {o.key: o for o in storage.list(key_prefix, shallow=True)}
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
        listed = objects[manifest_key(key)].size
        if listed > MAX_MANIFEST_BYTES:  # never read: it would take its size in memory
            log.get().warning("skipped an object whose manifest is too large to be one of ours", key=key,
                              manifest_bytes=listed, limit=MAX_MANIFEST_BYTES)
            continue
        try:
            manifest = read_manifest(storage, key, listed)
            started, finished = parse_time(manifest.started_at), parse_time(manifest.finished_at)
        except (BackupError, ValueError) as exc:
            log.get().warning("skipped an object whose manifest cannot be read", key=key, error=str(exc))
            continue
        if manifest.database != database or installation not in (ANY_INSTALLATION, manifest.installation):
            continue
        size = manifest.native.get("size_bytes", obj.size) if manifest.native else obj.size
        found.append(Backup(key, manifest.database, started, size, manifest.installation,
                            objects[manifest_key(key)].last_modified, finished, manifest.native))
    return newest_first(found)


_BACKUP_SUFFIX = re.compile(r"(?:\.sql(?:\.gz|\.zst)?(?:\.age)?|\.crdb)$")


def _looks_like_backup(key: str, key_prefix: str, database: str) -> bool:
    """A key named like one of `database`'s backups (`<database>-...sql.gz`) directly under the prefix."""
    name = key[len(key_prefix):] if key.startswith(key_prefix) else ""
    return "/" not in name and name.startswith(key_name(database) + "-") and bool(_BACKUP_SUFFIX.search(name))


def read_manifest(storage: Storage, key: str, size: int | None = None) -> Manifest:
    """The manifest of `key`, read only if it is at most MAX_MANIFEST_BYTES (its size from the
    listing, else from a HEAD); a larger one is refused (IntegrityError) without being read."""
    where = manifest_key(key)
    if size is None:
        head = storage.head(where)
        if head is None:
            raise IntegrityError(f"{where}: no such manifest; {key} is not a complete backup")
        size = head.size
    if size > MAX_MANIFEST_BYTES:
        raise IntegrityError(f"the manifest of {key} holds {size} bytes, more than the {MAX_MANIFEST_BYTES} a "
                             "manifest of this tool can: it is not one; nothing was read")
    if size == 0:  # a range read of nothing is an error on S3
        raise IntegrityError(f"the manifest of {key} is empty")
    raw = storage.read_range(where, min(size, MAX_MANIFEST_BYTES) + 1)  # +1: replaced since by a larger one
    if len(raw) > MAX_MANIFEST_BYTES:
        raise IntegrityError(f"the manifest of {key} is larger than {MAX_MANIFEST_BYTES} bytes: it is not one")
    return Manifest.from_json(raw, key)

