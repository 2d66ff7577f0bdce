"""Reader markers: a restore or verify announces the backup it reads, and prune leaves it alone.

A marker is a small object `<backup key>.reader-<id>.json` written before the first byte
is read and deleted when reading ends. A marker of a run that was killed outright stays
behind; it counts only while younger than ENCLAVE_BACKUP_READER_MARKER_SECONDS.
"""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from datetime import datetime, timedelta

from . import log
from .clock import utcnow
from .errors import STOP_DEADLINE_SECONDS, StorageError, Terminated
from .s3 import Storage, StoredObject

MARKER_INFIX = ".reader-"


def marker_prefix(key: str) -> str:
    return key + MARKER_INFIX


@contextlib.contextmanager
def hold(storage: Storage, key: str):
    """Keep a marker on `key` while the body runs."""
    marker = f"{marker_prefix(key)}{uuid.uuid4().hex}.json"
    body = json.dumps({"host": socket.gethostname(), "started_at": utcnow().isoformat()})
    storage.put_bytes(marker, body.encode(), "application/json")
    stopping = False
    try:
        yield marker
    except Terminated:
        stopping = True
        raise
    finally:
        try:
            # After SIGTERM a stalled store must not hold the pod past its grace period.
            (storage.quick_storage(STOP_DEADLINE_SECONDS) if stopping else storage).delete(marker)
        except StorageError as exc:
            log.get().warning("could not remove the reader marker; it expires on its own", marker=marker,
                              error=str(exc))


def markers(storage: Storage, key: str) -> list[StoredObject]:
    return [o for o in storage.list(marker_prefix(key)) if o.key.endswith(".json")]


def all_markers(storage: Storage, key_prefix: str, database: str) -> dict[str, list[StoredObject]]:
    """Markers of every backup of `database` under `key_prefix`, by backup key, in one listing."""
    found: dict[str, list[StoredObject]] = {}
    for o in storage.list(f"{key_prefix}{database}-"):
        if MARKER_INFIX in o.key and o.key.endswith(".json"):
            found.setdefault(o.key.rsplit(MARKER_INFIX, 1)[0], []).append(o)
    return found


def live(found: list[StoredObject], max_age_seconds: int, now: datetime | None = None) -> list[StoredObject]:
    cutoff = (now or utcnow()) - timedelta(seconds=max_age_seconds)
    return [o for o in found if o.last_modified > cutoff]
