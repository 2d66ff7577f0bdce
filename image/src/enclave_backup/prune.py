"""`enclave-backup prune`: delete the complete backups the retention rules no longer keep.

Only backups `catalog.complete_backups` returns are candidates (this database, this
prefix, with our manifest). Each goes object first, then its manifest, then its
verification record: an interrupted prune leaves at most a manifest without its
object, which no command counts as a backup.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import log, readers
from .catalog import complete_backups
from .clock import utcnow
from .config import Config
from .manifest import manifest_key
from .retention import Decision, Rules, decide
from .s3 import Storage
from .verification import record_key


@dataclass
class PruneSummary:
    kept: list[Decision] = field(default_factory=list)
    deleted: list[Decision] = field(default_factory=list)
    dry_run: bool = False


def run_prune(config: Config, dry_run: bool = False) -> PruneSummary:
    logger = log.get()
    storage = Storage(config)
    rules = Rules.from_config(config)
    summary = PruneSummary(dry_run=dry_run)
    if not rules.active:
        logger.info("prune: no retention rule set, every backup is kept", database=config.database)
        return summary
    backups = complete_backups(storage, config.key_prefix, config.database)
    now = utcnow()
    marked = readers.all_markers(storage, config.key_prefix, config.database)
    protected = {key: "being read by a restore or verify" for key, found in marked.items()
                 if readers.live(found, config.reader_marker_seconds, now)}
    for decision in decide(backups, rules, now, protected):
        if decision.ordered_at is not None:
            logger.warning("prune: the writer's clock and the store's disagreed on this backup; it is ordered by "
                           "the store's clock", key=decision.key, started=decision.started.isoformat(),
                           ordered_at=decision.ordered_at.isoformat(), kept=decision.keep)
        if decision.keep:
            summary.kept.append(decision)
            continue
        if dry_run:
            logger.info("prune: would delete", key=decision.key, started=decision.started.isoformat(),
                        rule=decision.reason)
            summary.deleted.append(decision)
            continue
        # Looked at again right before deleting: a reader may have started since the listing.
        if readers.live(readers.markers(storage, decision.key), config.reader_marker_seconds):
            logger.info("prune: kept, a restore or verify started reading it", key=decision.key)
            summary.kept.append(Decision(decision.key, decision.started, True, ("being read by a restore or verify",),
                                         decision.ordered_at))
            continue
        _delete(storage, decision.key)
        logger.info("prune: deleted", key=decision.key, started=decision.started.isoformat(), rule=decision.reason)
        summary.deleted.append(decision)
    logger.info("prune complete", database=config.database, rules=rules.describe(), dry_run=dry_run,
                kept=len(summary.kept), deleted=len(summary.deleted),
                **({"would_delete": [d.key for d in summary.deleted]} if dry_run else {}))
    return summary


def _delete(storage: Storage, key: str) -> None:
    storage.delete(key)  # first: without its object a manifest is no backup
    storage.delete(manifest_key(key))
    storage.delete(record_key(key))
    for marker in readers.markers(storage, key):  # only expired ones are left at this point
        storage.delete(marker.key)
