"""Secrets never leave the environment: with the AWS keys and the OpenAI key set to sentinel values,
every command a user runs on an S3 root (a whole `run` over an OpenAI-compatible server, then the
commands that read, export and view what it published, and an `explain` against a server that is
down) writes them nowhere: not under the root, not in the site, the export, Data Docs, Prefect's
database and logs, nor in anything the commands print. The site holds no local path of the machine
that built it."""

import os
from pathlib import Path

import boto3

from tests.fake_openai import FaultyServer, serve
from tests.flows.test_atlas_flow import CONFIG
from tests.flows.test_deployments import answer
from tests.integration.test_cli_bad_input import run_cli
from tests.support import free_port, small_jsonl_corpus

AWS_KEY = "AKIASENTINEL7Q2Z9XW4"
AWS_SECRET = "sentinel-aws-secret-9f3e1c"
OPENAI_KEY = "sk-sentinel-openai-4b7d2a"
SENTINELS = (AWS_KEY, AWS_SECRET, OPENAI_KEY)


def found_in(data: bytes) -> list[str]:
    return [sentinel for sentinel in SENTINELS if sentinel.encode() in data]


def test_no_command_writes_or_prints_a_secret(s3_bucket: str, prefect_server: dict[str, str], tmp_path: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])  # moto accepts any key
    env = {
        **prefect_server,
        "AWS_ACCESS_KEY_ID": AWS_KEY,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "OPENAI_API_KEY": OPENAI_KEY,
    }
    root = f"s3://{s3_bucket}/atlas"
    work = tmp_path / "work"
    work.mkdir()
    source = small_jsonl_corpus(tmp_path / "wiki.jsonl")
    down = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    outputs: dict[str, str] = {}
    with serve(FaultyServer(answer)) as url:
        config = tmp_path / "atlas.toml"
        config.write_text(CONFIG.format(source=source, url=url))
        commands = {
            "run": ["run", "--root", root, "--config", str(config)],
            "runs": ["runs", "--root", root],
            "corpora": ["corpora", "--root", root],
            "versions": ["versions", "--root", root],
            "lineage": ["lineage", "--root", root],
            "export": ["export", str(work / "atlas.parquet"), "--root", root],
            "view": ["view", "--root", root, "--out", str(work / "site"), "--no-embed"],
            "explain, server down": [
                "explain",
                "--root",
                root,
                "--layers",
                "0",
                "--neurons",
                "3",
                "--samples",
                "1",
                "--explainer",
                "openai:m",
                "--base-url",
                down,
                "--max-retries",
                "0",
            ],
        }
        for name, args in commands.items():
            result = run_cli(*args, env=env, cwd=work, timeout=900)
            outputs[name] = result.stdout + result.stderr
            assert result.returncode == 0, (name, outputs[name][-2000:])
    assert (work / "atlas.parquet").is_file() and (work / "site" / "index.html").is_file()
    assert "explained" in outputs["explain, server down"]  # it ran: every neuron a failure with its reason

    leaks = {name: found_in(text.encode()) for name, text in outputs.items()}
    objects = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=s3_bucket, Key=item["Key"])["Body"].read()
            leaks[f"s3://{s3_bucket}/{item['Key']}"] = found_in(body)
            objects += 1
    # the site, the export, Prefect's home (its database, result storage, logs) and its server log
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    for path in files:
        leaks[str(path)] = found_in(path.read_bytes())
    assert objects > 20  # every dataset, manifest, the table and its log, the run record, Data Docs
    assert any(path.name.endswith(".db") for path in files) and any("site" in path.parts for path in files)
    assert {where: found for where, found in leaks.items() if found} == {}
    builder = str(tmp_path).encode()
    assert [p for p in (work / "site").rglob("*") if p.is_file() and builder in p.read_bytes()] == []
