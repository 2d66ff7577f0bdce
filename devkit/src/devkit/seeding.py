"""Backups at controlled times: copies of one real backup under keys (and manifests) of other times."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from enclave_backup.manifest import EXTENSIONS, object_key, run_id_of

from .signingkeys import SigningKeys, signed


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def key_at(prefix: str, database: str, moment: datetime, ext: str = ".sql.gz", run_id: str = "") -> str:
    plain = object_key(prefix, database, moment, "none", run_id)  # ends in EXTENSIONS["none"]
    return plain[: -len(EXTENSIONS["none"])] + ext


def copy_backup_at(s3, bucket: str, source_key: str, moment: datetime, database: str | None = None,
                   prefix: str | None = None, sign_with: SigningKeys | None = None) -> str:
    """A complete backup started at `moment`: the real object's bytes and its manifest, re-keyed
    (and re-signed with `sign_with`, as the backup Job holding those keys would have signed it)."""
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=source_key + ".manifest.json")["Body"].read())
    database = database or manifest["database"]
    if prefix is None:
        prefix = source_key[: source_key.rindex("/") + 1] if "/" in source_key else ""
    ext = source_key[source_key.index(".sql"):]
    # The copy keeps the run id its bytes' header names; only the time in the key differs.
    key = key_at(prefix, database, moment, ext, run_id_of(source_key))
    s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": source_key})
    manifest.update(key=key, database=database, started_at=_iso(moment),
                    finished_at=_iso(moment + timedelta(seconds=5)))
    body = signed(manifest, sign_with) if sign_with else json.dumps(manifest).encode()
    s3.put_object(Bucket=bucket, Key=key + ".manifest.json", Body=body)
    return key


def keys(s3, bucket: str, prefix: str = "") -> set[str]:
    out = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.update(o["Key"] for o in page.get("Contents", []))
    return out
