"""ed25519 key pairs in the files the chart mounts from Backup.Signing.SecretName."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class SigningKeys:
    private: Path  # private.pem
    public: Path  # public.pem

    def env(self) -> dict[str, str]:
        return {"ENCLAVE_BACKUP_SIGNING_KEY_FILE": str(self.private),
                "ENCLAVE_BACKUP_SIGNING_PUBLIC_KEY_FILE": str(self.public)}

    def private_key(self) -> Ed25519PrivateKey:
        return serialization.load_pem_private_key(self.private.read_bytes(), password=None)


def make_signing_keys(directory: Path) -> SigningKeys:
    key = Ed25519PrivateKey.generate()
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / "private.pem", directory / "public.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return SigningKeys(private, public)


def signed(manifest: dict, keys: SigningKeys) -> bytes:
    """A hand-made manifest as the backup Job with `keys` would store it: signed."""
    from enclave_backup.manifest import Manifest
    from enclave_backup.signing import sign

    made = Manifest(**{k: v for k, v in manifest.items() if k != "signature"})
    sign(made, keys.private_key())
    return made.to_json()
