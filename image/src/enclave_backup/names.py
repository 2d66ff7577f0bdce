"""Names of the databases a restore or verify creates beside the live one, and how to find them again.

A restore loads into `<db>_restoring_<stamp>` and keeps the live database as
`<db>_pre_restore_<stamp>`; a rollback names the restored one `<db>_restored_<stamp>`;
verify loads into `<db>_verify_<stamp>`. Stamps are UTC times to the second.
"""

from __future__ import annotations

import hashlib
import re

STAMP = "%Y%m%d%H%M%S"
STAMP_DIGITS = 14
MAX_NAME_BYTES = 63  # PostgreSQL's identifier limit; longer names would be cut silently


def _stem(database: str, kind: str) -> str:
    """The part of a derived name before `_<kind>_<stamp>`: the database's name if the whole fits
    63 bytes, else its first bytes (whole characters) and 8 hex digits of its sha256, so two long
    names sharing a beginning never derive the same name."""
    room = MAX_NAME_BYTES - len(f"_{kind}_") - STAMP_DIGITS
    raw = database.encode()
    if len(raw) <= room:
        return database
    digest = hashlib.sha256(raw).hexdigest()[:8]
    cut = raw[:room - 9].decode("utf-8", errors="ignore")  # drops a character cut in two
    return f"{cut}_{digest}"


def derived_name(database: str, kind: str, stamp: str) -> str:
    return f"{_stem(database, kind)}_{kind}_{stamp}"


def scratch_name(database: str, stamp: str) -> str:
    return derived_name(database, "restoring", stamp)


def previous_name(database: str, stamp: str) -> str:
    return derived_name(database, "pre_restore", stamp)


def restored_name(database: str, stamp: str) -> str:
    return derived_name(database, "restored", stamp)


def derived_pattern(database: str, kind: str) -> re.Pattern:
    """Matches every name derived_name(database, kind, <any stamp>) gives."""
    return re.compile(rf"^{re.escape(_stem(database, kind))}_{kind}_\d{{{STAMP_DIGITS}}}$")


def verify_name(database: str, stamp: str) -> str:
    """Not shortened like the others: verify refuses a database whose name leaves no room for it."""
    return f"{database}_verify_{stamp}"


def verify_pattern(database: str) -> re.Pattern:
    """Matches verify_name(database, <any stamp>); group 1 is the stamp."""
    return re.compile(rf"^{re.escape(database)}_verify_(\d{{{STAMP_DIGITS}}})$")
