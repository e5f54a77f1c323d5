"""Bad input through the real `neuronatlas` command: exit code 2, one clear line, no traceback,
nothing written under the root."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import S3_ENV, free_port

COMMAND = str(Path(sys.executable).parent / "neuronatlas")


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it; `timeout` guards against a hang (a local LLM stage on 2
    busy cores needs more than the default)."""
    return subprocess.run(
        [COMMAND, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "missing path": (lambda p: ["--source", str(p / "missing.jsonl")], "missing.jsonl: no such file or folder"),
    "empty file": (lambda p: ["--source", write(p / "e.jsonl", b"")], "e.jsonl: file is empty"),
    "no usable text": (lambda p: ["--source", write(p / "w.txt", b" \n ")], "no usable text"),
    "undecodable bytes": (lambda p: ["--source", write(p / "u.txt", b"a\xffb")], "u.txt: not valid UTF-8 at byte 1"),
    "unknown format": (lambda p: ["--source", write(p / "d.xml", b"<a/>")], "d.xml: unknown format '.xml'"),
    "jsonl line not json": (
        lambda p: ["--source", write(p / "j.jsonl", b'{"text": "fine"}\nnope\n')],
        "j.jsonl line 2: not valid JSON",
    ),
    "missing text field": (
        lambda p: ["--source", write(p / "j.jsonl", b'{"body": "x"}\n'), "--text-field", "content"],
        "j.jsonl line 1: no 'content' field (fields: body)",
    ),
    "unknown source": (lambda p: ["--source", "wikipedia-everything"], "--source wikipedia-everything: unknown source"),
    "window below two": (lambda p: ["--window", "1"], "--window 1: must be at least 2 tokens"),
    "unknown tokenizer model": (lambda p: ["--tokenizer-of", "gpt-7"], "model 'gpt-7': not a shipped model"),
    "bad encoding option": (lambda p: ["--encoding-errors", "ignore"], "--encoding-errors ignore: expected strict"),
}


def assert_clean_failure(result: subprocess.CompletedProcess[str], message: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, output
    assert message in error_lines[0], output
    assert "ERROR" not in output, output  # Prefect's own failure lines are not repeated


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_cleanly_and_writes_nothing(case: str, tmp_path: Path) -> None:
    make_args, message = CASES[case]
    root = tmp_path / "atlas"
    result = run_cli("ingest", "--root", str(root), *make_args(tmp_path))
    assert_clean_failure(result, message)
    assert not root.exists()


def test_unreachable_s3_endpoint(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}
    result = run_cli("ingest", "--root", "s3://atlas-bucket/run", env=env)
    assert_clean_failure(result, f"--root s3://atlas-bucket/run: cannot reach S3 endpoint {endpoint}")
    assert S3_ENV["AWS_SECRET_ACCESS_KEY"] not in result.stdout + result.stderr


def test_missing_bucket(s3_env: str) -> None:
    result = run_cli("ingest", "--root", "s3://no-such-bucket-here/run")
    assert_clean_failure(result, "bucket 'no-such-bucket-here' does not exist at " + s3_env)


def test_root_that_is_a_file(tmp_path: Path) -> None:
    root = tmp_path / "file"
    root.write_text("x")
    assert_clean_failure(run_cli("corpora", "--root", str(root)), "exists and is not a folder")
