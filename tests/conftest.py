"""Shared fixtures: offline environment, a private Prefect home, storage roots (local and S3)."""

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from neuronatlas.runtime import configure_environment
from tests.support import S3_ENV, free_port


@pytest.fixture(scope="session", autouse=True)
def offline_environment(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Offline defaults and a Prefect home of the test session's own (ephemeral server)."""
    os.environ.setdefault("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
    os.environ.pop("PREFECT_API_URL", None)
    configure_environment()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible server process (moto) on 127.0.0.1, stopped after the session."""
    port = free_port()
    executable = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    server = subprocess.Popen(
        [executable, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        server.kill()
        pytest.fail("moto_server did not start within 30 s")
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Standard AWS variables pointing at the test server; returns the endpoint."""
    for name, value in {**S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(name, value)
    return s3_endpoint


@pytest.fixture
def s3_bucket(s3_env: str) -> str:
    """A fresh bucket on the test server."""
    import boto3

    name = f"atlas-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test against a local folder and against a real S3-compatible server."""
    if request.param == "local":
        return str(tmp_path / "atlas")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/atlas"
