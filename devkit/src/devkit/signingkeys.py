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


def signing_secret_data() -> dict[str, str]:
    """A new key pair as the Secret Backup.Signing.SecretName names holds it."""
    key = Ed25519PrivateKey.generate()
    return {"private.pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode(),
            "public.pem": key.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()}


def make_signing_keys(directory: Path) -> SigningKeys:
    pems = signing_secret_data()
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / "private.pem", directory / "public.pem"
    private.write_text(pems["private.pem"])
    private.chmod(0o600)
    public.write_text(pems["public.pem"])
    return SigningKeys(private, public)


def signed(manifest: dict, keys: SigningKeys) -> bytes:
    """A hand-made manifest as the backup Job with `keys` would store it: signed."""
    from enclave_backup.manifest import Manifest
    from enclave_backup.signing import sign

    made = Manifest(**{k: v for k, v in manifest.items() if k != "signature"})
    sign(made, keys.private_key())
    return made.to_json()
