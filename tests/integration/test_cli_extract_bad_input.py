"""Bad input to `neuronatlas extract`: exit code 2, one clear line, nothing written."""

from pathlib import Path

import pytest

from neuronatlas.adapters.storage import Storage
from tests.flows.test_ingest_flow import snapshot
from tests.integration.test_cli_bad_input import assert_clean_failure, run_cli
from tests.support import small_jsonl_corpus


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A root holding one small corpus (373 windows), tokenised for smollm2-135m."""
    folder = tmp_path_factory.mktemp("extract-bad-input")
    source = small_jsonl_corpus(folder / "wiki300.jsonl")
    root = str(folder / "atlas")
    result = run_cli("ingest", "--root", root, "--source", str(source))
    assert result.returncode == 0, result.stderr
    return root


def corpus_id(root: str) -> str:
    (name,) = Storage.open(root).list("corpus")
    return name


def not_a_model(tmp_path: Path) -> str:
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "weights.bin").write_bytes(b"\0" * 16)
    return str(tmp_path / "folder")


CASES = {
    "unknown model": (lambda p, r: ["--model", "llama-9000"], "model 'llama-9000': not a shipped model"),
    "unreadable model folder": (
        lambda p, r: ["--model", not_a_model(p)],
        "not a Hugging Face model folder (no config.json)",
    ),
    "layer out of range": (
        lambda p, r: ["--layers", "0,30"],
        "--layers 0,30: layer 30 is out of range: the model has layers 0-29",
    ),
    "bad layer spec": (lambda p, r: ["--layers", "two"], "--layers two: 'two' is not a layer"),
    "missing corpus": (lambda p, r: ["--corpus", "no-such-corpus"], "--corpus no-such-corpus: no committed corpus"),
    "corpus of another tokenizer": (
        lambda p, r: ["--model", "gemma3-270m", "--corpus", corpus_id(r)],
        "whose tokenizer differs from gemma3-270m's; ingest the source again with --tokenizer-of gemma3-270m",
    ),
    "K larger than the corpus": (lambda p, r: ["--top-k", "400"], "--top-k 400: larger than the corpus (373 excerpts)"),
    "K larger than the limited corpus": (
        lambda p, r: ["--top-k", "20", "--limit", "10"],
        "--top-k 20: larger than the corpus (10 excerpts)",
    ),
    "unknown device": (lambda p, r: ["--device", "tpu", "--layers", "0"], "--device tpu: expected auto, cpu or cuda"),
    "unknown dtype": (lambda p, r: ["--dtype", "int4", "--layers", "0"], "--dtype int4: expected auto, fp32 or bf16"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_cleanly_and_writes_nothing(case: str, root: str, tmp_path: Path) -> None:
    make_args, message = CASES[case]
    before = snapshot(Storage.open(root))
    result = run_cli("extract", "--root", root, *make_args(tmp_path, root))
    assert_clean_failure(result, message)
    assert snapshot(Storage.open(root)) == before


def test_an_empty_root_has_no_corpus(tmp_path: Path) -> None:
    root = tmp_path / "atlas"
    result = run_cli("extract", "--root", str(root))
    assert_clean_failure(result, "--corpus: name one of the committed corpora under")
    assert not root.exists()
