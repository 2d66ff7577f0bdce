"""Server-side encryption: the extra S3 parameters each kind of call needs, built from the config.

No I/O except reading the SSE-C key file once. Every object this tool writes (backups,
manifests, verification records, markers) uses the same mode, so every read of them sends
the same SSE-C key. The key is handed to boto3 as raw bytes: boto3 base64-encodes it and
computes its MD5 itself.
"""

from __future__ import annotations

import base64
import binascii

from .config import Config
from .errors import ConfigError

KEY_BYTES = 32  # SSE-C is AES256: a 256-bit key
KEY_ENV = "ENCLAVE_BACKUP_SSE_CUSTOMER_KEY_FILE"
KEY_VALUE = "global.S3.SseCustomerKeySecretName"


def read_customer_key(path: str) -> bytes:
    """The 32-byte key from a file holding its base64 (as `openssl rand -base64 32` writes it)."""
    try:
        with open(path, "rb") as f:
            text = f.read(4096).strip()
    except OSError as exc:
        raise ConfigError(f"{KEY_ENV}={path[:200]!r} cannot be read ({exc.strerror}); "
                          f"check the Secret named by {KEY_VALUE}") from None
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:  # the message never quotes the file: it holds the key
        raise ConfigError(f"the SSE-C key in {KEY_ENV}={path[:200]!r} is not the base64 of {KEY_BYTES} bytes; "
                          f"make it with `openssl rand -base64 32` (the Secret named by {KEY_VALUE})")
    return key


class Sse:
    """The parameters of one SSE mode. Its repr never shows the key."""

    def __init__(self, mode: str = "", kms_key_id: str = "", customer_key: bytes = b""):
        self.mode = mode
        self.kms_key_id = kms_key_id
        self._customer_key = customer_key

    @classmethod
    def from_config(cls, config: Config) -> "Sse":
        key = read_customer_key(config.sse_customer_key_file) if config.sse == "SSE-C" else b""
        return cls(config.sse, config.sse_kms_key_id, key)

    @property
    def customer_key(self) -> bool:
        return self.mode == "SSE-C"

    def secrets(self) -> list[str]:
        """The key's forms that could reach text (for log.scrub): raw base64 as in the file and header."""
        if not self._customer_key:
            return []
        return [base64.b64encode(self._customer_key).decode()]

    def _customer(self) -> dict:
        return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": self._customer_key}

    def create(self) -> dict:
        """PutObject and CreateMultipartUpload: the call that makes an object decides its encryption."""
        if self.mode == "SSE-C":
            return self._customer()
        if self.mode == "aws:kms":
            extra = {"ServerSideEncryption": "aws:kms"}
            if self.kms_key_id:  # else the store's default KMS key (AWS); RGW needs an id
                extra["SSEKMSKeyId"] = self.kms_key_id
            return extra
        if self.mode == "AES256":
            return {"ServerSideEncryption": "AES256"}
        return {}

    def part(self) -> dict:
        """UploadPart and CompleteMultipartUpload: only SSE-C repeats the key (S3 rejects the others here)."""
        return self._customer() if self.customer_key else {}

    def read(self) -> dict:
        """HeadObject and GetObject (ranged too): only SSE-C is sent; S3 refuses SSE headers on reads."""
        return self._customer() if self.customer_key else {}

    def confirmed(self, response: dict) -> bool:
        """Whether the store's answer to a write says it applied this mode (a store may ignore the header)."""
        if not self.mode:
            return True
        if self.mode == "SSE-C":
            return response.get("SSECustomerAlgorithm") == "AES256"
        return response.get("ServerSideEncryption") == self.mode

    def __repr__(self) -> str:
        return f"Sse(mode={self.mode!r}, kms_key_id={self.kms_key_id!r}, customer_key={'<set>' if self._customer_key else '<none>'})"

    __str__ = __repr__


def read_refused_message(where: str, mode: str, code: str) -> str:
    """A read of `where` the store refused in the way it refuses SSE-C objects (400, or 403 with a key set)."""
    if mode == "SSE-C":
        # AWS answers a wrong key with 403, which is also what a key pair without read permission gets.
        also = (" (or AWS_ACCESS_KEY_ID may not read this object)" if code in ("AccessDenied", "403", "Forbidden")
                else "")
        return (f"reading {where}: the store refused the read ({code}): the object is SSE-C encrypted with another "
                f"key, or the key in {KEY_ENV} (the Secret named by {KEY_VALUE}) is wrong{also}")
    return (f"reading {where}: the store refused the read ({code}): the object is probably SSE-C encrypted and no "
            f"key was given; set ENCLAVE_BACKUP_SSE=SSE-C and {KEY_ENV} "
            f"(global.S3.ServerSideEncryption=SSE-C and {KEY_VALUE})")
