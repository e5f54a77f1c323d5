"""Bad input through the real `neuronatlas` command: exit code 2, one clear line, no traceback,
nothing written under the root."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from neuronatlas.config import AtlasConfig, atlas_from_flat
from neuronatlas.errors import InputError
from tests.support import S3_ENV, free_port

COMMAND = str(Path(sys.executable).parent / "neuronatlas")


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: int = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it; `timeout` guards against a hang (a local LLM stage on 2
    busy cores needs more than the default)."""
    return subprocess.run(
        [COMMAND, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def empty_root(folder: Path) -> str:
    """A root that exists and holds nothing yet."""
    (folder / "empty").mkdir(exist_ok=True)
    return str(folder / "empty")


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


def files(folder: Path) -> dict[str, bytes | None]:
    """Everything under `folder`: each file's bytes, None for a folder."""
    return {str(path.relative_to(folder)): path.read_bytes() if path.is_file() else None for path in folder.rglob("*")}


def existing_file(path: Path) -> str:
    path.write_bytes(b"kept")
    return str(path)


GREEDY = "greedy decoding gives one answer; use --samples 1 or a temperature above 0"
OTHER_CASES: dict[str, tuple[Callable[[Path, str], list[str]], str]] = {
    "usage: not an integer": (lambda p, r: ["ingest", "--root", r, "--window", "abc"], "Invalid value for '--window'"),
    "usage: unknown option": (lambda p, r: ["ingest", "--root", r, "--nope"], "No such option: --nope"),
    "usage: unknown command": (lambda p, r: ["nope", "--root", r], "No such command 'nope'"),
    "usage: option without its value": (
        lambda p, r: ["ingest", "--root", r, "--source"],
        "Option '--source' requires an argument",
    ),
    "usage: missing argument": (lambda p, r: ["export", "--root", r], "Missing argument 'out'"),
    "extract batch size 0": (
        lambda p, r: ["extract", "--root", r, "--batch-size", "0"],
        "--batch-size 0: must be at least 1",
    ),
    "extract top-k 0": (lambda p, r: ["extract", "--root", r, "--top-k", "0"], "--top-k 0: must be at least 1"),
    "extract random-k -1": (
        lambda p, r: ["extract", "--root", r, "--random-k", "-1"],
        "--random-k -1: must be at least 0",
    ),
    "extract layers per shard -1": (
        lambda p, r: ["extract", "--root", r, "--layers-per-shard", "-1"],
        "--layers-per-shard -1: must be at least 0",
    ),
    "extract seed -1": (lambda p, r: ["extract", "--root", r, "--seed", "-1"], "--seed -1: must be at least 0"),
    "explain max tokens 0": (
        lambda p, r: ["explain", "--root", r, "--max-tokens", "0"],
        "--max-tokens 0: must be at least 1",
    ),
    "explain temperature -1": (
        lambda p, r: ["explain", "--root", r, "--temperature", "-1"],
        "--temperature -1: must be at least 0",
    ),
    "explain greedy with samples": (
        lambda p, r: ["explain", "--root", r, "--temperature", "0"],
        f"--temperature 0 with --samples 3: {GREEDY}",
    ),
    "explain llm batch size 0": (
        lambda p, r: ["explain", "--root", r, "--llm-batch-size", "0"],
        "--llm-batch-size 0: must be at least 1",
    ),
    "explain concurrency 0": (
        lambda p, r: [
            "explain",
            "--root",
            r,
            "--explainer",
            "openai:m",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--concurrency",
            "0",
        ],
        "--concurrency 0: must be at least 1",
    ),
    "score seed -1": (lambda p, r: ["score", "--root", r, "--seed", "-1"], "--seed -1: must be at least 0"),
    "validity samples 0": (lambda p, r: ["validity", "--root", r, "--samples", "0"], "--samples 0: must be at least 1"),
    "run greedy with samples": (
        lambda p, r: ["run", "--root", r, "--temperature", "0", "--samples", "2"],
        f"--temperature 0 with --samples 2: {GREEDY}",
    ),
    "run batch size 0": (lambda p, r: ["run", "--root", r, "--batch-size", "0"], "--batch-size 0: must be at least 1"),
    "view port above 65535": (
        lambda p, r: ["view", "--root", r, "--out", str(p / "site"), "--serve", "--port", "99999"],
        "--port 99999: must be 1-65535",
    ),
    "view negative port": (
        lambda p, r: ["view", "--root", r, "--out", str(p / "site"), "--serve", "--port", "-1"],
        "--port -1: must be 1-65535",
    ),
    "empty root": (lambda p, r: ["corpora", "--root", ""], "--root '': empty"),
    "empty root of a pipeline command": (
        lambda p, r: ["ingest", "--root", "", "--source", "missing.jsonl"],
        "--root '': empty",
    ),
    "empty source": (lambda p, r: ["ingest", "--root", r, "--source", ""], "--source '': empty"),
    "corpora of a missing root": (lambda p, r: ["corpora", "--root", r], "atlas: no such root"),
    "runs of a missing root": (lambda p, r: ["runs", "--root", r], "atlas: no such root"),
    "publish of a missing root": (lambda p, r: ["publish", "--root", r], "atlas: no such root"),
    "publish of an unknown score run": (
        lambda p, r: ["publish", "--root", empty_root(p), "--scores", "s-nope"],
        "--scores s-nope: no run of that id",
    ),
    "score of an unknown explanation run": (
        lambda p, r: ["score", "--root", empty_root(p), "--explanations", "e-nope"],
        "--explanations e-nope: no run of that id",
    ),
    "explain with nothing extracted": (lambda p, r: ["explain", "--root", empty_root(p)], "--activations: name one"),
    "validity with nothing extracted": (lambda p, r: ["validity", "--root", empty_root(p)], "--activations: name one"),
    "extract with no corpus": (
        lambda p, r: ["extract", "--root", empty_root(p)],
        "--corpus: name one of the committed",
    ),
    "versions with nothing published": (lambda p, r: ["versions", "--root", empty_root(p)], "nothing published yet"),
    "lineage with nothing published": (lambda p, r: ["lineage", "--root", empty_root(p)], "nothing published yet"),
    "view with nothing published": (
        lambda p, r: ["view", "--root", r, "--out", str(p / "site")],
        "nothing published yet",
    ),
    "show a neuron that is not LAYER:NEURON": (
        lambda p, r: ["show", "abc", "--root", empty_root(p)],
        "abc: expected LAYER:NEURON",
    ),
    "show a negative excerpt count": (
        lambda p, r: ["show", "3:7", "--root", r, "--excerpts", "-1"],
        "--excerpts -1: expected 0 (all) or more",
    ),
    "export in an unknown format": (
        lambda p, r: ["export", str(p / "out.xlsx"), "--root", empty_root(p)],
        "--format .xlsx: expected one of parquet, jsonl, csv",
    ),
    "export into a missing folder": (
        lambda p, r: ["export", str(p / "nowhere" / "out.csv"), "--root", r],
        "nowhere does not exist",
    ),
    "run with an unknown profile": (
        lambda p, r: ["run", "--root", r, "--config", "nope"],
        "--config nope: no such file (nor a profile: large-atlas)",
    ),
    "deploy with a missing config file": (
        lambda p, r: ["deploy", "--config", str(p / "missing.toml")],
        "missing.toml: no such file",
    ),
    "export over an existing file": (
        lambda p, r: ["export", existing_file(p / "out.csv"), "--root", r],
        "out.csv: already exists; pass --overwrite to replace it",
    ),
}


@pytest.mark.parametrize("case", sorted(OTHER_CASES))
def test_bad_options_fail_cleanly_before_anything_runs(case: str, tmp_path: Path) -> None:
    """Refused before any model loads: nothing written under the root, the folder the command
    runs in, or the files it was given."""
    make_args, message = OTHER_CASES[case]
    root = tmp_path / "atlas"
    args = make_args(tmp_path, str(root))
    before = files(tmp_path)
    assert_clean_failure(run_cli(*args, cwd=tmp_path), message)
    assert files(tmp_path) == before


SENTINEL = "s3ntinel-pa55word"
LEAKY_URLS = {
    "password": f"http://user:{SENTINEL}@127.0.0.1:9/v1",
    "api key in the query": f"http://127.0.0.1:9/v1?api_key={SENTINEL}",
}


def leaky_config(path: Path, url: str) -> str:
    path.write_text(f'[llm]\nbase_url = "{url}"\n')
    return str(path)


CREDENTIAL_COMMANDS: dict[str, Callable[[Path, str], list[str]]] = {
    "explain": lambda p, url: ["explain", "--explainer", "openai:m", "--base-url", url],
    "score": lambda p, url: ["score", "--simulator", "openai:m", "--base-url", url],
    "validity": lambda p, url: ["validity", "--explainer", "openai:m", "--simulator", "openai:m", "--base-url", url],
    "run": lambda p, url: ["run", "--base-url", url],
    "run --config": lambda p, url: ["run", "--config", leaky_config(p / "run.toml", url)],
    "deploy": lambda p, url: ["deploy", "--base-url", url],
    "deploy --config": lambda p, url: ["deploy", "--config", leaky_config(p / "run.toml", url)],
}


@pytest.mark.parametrize("url", sorted(LEAKY_URLS))
@pytest.mark.parametrize("command", sorted(CREDENTIAL_COMMANDS))
def test_credentials_in_the_base_url_are_refused_unechoed(command: str, url: str, tmp_path: Path) -> None:
    root = tmp_path / "atlas"
    args = CREDENTIAL_COMMANDS[command](tmp_path, LEAKY_URLS[url])
    result = run_cli(*args, "--root", str(root), cwd=tmp_path)
    assert_clean_failure(
        result,
        "--base-url: credentials in the URL are not accepted (they would be recorded); put the key in OPENAI_API_KEY",
    )
    assert SENTINEL not in result.stdout + result.stderr
    assert not root.exists()


@pytest.mark.parametrize("url", sorted(LEAKY_URLS))
def test_credentials_in_the_atlas_flow_parameters_are_refused(url: str) -> None:
    """The atlas flow builds its config from these (`_resolve`) before it writes its run report."""
    for build in (
        lambda: atlas_from_flat({"options": {"base_url": LEAKY_URLS[url]}}),
        lambda: AtlasConfig.of({"llm": {"base_url": LEAKY_URLS[url]}}),
    ):
        with pytest.raises(InputError, match="credentials in the URL are not accepted") as refused:
            build()
        assert SENTINEL not in str(refused.value)


@pytest.mark.parametrize("command", ["ingest", "explain", "publish", "versions", "run"])
def test_an_s3_root_whose_endpoint_is_down_fails_fast_in_one_line(command: str, tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}
    result = run_cli(command, "--root", "s3://bucket/atlas", env=env, cwd=tmp_path, timeout=60)
    assert_clean_failure(result, f"--root s3://bucket/atlas: cannot reach S3 endpoint {endpoint}")
    assert list(tmp_path.iterdir()) == []
