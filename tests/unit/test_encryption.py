"""encryption.py without servers: recipients, identities, the streaming pump and its threads."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading

import pyrage
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pyrage import x25519

from enclave_backup import encryption
from enclave_backup.config import Config
from enclave_backup.encryption import (Refused, decrypted, encryptor, fingerprint, identities_for, load_identities,
                                       parse_recipients)
from enclave_backup.errors import BackupError, ConfigError, IntegrityError, StorageError
from enclave_backup.manifest import Manifest


def _age_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("age-")]


@pytest.fixture(autouse=True)
def no_leftover_threads():
    yield
    assert _age_threads() == []


@pytest.fixture
def age_id():
    return x25519.Identity.generate()


def _ssh_pair() -> tuple[bytes, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode() + " someone@example"


def _encrypt(recipients, pieces) -> bytes:
    out: list[bytes] = []
    with encryptor(recipients, out.append) as stage:
        for piece in pieces:
            stage.write(piece)
    return b"".join(out)


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


# --- recipients and fingerprints ---------------------------------------------------------

def test_age_and_ssh_recipients_parse_and_fingerprints_ignore_comments_and_case(age_id):
    _private, ssh_public = _ssh_pair()
    age_public = str(age_id.to_public())
    assert len(parse_recipients([age_public, ssh_public])) == 2
    assert fingerprint(ssh_public) == fingerprint(" ".join(ssh_public.split()[:2]) + " another comment")
    assert fingerprint(age_public) == fingerprint(age_public.upper())
    # What docs/security.md tells operators to run: printf %s 'age1...' | sha256sum | cut -c1-16
    assert fingerprint(age_public) == hashlib.sha256(age_public.encode()).hexdigest()[:16]
    assert encryption.manifest_field([age_public]) == {"scheme": "age", "recipients": [fingerprint(age_public)]}


@pytest.mark.parametrize("secret", ["AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ",
                                    "age-secret-key-1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq",
                                    "-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE"])
def test_a_private_key_as_recipient_is_refused_without_repeating_it(age_id, secret):
    with pytest.raises(ConfigError) as failed:
        parse_recipients([str(age_id.to_public()), secret])
    message = str(failed.value)
    assert "recipient 2 in ENCLAVE_BACKUP_ENCRYPTION_RECIPIENTS (Helm value Backup.Encryption.Recipients)" in message
    assert "is a private key" in message
    assert secret[15:] not in message and secret not in message


@pytest.mark.parametrize("line, says", [
    ("age1qqqqqqqqqqqqqqqqqqqq", "is not a valid age recipient"),
    ("ssh-ed25519 AAAAnotbase64", "is not a valid ssh-ed25519 recipient"),
    ("ssh-dss AAAAB3NzaC1kc3M", "neither an age X25519 recipient"),
    ("0xDEADBEEF", "neither an age X25519 recipient"),
])
def test_a_bad_recipient_names_the_setting(line, says):
    with pytest.raises(ConfigError) as failed:
        parse_recipients([line])
    assert says in str(failed.value) and "ENCLAVE_BACKUP_ENCRYPTION_RECIPIENTS" in str(failed.value)


# --- identities --------------------------------------------------------------------------

def test_identity_files_as_age_keygen_and_ssh_keygen_write_them(tmp_path, age_id):
    path = tmp_path / "identity.txt"
    path.write_text(f"# created: 2026-01-01T00:00:00Z\n# public key: {age_id.to_public()}\n\n{age_id}\n")
    assert len(load_identities(str(path))) == 1
    private, _public = _ssh_pair()
    path.write_bytes(private)
    assert len(load_identities(str(path))) == 1


@pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="ssh-keygen writes the passphrase-protected key")
def test_a_passphrase_protected_ssh_key_says_what_to_do(tmp_path):
    path = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "passphrase", "-f", str(path)], check=True)
    with pytest.raises(ConfigError, match="remove its passphrase"):
        load_identities(str(path))


def test_unusable_identity_files_say_why_without_their_content(tmp_path):
    path = tmp_path / "identity.txt"
    path.write_text("age1notanidentity-but-a-recipient\n")
    with pytest.raises(ConfigError) as failed:
        load_identities(str(path))
    assert "line 1 of ENCLAVE_BACKUP_ENCRYPTION_IDENTITY_FILE" in str(failed.value)
    assert "notanidentity" not in str(failed.value)
    path.write_text("AGE-SECRET-KEY-1BROKENBROKEN\n")
    with pytest.raises(ConfigError) as failed:
        load_identities(str(path))
    assert "BROKEN" not in str(failed.value)
    path.write_text("# nothing but comments\n")
    with pytest.raises(ConfigError, match="holds no identity"):
        load_identities(str(path))
    with pytest.raises(ConfigError, match="cannot be read"):
        load_identities(str(tmp_path / "absent"))


def _manifest(key: str, encryption_field: dict | None) -> Manifest:
    return Manifest(key=key, database="d", engine="postgresql", server_version="15", started_at="",
                    finished_at="", compression="gzip", stored_size=0, sha256="0" * 64, uncompressed_size=0,
                    encryption=encryption_field)


def test_identities_for_a_backup(tmp_path, age_id):
    plain, sealed = "p/d-20260101T000000Z.sql.gz", "p/d-20260101T000000Z.sql.gz.age"
    field = {"scheme": "age", "recipients": ["0123456789abcdef"]}
    assert identities_for(Config(bucket="bkt"), plain, _manifest(plain, None)) is None
    with pytest.raises(ConfigError) as failed:
        identities_for(Config(bucket="bkt"), sealed, _manifest(sealed, field))
    assert "0123456789abcdef" in str(failed.value) and "restore.identitySecretName" in str(failed.value)
    with pytest.raises(IntegrityError, match="disagree"):
        identities_for(Config(bucket="bkt"), plain, _manifest(plain, field))
    with pytest.raises(IntegrityError, match="disagree"):
        identities_for(Config(bucket="bkt"), sealed, _manifest(sealed, None))
    path = tmp_path / "identity.txt"
    path.write_text(f"{age_id}\n")
    assert len(identities_for(Config(bucket="bkt", encryption_identity_file=str(path)), sealed,
                              _manifest(sealed, field))) == 1


# --- the streams -------------------------------------------------------------------------

@pytest.mark.parametrize("sizes", [[], [1], [7, 65536, 65537, 3], [1 << 20] * 9, [5 << 20, 1]])
def test_round_trip_is_a_standard_age_file(age_id, sizes):
    pieces = [os.urandom(n) for n in sizes]
    plain = b"".join(pieces)
    sealed = _encrypt([age_id.to_public()], pieces)
    assert sealed.startswith(b"age-encryption.org/v1\n")
    assert pyrage.decrypt(sealed, [age_id]) == plain
    # One-byte reads cost a thread hand-off each: over small files only (the store reads 256 KiB).
    for size in (1, 4096, 1 << 20) if len(sealed) < 1 << 17 else (4096, 1 << 20):
        got = list(decrypted([age_id], _split(sealed, size)))
        assert b"".join(got) == plain
        assert all(len(piece) <= 2 * encryption.PIECE_BYTES for piece in got)


def test_ssh_recipients_read_with_their_private_key(tmp_path):
    private, public = _ssh_pair()
    path = tmp_path / "id_ed25519"
    path.write_bytes(private)
    sealed = _encrypt(parse_recipients([public]), [b"select 1;\n" * 1000])
    assert b"".join(decrypted(load_identities(str(path)), [sealed])) == b"select 1;\n" * 1000


def test_a_wrong_identity_is_refused_naming_the_recipients(age_id):
    sealed = _encrypt([age_id.to_public()], [b"x" * 1000])
    with pytest.raises(Refused) as failed:
        list(decrypted([x25519.Identity.generate()], [sealed], ["aaaa111122223333"]))
    assert "encrypted to recipients aaaa111122223333" in str(failed.value)
    assert "ENCLAVE_BACKUP_ENCRYPTION_IDENTITY_FILE" in str(failed.value)


def test_damage_is_an_integrity_error_and_a_prefix_read_just_ends(age_id):
    plain = os.urandom(300_000)
    sealed = _encrypt([age_id.to_public()], [plain])
    cut = sealed[:200_000]
    with pytest.raises(IntegrityError) as failed:
        got = b""
        for piece in decrypted([age_id], [cut]):
            got += piece
    assert not isinstance(failed.value, Refused)
    assert plain.startswith(got) and len(got) == 3 * 65536  # every whole chunk before the cut
    assert b"".join(decrypted([age_id], [cut], complete=False)) == plain[:3 * 65536]
    flipped = bytearray(sealed)
    flipped[-100] ^= 1
    with pytest.raises(IntegrityError):
        list(decrypted([age_id], [bytes(flipped)]))
    with pytest.raises(IntegrityError):  # age reads the last chunk as damaged
        list(decrypted([age_id], [sealed, b"trailing bytes"]))
    with pytest.raises(Refused, match="not a readable age file"):
        list(decrypted([age_id], [b"-- plain SQL, not age\n" * 10]))


# --- threads and errors ------------------------------------------------------------------

def test_closing_the_plaintext_early_stops_its_thread(age_id):
    sealed = _encrypt([age_id.to_public()], [os.urandom(1 << 20)] * 20)
    stream = decrypted([age_id], _split(sealed, 1 << 16))
    next(stream)
    assert _age_threads()
    stream.close()
    assert _age_threads() == []


def test_an_error_of_the_source_passes_through_and_stops_the_thread(age_id):
    sealed = _encrypt([age_id.to_public()], [os.urandom(1 << 20)] * 8)

    def source():
        yield sealed[:3 << 20]
        raise StorageError("the connection broke")

    with pytest.raises(StorageError, match="the connection broke"):
        list(decrypted([age_id], source()))


def test_an_error_of_the_sink_or_the_block_stops_the_thread(age_id):
    def sink(_data):
        raise StorageError("upload failed")

    with pytest.raises(StorageError, match="upload failed"):
        with encryptor([age_id.to_public()], sink) as stage:
            for _ in range(64):
                stage.write(os.urandom(1 << 20))
    with pytest.raises(KeyError):
        with encryptor([age_id.to_public()], lambda data: None) as stage:
            stage.write(b"x" * (9 << 20))  # the thread is blocked on a full output buffer here
            raise KeyError("the dump failed")


def test_an_error_in_the_thread_reaches_the_writer(age_id, monkeypatch):
    def failing(reader, writer, recipients):
        reader.read(8192)
        raise pyrage.EncryptError("simulated")

    monkeypatch.setattr(encryption.pyrage, "encrypt_io", failing)
    with pytest.raises(BackupError, match="age encryption failed: simulated"):
        with encryptor([age_id.to_public()], lambda data: None) as stage:
            for _ in range(64):
                stage.write(b"x" * (1 << 20))


def test_buffers_stay_bounded_with_a_slow_sink(age_id):
    """What the pump holds never exceeds its two buffers and one piece, however much is written."""
    held = []

    def sink(data):
        pump = stage._pump
        held.append(pump._input_bytes + pump._output_bytes)

    with encryptor([age_id.to_public()], sink) as stage:
        for _ in range(64):
            stage.write(b"y" * (1 << 20))
    assert max(held) <= 2 * encryption.BUFFER_BYTES + (1 << 20)


def test_the_header_read_covers_the_first_chunk_whatever_the_recipients(age_id):
    """read_header reads stored_bytes(HEADER_BYTES) of an encrypted object: enough for a whole
    first chunk behind a header of several recipients, ssh-rsa 4096 ones included."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from enclave_backup.source import HEADER_BYTES
    rsa_public = rsa.generate_private_key(public_exponent=65537, key_size=4096).public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    lines = [str(age_id.to_public()), rsa_public, rsa_public + " again", _ssh_pair()[1]]
    plain = os.urandom(3 * HEADER_BYTES)
    sealed = _encrypt(parse_recipients(lines), [plain])
    manifest = _manifest("k.sql.gz.age", encryption.manifest_field(lines))
    prefix = sealed[:encryption.stored_bytes(HEADER_BYTES, manifest)]
    assert b"".join(decrypted([age_id], [prefix], complete=False)) == plain[:HEADER_BYTES]
