"""`neuronatlas explain` and `neuronatlas score` as a user runs them: real CLI processes, real
Prefect, the shipped subject model, and the shipped 0.5B Qwen as explainer and simulator; then
bad input, refused with one clear line before anything is written."""

import re

import pytest

from neuronatlas.adapters.storage import Storage
from neuronatlas.core.prompts import JSON_EXCERPTS_PER_REQUEST
from neuronatlas.datasets import explanations as contract
from tests.integration.test_cli_bad_input import assert_clean_failure, run_cli
from tests.support import is_json_simulation, json_simulation_answer, small_jsonl_corpus

LLM = "local:qwen2.5-coder-0.5b"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("llm-cli")
    source = small_jsonl_corpus(folder / "wiki300.jsonl", documents=120)
    root = str(folder / "atlas")
    for args in (
        ["ingest", "--root", root, "--source", str(source)],
        ["extract", "--root", root, "--layers", "3", "--top-k", "8", "--random-k", "3", "--limit", "64"],
    ):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
    return root


def test_explain_and_score_with_the_shipped_local_model(root: str) -> None:
    explained = run_cli(
        "explain", "--root", root, "--neurons", "3:7,3:100", "--samples", "1", "--explainer", LLM, timeout=900
    )
    assert explained.returncode == 0, explained.stderr
    counts = re.search(r"run e-\w+: (\d+) explained, (\d+) failed, (\d+) LLM calls", explained.stdout)
    assert counts, explained.stdout
    assert int(counts[1]) + int(counts[2]) == 2  # 2 neurons x 1 sample
    assert int(counts[3]) == 2  # one prompt per neuron
    scored = run_cli("score", "--root", root, "--simulator", LLM, timeout=900)
    assert scored.returncode == 0, scored.stderr
    assert "scores: run s-" in scored.stdout
    assert "permutation null" in scored.stdout

    storage = Storage.open(root)
    [run] = storage.list("scores")
    scores = storage.read_parquet(contract.scores_path(run)).to_pandas()
    assert len(scores) == 2
    scored_rows = scores[scores["top_and_random_score"].notna()]
    assert (scored_rows["top_and_random_score"].abs() <= 1).all()
    assert scores["mean_digit_mass"].dropna().between(0, 1).all()
    manifest = storage.read_json(f"{contract.scores_path(run)}/_manifest.json")
    assert manifest["simulator"].startswith("local:qwen2.5-coder-0.5b@sha256:1d9614638d18")
    assert manifest["llm_last_run"]["calls"] > 0
    simulations = storage.read_parquet(contract.simulations_path(run)).to_pandas()
    assert (simulations["simulated_activations"].map(len) == 64).all()

    # nothing changed: a rerun commits nothing new and asks the model nothing
    again = run_cli("explain", "--root", root, "--neurons", "3:7,3:100", "--samples", "1", "--explainer", LLM)
    assert "0 LLM calls" in again.stdout, again.stdout


def test_openai_backend_through_the_cli_with_a_local_server(root: str) -> None:
    """The `openai:` path end to end against an OpenAI-compatible HTTP server (the fault-injecting
    fake, answering sensibly): explanations and JSON simulations with strict token alignment. One
    neuron: no permutation control."""
    from tests.fake_openai import FaultyServer, serve

    def answer(messages: list[dict[str, str]]) -> str:
        last = messages[-1]["content"]
        if is_json_simulation(last):  # mark nothing but numbers
            return json_simulation_answer(last, lambda token: token.strip().isdigit())
        return "the main thing this neuron does is find numbers."

    server = FaultyServer(answer, ["429", "500"])  # both retried by the client
    with serve(server) as url:
        openai = ["--base-url", url, "--root", root]
        explained = run_cli("explain", *openai, "--neurons", "3:7", "--samples", "1", "--explainer", "openai:m")
        assert explained.returncode == 0, explained.stderr
        assert "1 explained, 0 failed" in explained.stdout
        run = re.search(r"run (e-\w+)", explained.stdout)[1]  # type: ignore[index]
        scored = run_cli("score", *openai, "--explanations", run, "--simulator", "openai:m")
        assert scored.returncode == 0, scored.stderr
    assert re.search(r"\d of 1 explanations scored", scored.stdout), scored.stdout
    storage = Storage.open(root)
    score_run = re.search(r"run (s-\w+)", scored.stdout)[1]  # type: ignore[index]
    simulations = storage.read_parquet(contract.simulations_path(score_run)).to_pandas()
    assert simulations["failure_reason"].isna().all()  # every JSON answer aligned token for token
    numbers = simulations.apply(
        lambda row: [9.0 if t.strip().isdigit() else 0.0 for t in tokens_of(storage, row["sequence_id"])], axis=1
    )
    assert (simulations["simulated_activations"].map(list) == numbers).all()
    kinds = [kind for _, kind, _ in server.requests]
    assert kinds[:2] == ["429", "500"]
    # the explanation; the probe for top_logprobs (auto scorers); the scored excerpts, a few per request
    assert kinds.count("ok") == 1 + 1 + -(-len(simulations) // JSON_EXCERPTS_PER_REQUEST)
    assert sum(1 for _, _, body in server.requests if body.get("top_logprobs")) == 1


def tokens_of(storage: Storage, sequence_id: int) -> list[str]:
    from neuronatlas.datasets import corpus

    [name] = storage.list("corpus")
    table = storage.read_parquet(corpus.corpus_path(name)).to_pandas()
    return list(table.loc[table["sequence_id"] == sequence_id, "tokens"].iloc[0])


BAD = {
    "unknown backend kind": (
        ["explain", "--explainer", "gpt:4"],
        "--explainer gpt:4: expected local:<model> or openai:<model>",
    ),
    "unknown local model": (["explain", "--explainer", "local:llama-70b"], "model 'llama-70b': not a shipped model"),
    "openai without key or server": (["explain", "--explainer", "openai:gpt-4o-mini"], "set OPENAI_API_KEY"),
    "neuron out of range": (
        ["explain", "--neurons", "3:5000"],
        "--neurons 3:5000: 3:5000: neuron 5000 is out of range",
    ),
    "layer not extracted": (["explain", "--layers", "4"], "--layers 4: layer 4 was not extracted"),
    "scale out of range": (["explain", "--scale", "0"], "--scale 0: expected 1 to 10"),
    "no explanations yet": (["score", "--explanations", "e-nope"], "--explanations e-nope: no run of that id"),
    "all-at-once over an API without the chat template": (
        ["score", "--simulator", "openai:x", "--method", "all-at-once", "--base-url", "http://127.0.0.1:9/v1"],
        "--method all-at-once: openai:x: needs the model's chat template to build the prompt; pass --llm-tokenizer",
    ),
    "line-by-line over an API": (
        ["score", "--simulator", "openai:x", "--method", "line-by-line", "--base-url", "http://127.0.0.1:9/v1"],
        "--method line-by-line: runs in process only; openai:x: use all-at-once or json",
    ),
    "batch API with a local model": (
        ["explain", "--batch-api"],
        "--batch-api: --explainer local:qwen2.5-coder-1.5b: the Batch API needs an openai: backend",
    ),
    "unknown tokenizer for the budget": (
        ["explain", "--explainer", "openai:x", "--base-url", "http://127.0.0.1:9/v1", "--llm-tokenizer", "gpt-9"],
        "--llm-tokenizer gpt-9: model 'gpt-9': not a shipped model",
    ),
    "unknown scorer": (["score", "--scorers", "embedding,vibes"], "--scorers embedding,vibes: expected"),
    "negative side misspelt": (["explain", "--sign", "down"], "--sign down: expected positive or negative"),
    "validity: unknown format": (["validity", "--formats", "tokens,prose"], "--formats tokens,prose: expected"),
    "validity: layer not extracted": (["validity", "--layers", "1,2,3"], "--layers 1,2,3: layer 1 was not extracted"),
    "validity: one neuron": (["validity", "--neurons", "1"], "--neurons 1: the permutation null needs at least 2"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_clear_line_and_writes_nothing(case: str, root: str) -> None:
    args, message = BAD[case]
    storage = Storage.open(root)
    before = sorted(storage.list(""))
    result = run_cli(*args[:1], "--root", root, *args[1:], env={"OPENAI_API_KEY": ""})
    assert_clean_failure(result, message)
    assert sorted(storage.list("")) == before
