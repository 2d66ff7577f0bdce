"""The mark a restored database carries: which backup it came from, so a second restore of it is skipped."""

from __future__ import annotations

import json

MARKER_TOOL = "enclave-backup"


def marker(key: str, sha256: str, restored_at: str, as_of: str = "") -> str:
    """`as_of`: the point in time a native backup was restored to (restore.asOf), "" for its end."""
    return json.dumps({"restored_by": MARKER_TOOL, "key": key, "sha256": sha256, "restored_at": restored_at,
                       **({"as_of": as_of} if as_of else {})}, sort_keys=True)


def parse_marker(comment: str | None) -> dict | None:
    if not comment:
        return None
    try:
        data = json.loads(comment)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("restored_by") != MARKER_TOOL:
        return None
    return data
