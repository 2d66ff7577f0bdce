"""signing.py without I/O beyond key files: what a signature covers and what each refusal says."""

from __future__ import annotations

import dataclasses

import pytest

from devkit.signingkeys import make_signing_keys
from enclave_backup import signing
from enclave_backup.config import Config
from enclave_backup.errors import ConfigError, IntegrityError
from enclave_backup.manifest import Manifest


def _manifest() -> Manifest:
    return Manifest(key="p/db-20260101T000000Z-0123456789abcdef.sql.gz", database="db", engine="postgresql",
                    server_version="16.4", started_at="2026-01-01T00:00:00Z", finished_at="2026-01-01T00:01:00Z",
                    compression="gzip", stored_size=10, sha256="0" * 64, uncompressed_size=20,
                    tables={'"public"."t"': 3}, database_state={"settings": [("a", "b")]}, run_id="0123456789abcdef")


@pytest.fixture
def keys(tmp_path):
    return make_signing_keys(tmp_path / "k")


def _signed(keys) -> Manifest:
    manifest = _manifest()
    signing.sign(manifest, signing.load_private_key(str(keys.private)))
    return manifest


def test_a_signature_survives_the_round_trip_through_the_stored_json(keys):
    stored = Manifest.from_json(_signed(keys).to_json(), _manifest().key)
    assert signing.problem(stored, signing.load_public_keys(str(keys.public))) is None


@pytest.mark.parametrize("field, value", [("sha256", "1" * 64), ("stored_size", 11), ("tables", {'"public"."t"': 4}),
                                          ("encryption", {"scheme": "age", "recipients": []}), ("installation", "x")])
def test_any_changed_field_breaks_the_signature(keys, field, value):
    changed = dataclasses.replace(_signed(keys), **{field: value})
    assert "does not match its content" in signing.problem(changed, signing.load_public_keys(str(keys.public)))


def test_unsigned_unknown_key_wrong_algorithm_and_garbage_are_each_named(keys, tmp_path):
    trusted = signing.load_public_keys(str(keys.public))
    assert signing.problem(_manifest(), trusted) == "it is not signed"
    other = _signed(make_signing_keys(tmp_path / "other"))
    assert "not among the trusted keys" in signing.problem(other, trusted)
    signed = _signed(keys)
    assert "algorithm" in signing.problem(dataclasses.replace(signed, signature={**signed.signature,
                                                                                  "algorithm": "hmac"}), trusted)
    garbage = dataclasses.replace(signed, signature={**signed.signature, "value": "not base64!"})
    assert "does not match its content" in signing.problem(garbage, trusted)


def test_check_refuses_unless_the_override_is_set(keys):
    config = Config(bucket="b", database="db", signing_public_key_file=str(keys.public))
    trusted = signing.trusted_keys(config)
    with pytest.raises(IntegrityError, match="it is not signed; nothing was run or changed"):
        signing.check(config, trusted, _manifest(), "s3://b/k")
    assert signing.check(dataclasses.replace(config, allow_unverified=True), trusted, _manifest(), "s3://b/k") is False
    assert signing.check(config, trusted, _signed(keys), "s3://b/k") is True
    with pytest.raises(IntegrityError, match="no public key is given"):
        signing.check(dataclasses.replace(config, signing_public_key_file=""), {}, _signed(keys), "s3://b/k")


def test_key_files_that_are_wrong_are_config_errors_that_never_quote_them(keys, tmp_path):
    private = keys.private.read_text()
    with pytest.raises(ConfigError, match="holds a private key") as shown:
        signing.load_public_keys(str(keys.private))
    assert private.split("-----")[2].strip() not in str(shown.value)
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing here\n")
    with pytest.raises(ConfigError, match="holds no PEM public key"):
        signing.load_public_keys(str(empty))
    with pytest.raises(ConfigError, match="holds no unencrypted ed25519 private key"):
        signing.load_private_key(str(keys.public))
    with pytest.raises(ConfigError, match="cannot be read"):
        signing.load_private_key(str(tmp_path / "missing.pem"))
