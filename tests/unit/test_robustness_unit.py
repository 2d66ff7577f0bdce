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


# --- 1. one order for `latest` and retention, by the store's clock where the clocks disagree ------

from datetime import datetime, timedelta, timezone  # noqa: E402

from enclave_backup.catalog import Backup  # noqa: E402
from enclave_backup.retention import Rules, decide, newest_first  # noqa: E402

T0 = datetime(2026, 3, 1, 0, 0, tzinfo=timezone.utc)


def _made(key: str, real_start: datetime, writer_ahead: timedelta = timedelta(0),
          took: timedelta = timedelta(minutes=2)) -> Backup:
    """A backup whose writer's clock was `writer_ahead` ahead of the store's (negative: behind)."""
    return Backup(key, "malbork", real_start + writer_ahead, 100, "default",
                  stored_at=(real_start + took).replace(microsecond=0), finished=real_start + writer_ahead + took)


def test_a_backup_dated_a_year_ahead_never_makes_keep_last_delete_the_new_backups():
    future = _made("future", T0, writer_ahead=timedelta(days=365))
    backups = [future]
    for day in range(1, 8):  # the CronJob: a backup, then prune with KeepLast=1
        new = _made(f"day{day}", T0 + timedelta(days=day))
        backups.append(new)
        decisions = decide(backups, Rules(keep_last=1), T0 + timedelta(days=day, hours=1))
        kept = [d.key for d in decisions if d.keep]
        assert kept == [new.key] and newest_first(backups)[0] is new
        if day == 1:  # deleted now, as the oldest by the store's clock
            assert decisions[-1].key == "future" and decisions[-1].ordered_at is not None
        backups = [b for b in backups if b.key in kept]


@pytest.mark.parametrize("skew", [timedelta(minutes=10), timedelta(minutes=-10), timedelta(minutes=29),
                                  timedelta(days=3), timedelta(days=-400)])
def test_latest_and_retention_agree_and_the_backup_just_made_is_newest(skew):
    earlier = _made("earlier", T0, writer_ahead=skew)  # the other writer's clock is off
    just_made = _made("just-made", T0 + timedelta(minutes=5))
    backups = [earlier, just_made]
    decisions = decide(backups, Rules(keep_last=1), T0 + timedelta(minutes=8))
    assert newest_first(backups)[0] is just_made
    assert [d.key for d in decisions if d.keep] == ["just-made"]


@pytest.mark.parametrize("skew", [timedelta(minutes=-10), timedelta(minutes=-29), timedelta(minutes=10)])
def test_a_backup_made_on_a_skewed_clock_is_still_the_newest(skew):
    earlier = _made("earlier", T0)
    just_made = _made("just-made", T0 + timedelta(minutes=5), writer_ahead=skew)
    backups = [earlier, just_made]
    assert newest_first(backups)[0] is just_made
    assert [d.key for d in decide(backups, Rules(keep_last=1), T0 + timedelta(minutes=8)) if d.keep] == ["just-made"]
    assert just_made.ordered_by_store_clock


def test_a_manifest_copied_back_long_after_keeps_its_own_start():
    """Stored a week after it finished (copied back by hand): not taken for the newest backup."""
    newest = _made("newest", T0 + timedelta(days=6))
    copied = Backup("copied", "malbork", T0, 100, "default", stored_at=T0 + timedelta(days=7),
                    finished=T0 + timedelta(minutes=2))
    assert newest_first([copied, newest])[0] is newest and not copied.ordered_by_store_clock


def test_keep_days_counts_a_future_dated_backup_by_the_store_s_clock():
    future = _made("future", T0 - timedelta(days=30), writer_ahead=timedelta(days=400))
    new = _made("new", T0)
    decisions = {d.key: d for d in decide([future, new], Rules(keep_days=7), T0 + timedelta(hours=1))}
    assert decisions["new"].keep and not decisions["future"].keep


# --- 4. absent metadata is no conflict; metadata that is there must agree ------------------------

from enclave_backup.errors import IntegrityError  # noqa: E402
from enclave_backup.manifest import Manifest  # noqa: E402
from enclave_backup.source import check_identity  # noqa: E402


def _manifest(**fields) -> Manifest:
    base = dict(key="nightly/malbork-20260301T000000Z-0123456789abcdef.sql.gz", database="malbork",
                engine="postgresql", server_version="15", started_at="2026-03-01T00:00:00Z",
                finished_at="2026-03-01T00:01:00Z", compression="gzip", stored_size=10, sha256="a" * 64,
                uncompressed_size=20, tables={"public.t": 1}, installation="default", run_id="0123456789abcdef")
    return Manifest(**{**base, **fields})


@pytest.mark.parametrize("metadata", [{}, {"database": "malbork"}, {"run_id": "0123456789abcdef", "engine": "postgresql"}])
def test_absent_metadata_is_no_conflict(metadata):
    m = _manifest()
    check_identity("s3://b/k", m, metadata, m.identity())


@pytest.mark.parametrize("metadata", [{"database": "other"}, {**_manifest().identity(), "run_id": "ffffffffffffffff"}])
def test_metadata_that_is_there_must_agree(metadata):
    m = _manifest()
    with pytest.raises(IntegrityError, match="its metadata disagrees"):
        check_identity("s3://b/k", m, metadata, m.identity())


def test_the_header_is_still_required_and_checked():
    m = _manifest()
    with pytest.raises(IntegrityError, match="does not begin with an enclave-backup header"):
        check_identity("s3://b/k", m, {}, None)
    with pytest.raises(IntegrityError, match="its header disagrees"):
        check_identity("s3://b/k", m, {}, {**m.identity(), "database": "other"})


# --- 7. manifests and records are checked against a schema before any field is used -------------

import json  # noqa: E402

from enclave_backup.verification import Record  # noqa: E402

KEY = "nightly/malbork-20260301T000000Z-0123456789abcdef.sql.gz"


def _raw(**changes) -> bytes:
    data = json.loads(_manifest().to_json())
    for name, value in changes.items():
        if value is _DROP:
            data.pop(name)
        else:
            data[name] = value
    return json.dumps(data).encode()


_DROP = object()


@pytest.mark.parametrize("changes, field", [
    ({"tables": {"public.t": 2**63}}, "tables/public.t"),
    ({"tables": {"public.t": 10**30}}, "tables/public.t"),
    ({"tables": {"public.t": -1}}, "tables/public.t"),
    ({"tables": {"public.t": 1.5}}, "tables/public.t"),
    ({"tables": ["public.t", 1]}, "tables"),
    ({"tables": "public.t"}, "tables"),
    ({"tables": None}, "tables"),
    ({"stored_size": "10"}, "stored_size"),
    ({"stored_size": 2**64}, "stored_size"),
    ({"sha256": "not hex"}, "sha256"),
    ({"compression": "bz2"}, "compression"),
    ({"engine": "mysql"}, "engine"),
    ({"database": ["malbork"]}, "database"),
    ({"run_id": "../../x"}, "run_id"),
    ({"database_state": "everything"}, "database_state"),
    ({"encryption": {"scheme": "rot13", "recipients": []}}, "encryption/scheme"),
    ({"encryption": {"scheme": "age"}}, "encryption/recipients"),
    ({"signature": {"algorithm": "ed25519", "key_id": "k", "value": 7}}, "signature/value"),
    ({"signature": "signed"}, "signature"),
    ({"sha256": _DROP}, "sha256"),
    ({"finished_at": 20260301}, "finished_at"),
])
def test_a_bad_manifest_is_an_integrity_error_naming_the_field(changes, field):
    with pytest.raises(IntegrityError) as caught:
        Manifest.from_json(_raw(**changes), KEY)
    assert caught.value.exit_code == 5
    assert f"field {field!r}" in str(caught.value), str(caught.value)


@pytest.mark.parametrize("changes", [
    {}, {"encryption": None, "signature": None}, {"encryption": _DROP, "signature": _DROP},
    {"encryption": {"scheme": "age", "recipients": ["age1xyz"]},
     "signature": {"algorithm": "ed25519", "key_id": "k1", "value": "c2ln"}},
    {"tables": {"public.t": 2**63 - 1}}, {"tables": _DROP}, {"database_state": None}, {"run_id": ""},
    {"something_newer": {"a": 1}},  # fields a later version adds are ignored
])
def test_good_manifests_are_accepted(changes):
    manifest = Manifest.from_json(_raw(**changes), KEY)
    assert manifest.key == KEY
    if isinstance(changes.get("encryption"), dict):
        assert manifest.encryption == changes["encryption"] and manifest.signature == changes["signature"]


def test_a_manifest_s_bad_value_is_quoted_short():
    with pytest.raises(IntegrityError) as caught:
        Manifest.from_json(_raw(server_version=["x" * 100_000]), KEY)
    assert len(str(caught.value)) < 500


@pytest.mark.parametrize("data", [
    {"key": KEY, "verified_at": 5, "passed": True},
    {"key": KEY, "verified_at": "2026-03-01T00:00:00Z", "passed": "yes"},
    {"key": KEY, "verified_at": "2026-03-01T00:00:00Z", "passed": True, "rows": 2**64},
    {"key": KEY, "verified_at": "2026-03-01T00:00:00Z", "passed": False, "row_mismatches": ["t"]},
    {"key": KEY, "passed": True}, [], "record", 7,
])
def test_a_bad_verification_record_is_not_ours(data):
    assert Record.from_json(json.dumps(data).encode()) is None


def test_a_good_verification_record_reads():
    record = Record(key=KEY, verified_at="2026-03-01T00:00:00Z", passed=False, exit_code=5, error="x",
                    rows=3, row_mismatches={"public.t": {"restored": 1, "manifest": 2}})
    assert Record.from_json(record.to_json()) == record
