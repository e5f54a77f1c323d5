"""The `ingest_corpus` flow end to end: real Prefect (ephemeral), real tokenizer, real GE,
local folder and real S3-compatible server."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.compute as pc
import pytest

from neuronatlas.adapters.storage import Storage
from neuronatlas.datasets import corpus as contract
from neuronatlas.errors import ValidationFailedError
from neuronatlas.flows.ingest import ingest_corpus
from tests.support import small_jsonl_corpus

NETGUARD = Path(__file__).parent / "netguard"


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_jsonl_corpus(tmp_path_factory.mktemp("source") / "wiki300.jsonl")


def snapshot(storage: Storage) -> dict[str, tuple[int, int]]:
    """Every file under the root with its size and modification time."""
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(storage.base, recursive=True, allow_not_found=True)
    return {
        info.path: (info.size, info.mtime_ns or 0)
        for info in storage.fs.get_file_info(selector)
        if info.type == pafs.FileType.File
    }


def test_default_corpus_is_ingested_validated_and_committed(tmp_path: Path) -> None:
    root = str(tmp_path / "atlas")
    result = ingest_corpus(root=root)
    assert result.created
    storage = Storage.open(root)
    dataset = contract.corpus_path(result.corpus_id)
    manifest = storage.manifest(dataset)
    table = storage.read_parquet(dataset, schema=contract.SCHEMA)

    assert result.corpus_id.startswith("wiki-vital-en-smollm2-135m-w64-")
    assert table.num_rows == result.rows == manifest["rows"] > 10_000
    assert manifest["tokens"] == table.num_rows * 64
    assert set(pc.list_value_length(table["token_ids"]).to_pylist()) == {64}
    assert len(set(table["sequence_id"].to_pylist())) == table.num_rows
    assert manifest["validation"]["success"] is True
    assert manifest["source"]["licence"]["text"].startswith("CC BY-SA")
    assert manifest["tokenizer"]["identity"].startswith("smollm2-135m@sha256:b179c952")
    assert manifest["window"] == 64
    assert manifest["prefect_flow_run_id"]
    assert manifest["code_version"]
    assert {"tokenize", "validate", "write_staging"} <= set(manifest["timings_s"])
    counts = manifest["counts"]
    assert counts["windows"] == table.num_rows
    assert counts["tokens_read"] == table.num_rows * 64 + counts["tokens_dropped"]
    assert storage.list("") == ["corpus"]  # staging removed after the commit

    from neuronatlas.adapters.models import open_tokenizer

    tokenizer = open_tokenizer("smollm2-135m")
    first = table.slice(0, 1).to_pylist()[0]
    assert "".join(first["tokens"]) == tokenizer.backend.decode(first["token_ids"])

    before = snapshot(storage)
    again = ingest_corpus(root=root)
    assert not again.created
    assert again.corpus_id == result.corpus_id
    assert snapshot(storage) == before


def test_s3_root_gives_the_same_corpus_as_a_local_folder(small_corpus: Path, tmp_path: Path, s3_bucket: str) -> None:
    local = ingest_corpus(source=str(small_corpus), root=str(tmp_path / "atlas"))
    remote = ingest_corpus(source=str(small_corpus), root=f"s3://{s3_bucket}/atlas")
    assert remote.corpus_id == local.corpus_id
    assert remote.uri == f"s3://{s3_bucket}/atlas/corpus/{local.corpus_id}"
    dataset = contract.corpus_path(local.corpus_id)
    local_table = Storage.open(str(tmp_path / "atlas")).read_parquet(dataset, schema=contract.SCHEMA)
    s3_storage = Storage.open(f"s3://{s3_bucket}/atlas")
    assert s3_storage.read_parquet(dataset, schema=contract.SCHEMA).equals(local_table)
    assert s3_storage.list("") == ["corpus"]

    before = snapshot(s3_storage)
    assert not ingest_corpus(source=str(small_corpus), root=f"s3://{s3_bucket}/atlas").created
    assert snapshot(s3_storage) == before


def test_failing_suite_commits_nothing_and_rolls_staging_back(
    small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neuronatlas.expectations import corpus as corpus_suite

    real_suite = corpus_suite.suite
    monkeypatch.setattr(corpus_suite, "suite", lambda window, vocab: real_suite(window, 100))
    root = tmp_path / "atlas"
    with pytest.raises(ValidationFailedError, match=r"max_token_id, max_value=99") as raised:
        ingest_corpus(source=str(small_corpus), root=str(root))
    assert "nothing committed" in str(raised.value)
    storage = Storage.open(str(root))
    assert not any(storage.is_committed(f"corpus/{name}") for name in storage.list("corpus"))
    assert storage.list("_staging") == []


CRASHING_INGEST = """
import os, sys
from neuronatlas.runtime import configure_environment
configure_environment()
from neuronatlas.adapters.storage import Storage
from neuronatlas.datasets import corpus as contract
from neuronatlas.flows.ingest import ingest_corpus

contract.ROWS_PER_PART = 100  # several parts, so a crash can fall between two of them
where = sys.argv[3]
if where == "staging":
    real_write_parquet = Storage.write_parquet
    written = []
    def write_parquet(self, rel, table):
        if written:
            os._exit(3)  # the process dies after the first part: no cleanup runs
        written.append(rel)
        real_write_parquet(self, rel, table)
    Storage.write_parquet = write_parquet
else:
    real_write_json = Storage.write_json
    def write_json(self, rel, value):
        if rel.endswith("_manifest.json"):
            os._exit(3)  # the parts are in place; the commit point is never reached
        real_write_json(self, rel, value)
    Storage.write_json = write_json
ingest_corpus(source=sys.argv[1], root=sys.argv[2])
"""


@pytest.mark.parametrize("where", ["staging", "commit"])
def test_crash_mid_ingest_leaves_nothing_committed_and_a_rerun_completes(
    where: str, small_corpus: Path, tmp_path: Path
) -> None:
    root = tmp_path / "atlas"
    log = tmp_path / "crashed.log"
    with log.open("w") as output:
        crashed = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CRASHING_INGEST), str(small_corpus), str(root), where],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        returncode = crashed.wait(timeout=300)
    os.killpg(crashed.pid, signal.SIGKILL)  # the dead process's orphaned Prefect server
    assert returncode == 3, log.read_text()
    storage = Storage.open(str(root))
    corpus_names = storage.list("corpus")
    if where == "commit":
        assert len(corpus_names) == 1 and storage.list(f"corpus/{corpus_names[0]}")  # files, no manifest
    assert not any(storage.is_committed(f"corpus/{name}") for name in corpus_names)

    rerun = ingest_corpus(source=str(small_corpus), root=str(root))
    assert rerun.created
    reference = ingest_corpus(source=str(small_corpus), root=str(tmp_path / "uninterrupted"))
    assert reference.corpus_id == rerun.corpus_id
    dataset = contract.corpus_path(rerun.corpus_id)
    table = storage.read_parquet(dataset, schema=contract.SCHEMA)
    assert table.equals(Storage.open(str(tmp_path / "uninterrupted")).read_parquet(dataset, schema=contract.SCHEMA))
    assert storage.list("") == ["corpus"]  # the crashed attempt's staging is gone


def test_a_flow_run_opens_no_non_loopback_connection(small_corpus: Path, tmp_path: Path) -> None:
    log = tmp_path / "network.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(NETGUARD), os.environ.get("PYTHONPATH", "")]),
        "NETGUARD_LOG": str(log),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),  # a fresh home: first-run paths included
    }
    command = [
        str(Path(sys.executable).parent / "neuronatlas"),
        "ingest",
        "--source",
        str(small_corpus),
        "--root",
        str(tmp_path / "atlas"),
    ]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    lines = log.read_text().splitlines()
    processes = {line.split()[0] for line in lines if line.endswith("guard active")}
    assert len(processes) >= 2, lines  # the command and Prefect's ephemeral server were both guarded
    assert [line for line in lines if not line.endswith("guard active")] == []


def test_the_network_guard_itself_catches_a_lookup(tmp_path: Path) -> None:
    log = tmp_path / "network.log"
    env = {**os.environ, "PYTHONPATH": str(NETGUARD), "NETGUARD_LOG": str(log)}
    code = "import socket\ntry:\n    socket.getaddrinfo('example.invalid', 80)\nexcept OSError:\n    pass"
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
    assert "getaddrinfo 'example.invalid'" in log.read_text()
