"""Explain and score end to end through a real OpenAI-compatible server process: llama-cpp-python's
server serving the shipped Qwen2.5-Coder-0.5B GGUF (the `llama_server` fixture). Short windows
(16 tokens) keep the JSON simulations small enough for a CPU."""

from pathlib import Path

from neuronatlas.adapters.storage import Storage
from neuronatlas.config import LLMOptions
from neuronatlas.datasets import explanations as contract
from neuronatlas.flows.explain import explain_neurons
from neuronatlas.flows.extract import extract_activations
from neuronatlas.flows.ingest import ingest_corpus
from neuronatlas.flows.score import simulate_and_score
from tests.support import small_jsonl_corpus


def test_explain_and_score_through_a_llama_cpp_server(llama_server: str, tmp_path: Path) -> None:
    root = str(tmp_path / "atlas")
    source = small_jsonl_corpus(tmp_path / "wiki60.jsonl", documents=60)
    ingest_corpus(source=str(source), root=root, window=16)
    extract_activations(root=root, layers="0", top_k=4, random_k=3, limit=32, batch_size=16)
    options = LLMOptions(base_url=llama_server, concurrency=2, timeout_s=300)

    explained = explain_neurons(
        root=root, neurons="0:5,0:9", samples=1, temperature=0.0, explainer="openai:qwen-0.5b", options=options
    )
    scored = simulate_and_score(root=root, simulator="openai:qwen-0.5b", options=options)

    storage = Storage.open(root)
    explanations = storage.read_parquet(contract.explanations_path(explained.run_id)).to_pandas()
    assert len(explanations) == 2
    assert (explanations["explanation"].notna() != explanations["failure_reason"].notna()).all()
    simulations = storage.read_parquet(contract.simulations_path(scored.run_id)).to_pandas()
    # each simulation: 16 values in 0..9 aligned with the tokens, or null with the reason (never zeros)
    ok = simulations[simulations["simulated_activations"].notna()]
    failed = simulations[simulations["simulated_activations"].isna()]
    assert (ok["simulated_activations"].map(len) == 16).all()
    assert ok["simulated_activations"].map(lambda values: all(0 <= v <= 9 for v in values)).all()
    assert failed["failure_reason"].notna().all()
    manifest = storage.read_json(f"{contract.scores_path(scored.run_id)}/_manifest.json")
    assert manifest["simulator"] == f"openai:qwen-0.5b@{llama_server}"
    assert manifest["llm_last_run"]["prompt_tokens"] > 0  # the server's own accounting
    assert manifest["summary"]["explanations"] == 2
