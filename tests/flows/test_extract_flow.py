"""The `extract_activations` flow end to end: real Prefect, the shipped model, real GE, per-layer
commits, resume after a crash, a local folder and a real S3-compatible server."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from neuronatlas.adapters.storage import Storage
from neuronatlas.datasets import activations as contract
from neuronatlas.errors import ValidationFailedError
from neuronatlas.flows.extract import extract_activations
from neuronatlas.flows.ingest import ingest_corpus
from tests.flows.test_ingest_flow import snapshot
from tests.support import small_jsonl_corpus

SMALL = {"top_k": 5, "random_k": 4, "limit": 48, "batch_size": 16}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_jsonl_corpus(tmp_path_factory.mktemp("source") / "wiki300.jsonl")


def ingested(root: str, source: Path) -> str:
    return ingest_corpus(source=str(source), root=root).corpus_id


def read_run(storage: Storage, run: str) -> tuple:
    records = storage.read_parquet(contract.records_path("smollm2-135m", run))
    stats = storage.read_parquet(contract.stats_path("smollm2-135m", run))
    return (
        records.sort_by(
            [("layer", "ascending"), ("neuron", "ascending"), ("kind", "ascending"), ("rank", "ascending")]
        ),
        stats.sort_by([("layer", "ascending"), ("neuron", "ascending")]),
    )


def test_extraction_commits_validated_layers_and_a_picture(source: Path, tmp_path: Path) -> None:
    root = str(tmp_path / "atlas")
    corpus_id = ingested(root, source)
    result = extract_activations(root=root, layers="0,2", **SMALL)
    assert result.layers == result.layers_extracted == [0, 2]
    storage = Storage.open(root)
    records, stats = read_run(storage, result.run_id)

    assert stats.num_rows == 2 * 1536
    assert records.num_rows == 2 * 1536 * (5 + 5 + 4)  # 48 excerpts: no neuron runs short
    assert set(records["kind"].to_pylist()) == {"top", "bottom", "random"}
    assert not any(stats["short_records"].to_pylist())
    assert set(stats["n_tokens"].to_pylist()) == {48 * 64}

    manifest = storage.manifest(contract.records_path("smollm2-135m", result.run_id))
    assert manifest["layers"] == [0, 2]
    assert manifest["corpus_id"] == corpus_id
    assert manifest["model_checksum"].startswith("b179c952")
    assert manifest["parameters"] == {"top_k": 5, "random_k": 4, "seed": 0, "dtype": "float32", "limit": 48}
    assert manifest["neuron"].startswith("input of mlp.down_proj")
    layer_manifest = storage.manifest(contract.layer_partition(contract.records_path("smollm2-135m", result.run_id), 2))
    assert layer_manifest["validation"]["records"]["success"] and layer_manifest["validation"]["stats"]["success"]
    assert layer_manifest["device"] == "cpu" and layer_manifest["prefect_flow_run_id"]
    picture = storage.read_bytes(f"{contract.records_path('smollm2-135m', result.run_id)}/summary.png")
    assert picture.startswith(b"\x89PNG") and len(picture) > 10_000
    assert "_staging" not in storage.list("")

    before = snapshot(storage)
    again = extract_activations(root=root, layers="0,2", **SMALL)
    assert again.layers_extracted == [] and again.run_id == result.run_id
    assert again.plot_uri == result.plot_uri
    assert snapshot(storage) == before  # nothing rewritten, manifests and picture included

    more = extract_activations(root=root, layers="1-2", **SMALL)  # a new layer joins the same run
    assert more.run_id == result.run_id and more.layers_extracted == [1]
    assert storage.manifest(contract.records_path("smollm2-135m", result.run_id))["layers"] == [0, 1, 2]


CRASHING_EXTRACT = """
import os, sys
from neuronatlas.runtime import configure_environment
configure_environment()
from neuronatlas.adapters.storage import Storage
from neuronatlas.flows.extract import extract_activations

real_commit = Storage.commit
def commit(self, staging, dataset, manifest):
    if dataset.startswith("activations/") and dataset.endswith("layer=1"):
        os._exit(3)  # layer 0 is committed, layer 1's stats too, its records never
    real_commit(self, staging, dataset, manifest)
Storage.commit = commit
extract_activations(root=sys.argv[1], layers="0-2", layers_per_shard=1, top_k=5, random_k=4, limit=48, batch_size=16)
"""


def test_a_crashed_extraction_resumes_and_equals_an_uninterrupted_one(source: Path, tmp_path: Path) -> None:
    root, reference_root = str(tmp_path / "atlas"), str(tmp_path / "reference")
    ingested(root, source)
    log = tmp_path / "crash.log"
    with log.open("w") as output:
        crashed = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CRASHING_EXTRACT), root],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        returncode = crashed.wait(timeout=600)
    os.killpg(crashed.pid, signal.SIGKILL)  # its orphaned Prefect server
    assert returncode == 3, log.read_text()

    resumed = extract_activations(root=root, layers="0-2", layers_per_shard=1, **SMALL)
    assert resumed.layers_extracted == [1, 2]  # layer 0 was kept from the crashed run
    ingested(reference_root, source)
    reference = extract_activations(root=reference_root, layers="0-2", **SMALL)  # one pass, no crash
    assert reference.run_id == resumed.run_id
    for resumed_table, reference_table in zip(
        read_run(Storage.open(root), resumed.run_id),
        read_run(Storage.open(reference_root), reference.run_id),
        strict=True,
    ):
        assert resumed_table.equals(reference_table)


def test_extraction_on_s3_equals_local(source: Path, tmp_path: Path, s3_bucket: str) -> None:
    local_root, s3_root = str(tmp_path / "atlas"), f"s3://{s3_bucket}/atlas"
    ingested(local_root, source)
    ingested(s3_root, source)
    local = extract_activations(root=local_root, layers="3", **SMALL)
    remote = extract_activations(root=s3_root, layers="3", **SMALL)
    assert remote.records_uri == f"{s3_root}/activations/smollm2-135m/{local.run_id}"
    s3 = Storage.open(s3_root)
    for remote_table, local_table in zip(
        read_run(s3, remote.run_id), read_run(Storage.open(local_root), local.run_id), strict=True
    ):
        assert remote_table.equals(local_table)
    assert s3.list("") == ["activations", "corpus", "neuron_stats"]


def test_a_failing_suite_commits_no_layer(source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from neuronatlas.expectations import activations as suites

    real_suite = suites.records_suite
    monkeypatch.setattr(suites, "records_suite", lambda window, d_mlp: real_suite(window, 1000))
    root = str(tmp_path / "atlas")
    ingested(root, source)
    with pytest.raises(ValidationFailedError, match=r"layer 4 activations.*column=neuron, max_value=999"):
        extract_activations(root=root, layers="4", **SMALL)
    storage = Storage.open(root)
    assert storage.list("_staging") == []
    for dataset in ("activations", "neuron_stats"):
        assert not any(path.endswith("_manifest.json") for path in snapshot(storage) if f"/{dataset}/" in path)


def test_a_local_gpt2_folder_is_extracted_end_to_end(source: Path, tmp_path: Path) -> None:
    """GPT-2 (the paper's subject) from a local folder: random weights, SmolLM2's tokenizer."""
    import shutil

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from neuronatlas.adapters.models import cached_folder, open_tokenizer

    torch.manual_seed(0)
    folder = tmp_path / "tiny-gpt2"
    config = GPT2Config(vocab_size=49152, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(folder)
    shutil.copytree(cached_folder(open_tokenizer("smollm2-135m").source) / "tokenizer", folder, dirs_exist_ok=True)
    root = str(tmp_path / "atlas")
    ingested(root, source)
    result = extract_activations(root=root, model=str(folder), **SMALL)
    assert result.layers == result.layers_extracted == [0, 1]
    storage = Storage.open(root)
    stats = storage.read_parquet(contract.stats_path("tiny-gpt2", result.run_id))
    assert stats.num_rows == 2 * 128
    manifest = storage.manifest(contract.records_path("tiny-gpt2", result.run_id))
    assert manifest["neuron"] == "output of mlp.act (GELU) of each GPT-2 block"
    assert manifest["hf_id"] is None and len(manifest["model_checksum"]) == 64
