"""moto's S3 server on loopback in auth mode: wrong keys get real signature errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

import boto3
from botocore.config import Config

from .net import free_port
from .s3store import S3Store

POLICY = json.dumps({"Version": "2012-10-17",
                     "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})


@dataclass
class MotoServer(S3Store):
    port: int = field(default_factory=free_port)
    access_key: str = ""
    secret_key: str = ""
    proc: subprocess.Popen | None = None

    # Unauthenticated calls moto allows before it checks signatures: one per IAM call in users().
    bootstrap_calls = 3

    def start(self) -> "MotoServer":
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(self.bootstrap_calls)}
        binary = os.path.join(os.path.dirname(sys.executable), "moto_server")
        self.proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(self.port)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                # /moto-api/ does not count toward the unauthenticated calls.
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.1)
        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        self.users(iam)
        return self

    def add_user(self, iam, name: str, policy: str) -> dict:
        iam.create_user(UserName=name)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=policy)
        return key

    def users(self, iam) -> None:
        key = self.add_user(iam, "backup", POLICY)
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self, endpoint: str | None = None):
        return boto3.client("s3", endpoint_url=endpoint or self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                            config=Config(retries={"mode": "standard", "max_attempts": 2}))
