"""Fixtures of the container tier: the image built from image/Dockerfile, and its servers."""

from __future__ import annotations

import subprocess
import tempfile
import time

import pytest

from devkit.imagerunner import podman
from devkit.paths import REPO
from devkit.pgserver import start_server
from devkit.release import BUCKET

IMAGE_REPOSITORY = "localhost/enclave-backup"
BUILD_SECONDS: dict[str, float] = {}


def version() -> str:
    namespace: dict = {}
    exec((REPO / "image" / "src" / "enclave_backup" / "__init__.py").read_text(), namespace)
    return namespace["__version__"]


@pytest.fixture(scope="session")
def image() -> str:
    """The image as scripts/build-image.sh builds it (podman's layer cache makes a rebuild quick)."""
    ref = f"{IMAGE_REPOSITORY}:{version()}"
    t0 = time.monotonic()
    proc = subprocess.run([str(REPO / "scripts" / "build-image.sh"), ref], capture_output=True, text=True)
    BUILD_SECONDS["image build"] = round(time.monotonic() - t0, 1)
    assert proc.returncode == 0, f"scripts/build-image.sh failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"
    podman("image", "exists", ref)
    return ref


@pytest.fixture(scope="session")
def image_pg():
    # Its own server: restores rename and drop databases named malbork*.
    server = start_server(tempfile.mkdtemp(prefix="enclave-image-pg-"))
    yield server
    server.remove()


@pytest.fixture(scope="session")
def image_store(moto):
    moto.client().create_bucket(Bucket=BUCKET)
    return moto


def pytest_terminal_summary(terminalreporter):
    for what, seconds in BUILD_SECONDS.items():
        terminalreporter.write_line(f"container tier: {what} took {seconds} s")
