"""Which object a restore or verify reads, and whether it is this database's complete backup.

Everything here fails before any database work: the object, its manifest, its metadata and
the script's own first lines must name the same run, database and installation; the manifest's
signature must be proved and the whole object must match it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re

from . import encryption, log, readers, segments, signing
from .catalog import ANY_INSTALLATION, complete_backups, read_manifest
from .compress import decompressed
from .config import Config
from .errors import IntegrityError, StorageError
from .manifest import Manifest, ascii_name, decode_metadata, manifest_key, parse_header
from .progress import Progress
from .s3 import Storage

HEADER_BYTES = 64 * 1024  # the object's first bytes, read to check its header before any work
PROVE_CHUNK = 1024 * 1024
OVERRIDE_HINT = ("; to restore another installation's backup on purpose (disaster recovery), set "
                 "ENCLAVE_BACKUP_RESTORE_SOURCE_INSTALLATION (restore.sourceInstallation) to its name, "
                 f"or to {ANY_INSTALLATION!r} for backups that record none")


def resolve(storage: Storage, config: Config, object_key: str) -> tuple[str, Manifest]:
    """The object's key and its checked manifest; fails before any database work."""
    source = config.source_installation
    keys = signing.trusted_keys(config)
    if object_key == "latest":
        backups = complete_backups(storage, config.key_prefix, config.database, installation=source)
        if not backups:
            raise StorageError(f"no complete backup of {config.database!r} by installation {source!r} in "
                               f"s3://{config.bucket}/{config.key_prefix} (an object counts only with its manifest)"
                               + OVERRIDE_HINT)
        key = backups[0].key
    else:
        key = object_key.lstrip("/")
    head = storage.head(key)
    if head is None and object_key != "latest" and config.key_prefix and not key.startswith(config.key_prefix):
        relative = storage.head(config.key_prefix + key)  # a key given relative to the prefix
        if relative is not None:
            key, head = config.key_prefix + key, relative
    if head is None:
        raise StorageError(f"s3://{config.bucket}/{key}: no such object; `enclave-backup list` shows the backups")
    manifest_head = storage.head(manifest_key(key))
    if manifest_head is None:
        raise IntegrityError(f"s3://{config.bucket}/{key} has no manifest ({manifest_key(key)}): "
                             "it is not a complete backup")
    manifest = read_manifest(storage, key, manifest_head.size)
    where = f"s3://{config.bucket}/{key}"
    signing.check(config, keys, manifest, where)
    if manifest.database != config.database:
        raise IntegrityError(f"{where} is a backup of database {manifest.database!r}, not of {config.database!r}; "
                             "nothing was changed")
    if source != ANY_INSTALLATION and manifest.installation != source:
        raise IntegrityError(f"{where} was written by installation {manifest.installation or '(not recorded)'!r}, "
                             f"not by {source!r}; nothing was changed" + OVERRIDE_HINT)
    if head.size != manifest.stored_size:
        raise IntegrityError(f"{where} holds {head.size} bytes but its manifest "
                             f"says {manifest.stored_size}: the object is truncated or was replaced; nothing was run or changed")
    check_identity(where, manifest, decode_metadata(head.metadata), read_header(storage, key, manifest))
    if segments.covers(manifest.segments, manifest.stored_size):
        log.get().info("the object's segments are checked as it is replayed, each before any of its bytes runs",
                       key=key, segments=len(manifest.segments["sha256"]))
    else:
        prove(storage, config, key, manifest)
    return key, manifest


def prove(storage: Storage, config: Config, key: str, manifest: Manifest) -> None:
    """Read the whole object once and match it to its (signed) manifest before any statement runs;
    then pin that version, so the replay reads exactly the bytes proved here.

    Checking while replaying would come too late: statements before a changed byte would have run."""
    logger = log.get()
    hasher, size = hashlib.sha256(), 0
    progress = Progress(config.progress_interval, lambda fields: logger.info("checking the object", **fields))
    # The marker keeps prune away from the backup while it is read (replay.py holds one too).
    with readers.hold(storage, key), storage.open_read(key) as reader:
        while chunk := reader.read(PROVE_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
            progress.add(len(chunk), lambda: {"of_bytes": manifest.stored_size})
    if (size, hasher.hexdigest()) != (manifest.stored_size, manifest.sha256):
        raise IntegrityError(f"s3://{config.bucket}/{key} does not match its manifest ({size} bytes with sha256 "
                             f"{hasher.hexdigest()}; the manifest says {manifest.stored_size} bytes with sha256 "
                             f"{manifest.sha256}): it is damaged or was altered; nothing was run or changed")
    if reader.etag:
        storage.pin(key, reader.etag)
    logger.info("object matches its manifest", key=key, stored_bytes=size, seconds=round(progress.elapsed, 1))


_LEGACY_HEADER = re.compile(rb"^-- enclave-backup \S+: (\S+) database (.*)$", re.M)


def read_header(storage: Storage, key: str, manifest: Manifest) -> dict | None:
    """The identity the script's own first lines declare (older backups: engine and database only).

    An encrypted backup is decrypted here already: a missing or wrong identity fails before any work."""
    identities = encryption.identities_for(storage.config, key, manifest)
    raw = storage.read_range(key, min(encryption.stored_bytes(HEADER_BYTES, manifest), manifest.stored_size))
    text = b""
    with contextlib.closing(encryption.plaintext(manifest, identities, [raw], complete=False)) as stored:
        try:
            for piece in decompressed(manifest.compression, stored):
                text += piece
                break  # the header is in the first lines; a partial stream ends without its tail
        except encryption.Refused:
            raise
        except IntegrityError:
            pass  # the range cut the stream: what came out before is all the header needs
    found = parse_header(text)
    if found is None and (legacy := _LEGACY_HEADER.search(text[:4096])):
        found = {"engine": legacy.group(1).decode(), "database": legacy.group(2).decode("ascii", "replace")}
    return found


def check_identity(where: str, manifest: Manifest, metadata: dict, header: dict | None) -> None:
    """The manifest, the object's metadata and its header must name the same run, database and engine.

    Metadata that is absent (an object copied back by hand without it) is no conflict: it is
    said, and the header (here) and the sha256 (while reading) still decide. Metadata that is
    there must agree."""
    expected = manifest.identity()
    if header is None:
        raise IntegrityError(f"{where} does not begin with an enclave-backup header: it is not a backup this tool "
                             "made; nothing was changed")
    if not manifest.run_id:  # written before run ids: only engine and database can be compared
        expected = {"engine": manifest.engine, "database": ascii_name(manifest.database)}
        header = {k: header.get(k) for k in expected}
        metadata = {}
    elif missing := [k for k in expected if k not in metadata]:
        log.get().warning("the object lacks its S3 metadata (copied without it?): its identity is checked by "
                          "its header and its sha256 alone", object=where, missing=missing)
    in_metadata = {k: v for k, v in expected.items() if k in metadata}
    for name, got, wanted in (("header", header, expected), ("metadata", metadata, in_metadata)):
        differs = {k: got.get(k) for k in wanted if got.get(k) != wanted[k]}
        if differs:
            raise IntegrityError(f"{where}: its {name} disagrees with its manifest ({json.dumps(differs)} vs "
                                 f"{json.dumps({k: wanted[k] for k in differs})}): the object and the manifest "
                                 "are not one run's; nothing was changed")
