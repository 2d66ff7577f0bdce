"""`enclave-backup prune`: delete the complete backups the retention rules no longer keep.

Only backups `catalog.complete_backups` returns are candidates (this database, this
prefix, with our manifest). Each goes object first, then its manifest, then its
verification record: an interrupted prune leaves at most a manifest without its
object, which no command counts as a backup. A native backup's object is its pointer; its
chain's data in the collection goes only once no backup of that chain is left (retention.keep_chains).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from dataclasses import dataclass, field

from . import log, readers
from .catalog import complete_backups, parse_time
from .clock import utcnow
from .config import Config
from .errors import STOP_DEADLINE_SECONDS, Terminated
from .manifest import manifest_key
from .engines.cockroachdb.native import INCREMENTALS_FOLDER
from .native_backup import COLLECTIONS_FOLDER
from .retention import Decision, Link, Rules, chains_gone, decide, keep_chains
from .s3 import Storage
from .verification import record_key


@dataclass
class PruneSummary:
    kept: list[Decision] = field(default_factory=list)
    deleted: list[Decision] = field(default_factory=list)
    dry_run: bool = False


# After SIGTERM the deletion in flight may finish; past this the run ends anyway (the pod's grace
# period is 30 s, and its clean-up deadline STOP_DEADLINE_SECONDS).
GIVE_UP_SECONDS = STOP_DEADLINE_SECONDS / 2


@contextlib.contextmanager
def _stoppable():
    """A check that raises Terminated once SIGTERM came, to call between deletions.

    The signal only sets a flag: raised inside an S3 call, botocore took the exception for a
    failed attempt of the request and retried it, so a prune ran on to its end. A deletion
    that does not finish within GIVE_UP_SECONDS of the signal (a stalled store) ends the process:
    deletions go object first, so at worst a manifest without its object stays, which no command
    counts as a backup.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None  # signals reach the main thread only: nothing to watch here
        return
    stop = threading.Event()

    def give_up() -> None:
        log.get().error("prune failed", error="stopped by signal SIGTERM; a deletion did not finish within "
                        f"{GIVE_UP_SECONDS:g}s", exit_code=Terminated.exit_code)
        sys.stdout.flush()
        os._exit(Terminated.exit_code)

    def on_sigterm(signum, _frame) -> None:
        signal.signal(signum, signal.SIG_IGN)  # one stop is enough
        stop.set()
        timer = threading.Timer(GIVE_UP_SECONDS, give_up)
        timer.daemon = True
        timer.start()

    def check() -> None:
        if stop.is_set():
            raise Terminated("stopped by signal SIGTERM between deletions")

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield check
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN if stop.is_set() else previous)


def run_prune(config: Config, dry_run: bool = False) -> PruneSummary:
    with _stoppable() as check:
        return _run_prune(config, dry_run, check)


def _run_prune(config: Config, dry_run: bool, check) -> PruneSummary:
    logger = log.get()
    storage = Storage(config)
    rules = Rules.from_config(config)
    summary = PruneSummary(dry_run=dry_run)
    if not rules.active:
        logger.info("prune: no retention rule set, every backup is kept", database=config.database)
        return summary
    backups = complete_backups(storage, config.key_prefix, config.database)
    check()
    now = utcnow()
    marked = readers.all_markers(storage, config.key_prefix, config.database)
    protected = {key: "being read by a restore or verify" for key, found in marked.items()
                 if readers.live(found, config.reader_marker_seconds, now)}
    links = {b.key: Link((b.native["collection"], b.native["folder"]), parse_time(b.native["end_time"]))
             for b in backups if b.native}
    for decision in keep_chains(decide(backups, rules, now, protected), links):
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
        check()
        # Looked at again right before deleting: a reader may have started since the listing.
        if readers.live(readers.markers(storage, decision.key), config.reader_marker_seconds):
            logger.info("prune: kept, a restore or verify started reading it", key=decision.key)
            summary.kept.append(Decision(decision.key, decision.started, True, ("being read by a restore or verify",),
                                         decision.ordered_at))
            continue
        check()
        _delete(storage, decision.key)
        logger.info("prune: deleted", key=decision.key, started=decision.started.isoformat(), rule=decision.reason)
        summary.deleted.append(decision)
    # After the loop: a backup a reader started on since the listing keeps its chain too.
    for collection, folder in sorted(chains_gone(summary.kept + summary.deleted, links)):
        check()
        _delete_chain(storage, config, collection, folder, dry_run, check)
    logger.info("prune complete", database=config.database, rules=rules.describe(), dry_run=dry_run,
                kept=len(summary.kept), deleted=len(summary.deleted),
                **({"would_delete": [d.key for d in summary.deleted]} if dry_run else {}))
    return summary


def _delete_chain(storage: Storage, config: Config, collection: str, folder: str, dry_run: bool, check) -> None:
    """The data of a native chain none of whose backups is left: its full backup's folder and its
    incrementals (in `incrementals/<folder>` from 22.1, in the full backup's folder before)."""
    logger = log.get()
    if not collection.startswith(f"{config.key_prefix}{COLLECTIONS_FOLDER}/"):
        logger.warning("prune: left a chain's data alone: its collection is not where this tool writes them",
                       collection=collection, folder=folder)
        return
    prefixes = [f"{collection}{folder}/", f"{collection}/{INCREMENTALS_FOLDER}{folder}/"]
    if dry_run:
        logger.info("prune: would delete the data of a chain no backup is left of", collection=collection,
                    folder=folder)
        return
    deleted = 0
    for prefix in prefixes:
        for obj in storage.list(prefix):
            check()
            storage.delete(obj.key)
            deleted += 1
    logger.info("prune: deleted the data of a chain no backup is left of", collection=collection, folder=folder,
                objects=deleted)


def _delete(storage: Storage, key: str) -> None:
    storage.delete(key)  # first: without its object a manifest is no backup
    storage.delete(manifest_key(key))
    storage.delete(record_key(key))
    for marker in readers.markers(storage, key):  # only expired ones are left at this point
        storage.delete(marker.key)
