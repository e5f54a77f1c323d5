"""Shared fixtures: offline environment, a private Prefect home, storage roots (local and S3)."""

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from neuronatlas.adapters.models import resolve_model
from neuronatlas.runtime import configure_environment
from tests.support import S3_ENV, free_port


@pytest.fixture(scope="session", autouse=True)
def offline_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Offline defaults and a Prefect home of the test session's own (ephemeral server)."""
    os.environ.setdefault("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
    os.environ.pop("PREFECT_API_URL", None)
    configure_environment()
    yield
    # Prefect stops its temporary server at interpreter exit and logs it to a stream pytest has
    # closed by then: a logging traceback after the summary. Stop it while the stream is open,
    # once the logs still queued for it are sent.
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer

    APILogWorker.drain_all(timeout=10)
    for server in list(SubprocessASGIServer._instances.values()):
        server.stop()


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


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server process serving the shipped Qwen2.5-Coder-0.5B
    GGUF (model name "qwen-0.5b"); yields its base URL."""
    source = resolve_model("qwen2.5-coder-0.5b")  # assembled from its chunks, checksum-verified
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(source.folder / str(source.gguf_file)),
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--model_alias", "qwen-0.5b"]  # fmt: skip
    log = tmp_path_factory.mktemp("llama-server") / "server.log"  # a file: llama.cpp logs would fill a pipe
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("llama_cpp.server did not start within 120 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A dedicated Prefect server process; yields the environment that points at it."""
    with running_prefect_server(tmp_path) as env:
        yield env


@pytest.fixture(scope="module")
def module_prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One Prefect server for a module's command-line runs (each would start a temporary one)."""
    with running_prefect_server(tmp_path_factory.mktemp("prefect")) as env:
        yield env


@contextmanager
def running_prefect_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail(f"prefect server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)
