"""Manifests signed with an ed25519 key the bucket never holds, and checked before any replay.

The manifest holds the object's size and sha256, so a valid signature over the manifest
vouches for the object too (source.py proves the object against it before a statement runs).
Anyone with the bucket's keys can rewrite both; only the holder of the private key can sign.
"""

from __future__ import annotations

import base64
import hashlib
import re

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import log
from .config import Config
from .errors import ConfigError, IntegrityError
from .manifest import Manifest

ALGORITHM = "ed25519"
KEY_ENV = "ENCLAVE_BACKUP_SIGNING_KEY_FILE"
PUBLIC_KEY_ENV = "ENCLAVE_BACKUP_SIGNING_PUBLIC_KEY_FILE"
MAKE_KEYS = ("make a key pair with `openssl genpkey -algorithm ed25519 -out private.pem && "
             "openssl pkey -in private.pem -pubout -out public.pem` (docs/security.md)")
OVERRIDE = ("to accept it anyway (a backup made before signing was turned on), set "
            "ENCLAVE_BACKUP_ALLOW_UNVERIFIED=true (Backup.Signing.AllowUnverified)")
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.*?-----END \1-----", re.S)


def key_id(public_key: Ed25519PublicKey) -> str:
    """16 hex digits of the sha256 of the raw public key: names the key in the manifest and in errors."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _read(path: str, env: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(64 * 1024)
    except OSError as exc:
        raise ConfigError(f"{env}={path!r} cannot be read: {exc.strerror}") from None


def load_private_key(path: str) -> Ed25519PrivateKey:
    """The backup's signing key; errors name the file, never its content."""
    try:
        key = serialization.load_pem_private_key(_read(path, KEY_ENV), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{KEY_ENV}={path!r} holds no unencrypted ed25519 private key in PEM form; {MAKE_KEYS}")
    return key


def load_public_keys(path: str) -> dict[str, Ed25519PublicKey]:
    """The keys restore and verify trust, by key id. The file may hold several (a key being rotated out)."""
    keys: dict[str, Ed25519PublicKey] = {}
    for block in _PEM_BLOCK.finditer(_read(path, PUBLIC_KEY_ENV)):
        if b"PRIVATE" in block.group(1):
            raise ConfigError(f"{PUBLIC_KEY_ENV}={path!r} holds a private key: give restore and verify only "
                              "public.pem, so that no pod but the backup's can sign")
        try:
            key = serialization.load_pem_public_key(block.group(0))
        except (ValueError, UnsupportedAlgorithm):
            key = None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{PUBLIC_KEY_ENV}={path!r} holds a PEM block that is no ed25519 public key; {MAKE_KEYS}")
        keys[key_id(key)] = key
    if not keys:
        raise ConfigError(f"{PUBLIC_KEY_ENV}={path!r} holds no PEM public key; {MAKE_KEYS}")
    return keys


def sign(manifest: Manifest, key: Ed25519PrivateKey) -> None:
    """Set the manifest's signature over everything else it holds."""
    manifest.signature = None
    value = key.sign(manifest.signed_bytes())
    manifest.signature = {"algorithm": ALGORITHM, "key_id": key_id(key.public_key()),
                          "value": base64.b64encode(value).decode()}


def problem(manifest: Manifest, keys: dict[str, Ed25519PublicKey]) -> str | None:
    """Why the manifest's signature does not prove it, or None if it does."""
    signature = manifest.signature
    if not signature:
        return "it is not signed"
    if signature.get("algorithm") != ALGORITHM:
        return f"its signature's algorithm {str(signature.get('algorithm'))[:40]!r} is not {ALGORITHM}"
    key = keys.get(signature.get("key_id", ""))
    if key is None:
        return (f"it is signed by key {str(signature.get('key_id'))[:40]!r}, which is not among the trusted keys "
                f"({', '.join(sorted(keys))}) in {PUBLIC_KEY_ENV}")
    try:
        key.verify(base64.b64decode(signature.get("value", ""), validate=True), manifest.signed_bytes())
    except (InvalidSignature, ValueError):
        return "its signature does not match its content: the manifest (or the object it vouches for) was altered"
    return None


def trusted_keys(config: Config) -> dict[str, Ed25519PublicKey]:
    """The keys restore and verify trust (none configured: {}); a bad file fails here, before any work."""
    return load_public_keys(config.signing_public_key_file) if config.signing_public_key_file else {}


def check(config: Config, keys: dict[str, Ed25519PublicKey], manifest: Manifest, where: str) -> bool:
    """Whether the manifest is proved; refuses (exit 5) an unproved one unless the override is set."""
    if keys:
        why = problem(manifest, keys)
    else:
        why = (f"no public key is given to check its signature ({PUBLIC_KEY_ENV}, Helm value "
               "Backup.Signing.SecretName)")
    if why is None:
        return True
    if not config.allow_unverified:
        raise IntegrityError(f"{where} cannot be trusted: {why}; nothing was run or changed. "
                             "Restore and verify replay only backups signed by the backup Job's key; " + OVERRIDE)
    log.get().warning("replaying a backup whose signature is not proved, because ENCLAVE_BACKUP_ALLOW_UNVERIFIED "
                      "is set", object=where, reason=why)
    return False
