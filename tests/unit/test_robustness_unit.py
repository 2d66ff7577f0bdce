"""Odd keys, clocks, manifests, records and settings: each refused or skipped, none a crash."""

from __future__ import annotations

import pytest

from enclave_backup.manifest import parse_key


# --- 5. keys ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["malbork-20261399T999999Z-0123456789abcdef.sql.gz",
                                  "malbork-20260230T000000Z.sql.gz", "malbork-20260101T246000Z.sql"])
def test_a_key_with_an_impossible_time_is_no_backups(name):
    assert parse_key("nightly/" + name, "nightly/") is None


def test_a_key_with_a_real_time_still_parses():
    db, started = parse_key("nightly/malbork-20260228T235959Z-0123456789abcdef.sql.gz", "nightly/")
    assert db == "malbork" and started.isoformat() == "2026-02-28T23:59:59+00:00"
