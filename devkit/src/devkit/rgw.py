"""Ceph RGW on loopback through scripts/rgw.sh, with the same face as devkit.motoserver."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

import boto3
from botocore.config import Config

from .net import free_port
from .paths import SCRIPTS
from .s3store import S3Store

SCRIPT = SCRIPTS / "rgw.sh"


@dataclass
class RgwServer(S3Store):
    port: int = field(default_factory=free_port)
    mon_port: int = field(default_factory=free_port)
    access_key: str = field(default_factory=lambda: "RGW" + secrets.token_hex(8).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    # The "testing" KMS backend's one key, for SSE aws:kms (ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key_id).
    kms_key_id: str = "testkey-1"
    kms_key: str = field(default_factory=lambda: base64.b64encode(secrets.token_bytes(32)).decode())
    dir: str = ""

    def _script(self, action: str) -> None:
        env = {**os.environ, "DIR": self.dir, "RGW_PORT": str(self.port), "MON_PORT": str(self.mon_port),
               "ACCESS_KEY": self.access_key, "SECRET_KEY": self.secret_key,
               "KMS_KEYS": f"{self.kms_key_id}={self.kms_key}"}
        subprocess.run([str(SCRIPT), action], env=env, check=True, timeout=180)

    def start(self) -> "RgwServer":
        self.dir = tempfile.mkdtemp(prefix="enclave-rgw-")
        try:
            self._script("up")
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        return self

    def stop(self) -> None:
        if self.dir:
            self._script("down")
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""

    def client(self):
        # RGW rejects the CRC checksums boto3 sends by default on some calls.
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                            config=Config(request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))
