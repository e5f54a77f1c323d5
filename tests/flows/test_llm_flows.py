"""`explain_neurons` and `simulate_and_score` end to end with real Prefect, real activations of the
shipped subject model and real GE suites; the LLM is the scripted fake (`ScriptedBackend`): this
tier tests the plumbing (the integration tier runs real LLMs)."""

from pathlib import Path

import pytest

from neuronatlas.adapters.storage import Storage
from neuronatlas.datasets import explanations as contract
from neuronatlas.errors import InputError
from neuronatlas.flows.explain import explain_neurons
from neuronatlas.flows.extract import extract_activations
from neuronatlas.flows.ingest import ingest_corpus
from neuronatlas.flows.score import simulate_and_score
from tests.support import ScriptedBackend, small_jsonl_corpus

SMALL = {"top_k": 5, "random_k": 4, "limit": 48, "batch_size": 16}
SELECTION = {"layers": "0,2", "neurons": "6", "samples": 3}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with a corpus and layers 0 and 2 extracted; tests copy it."""
    folder = tmp_path_factory.mktemp("extracted")
    source = small_jsonl_corpus(folder / "wiki300.jsonl")
    root = folder / "atlas"
    ingest_corpus(source=str(source), root=str(root))
    extract_activations(root=str(root), layers="0,2", **SMALL)
    return root


@pytest.fixture
def root(extracted: Path, tmp_path: Path) -> str:
    import shutil

    target = tmp_path / "atlas"
    shutil.copytree(extracted, target)
    return str(target)


def test_explain_then_score_commits_validated_datasets(root: str) -> None:
    explainer, simulator = ScriptedBackend(), ScriptedBackend()
    explained = explain_neurons(root=root, backend=explainer, **SELECTION)
    storage = Storage.open(root)
    explanations = storage.read_parquet(contract.explanations_path(explained.run_id)).to_pandas()
    assert len(explanations) == 6 * 3
    assert explainer.usage.calls == 6  # one prompt per neuron, 3 samples each
    assert explained.explained == 12 and explained.failed == 6
    failed = explanations[explanations["explanation"].isna()]
    assert set(failed["failure_reason"]) == {"answer copies the activation format instead of explaining"}
    assert set(failed["explanation_id"]) == {1}
    assert failed["answer"].notna().all()  # the raw answer is kept beside the reason
    assert set(explanations["layer"]) <= {0, 2}

    scored = simulate_and_score(root=root, backend=simulator)
    scores = storage.read_parquet(contract.scores_path(scored.run_id)).to_pandas()
    simulations = storage.read_parquet(contract.simulations_path(scored.run_id)).to_pandas()
    control = storage.read_parquet(contract.control_path(scored.run_id)).to_pandas()
    assert len(scores) == 18
    # failed explanations: null scores with the reason, no simulations
    unexplained = scores[scores["explanation"].isna()]
    assert unexplained["top_and_random_score"].isna().all()
    assert set(unexplained["failure_reason"]) == {
        "no explanation: answer copies the activation format instead of explaining"
    }
    # one simulation row per (explanation, scored excerpt): top 3 + random 3 splits... per the records
    explained_rows = scores[scores["explanation"].notna()]
    per_explanation = simulations.groupby(["layer", "neuron", "explanation_id"]).size()
    assert len(per_explanation) == len(explained_rows)
    assert set(simulations["split"]) == {"calibration", "valid", "test"}
    assert set(simulations["kind"]) == {"top", "random"}
    assert (simulations["true_activations"].map(len) == simulations["simulated_activations"].map(len)).all()
    # the control scores each explanation on another neuron's valid records
    assert set(control["split"]) == {"valid"}
    assert ((control["record_layer"] != control["layer"]) | (control["record_neuron"] != control["neuron"])).all()
    assert explained_rows["null_neuron"].notna().all()
    # exactly one best explanation per neuron, chosen on valid
    best = scores[scores["is_best"]]
    with_a_score = explained_rows[explained_rows["top_and_random_score"].notna()]
    assert len(best) == with_a_score[["layer", "neuron"]].drop_duplicates().shape[0] > 0
    # a simulation that marks nothing is undefined, not zero
    constant = scores[scores["failure_reason"] == "constant simulated activations"]
    assert constant["top_and_random_score"].isna().all()
    for (_layer, _neuron), group in with_a_score.groupby(["layer", "neuron"]):
        top = group["top_and_random_score"].max()
        assert group[group["is_best"]]["top_and_random_score"].iloc[0] == top
    # the scripted explanations point at the strongest train token: they beat the null
    figures = scored.summary
    assert figures["mean_best_top_and_random"] > figures["mean_null"]
    manifest = storage.read_json(f"{contract.scores_path(scored.run_id)}/_manifest.json")
    assert manifest["summary"] == figures
    assert manifest["simulator"] == "scripted:v1"
    assert manifest["explanations_run"] == explained.run_id
    assert storage.exists(f"{contract.scores_path(scored.run_id)}/real_vs_null.png")


def test_a_rerun_makes_no_llm_call(root: str) -> None:
    explain_neurons(root=root, backend=ScriptedBackend(), **SELECTION)
    first = simulate_and_score(root=root, backend=ScriptedBackend())
    # committed layers are skipped...
    again_explainer, again_simulator = ScriptedBackend(), ScriptedBackend()
    explain_neurons(root=root, backend=again_explainer, **SELECTION)
    simulate_and_score(root=root, backend=again_simulator)
    assert again_explainer.usage.calls == again_simulator.usage.calls == 0
    # ...and with the datasets gone, every answer still comes from the cache
    storage = Storage.open(root)
    before = storage.read_parquet(contract.scores_path(first.run_id)).to_pandas()
    for name in ("explanations", "simulations", "control_simulations", "scores"):
        storage.delete_dir(name)
    cached_explainer, cached_simulator = ScriptedBackend(), ScriptedBackend()
    explain_neurons(root=root, backend=cached_explainer, **SELECTION)
    rerun = simulate_and_score(root=root, backend=cached_simulator)
    assert cached_explainer.usage.calls == cached_simulator.usage.calls == 0
    after = storage.read_parquet(contract.scores_path(rerun.run_id)).to_pandas()
    assert rerun.run_id == first.run_id
    assert (
        before.sort_values(["layer", "neuron", "explanation_id"])
        .reset_index(drop=True)
        .equals(after.sort_values(["layer", "neuron", "explanation_id"]).reset_index(drop=True))
    )


def test_a_crashed_scoring_resumes_without_repeating_finished_neurons(root: str) -> None:
    explain_neurons(root=root, backend=ScriptedBackend(), **SELECTION)
    uninterrupted = ScriptedBackend()
    expected = simulate_and_score(root=root, backend=uninterrupted, seed=1)
    storage = Storage.open(root)
    expected_scores = storage.read_parquet(contract.scores_path(expected.run_id)).to_pandas()
    for name in ("scores", "simulations", "control_simulations", "llm_cache"):  # explanations stay
        storage.delete_dir(name)

    crashing = ScriptedBackend(crash_after=5)
    with pytest.raises(RuntimeError, match="scripted crash"):
        simulate_and_score(root=root, backend=crashing, seed=1)
    for run in storage.list("scores"):  # only whole layers were committed; nothing staged is left
        for entry in storage.list(f"scores/{run}"):
            assert entry.startswith("layer=") and storage.is_committed(f"scores/{run}/{entry}")
    resumed = ScriptedBackend()
    result = simulate_and_score(root=root, backend=resumed, seed=1)
    assert resumed.usage.calls == uninterrupted.usage.calls - 5  # the 5 answered before the crash are cached
    resumed_scores = storage.read_parquet(contract.scores_path(result.run_id)).to_pandas()
    order = ["layer", "neuron", "explanation_id"]
    assert (
        resumed_scores.sort_values(order)
        .reset_index(drop=True)
        .equals(expected_scores.sort_values(order).reset_index(drop=True))
    )


def test_bad_selections_are_refused_before_any_llm_call(root: str) -> None:
    backend = ScriptedBackend()
    cases = [
        ({"layers": "1"}, "--layers 1: layer 1 was not extracted"),
        ({"neurons": "0:99999"}, "neuron 99999 is out of range"),
        ({"neurons": "5:3"}, "layer 5 is not among the extracted layers"),
        ({"neurons": "abc"}, "'abc' is neither a count nor a neuron"),
        ({"samples": 0}, "--samples 0: must be at least 1"),
        ({"prompt_format": "poetry"}, "--prompt-format poetry"),
        ({"activations": "x-nope"}, "--activations x-nope: no committed activation run"),
    ]
    for overrides, message in cases:
        with pytest.raises(InputError, match=message):
            explain_neurons(root=root, backend=backend, **{**SELECTION, **overrides})
    assert backend.usage.calls == 0
    assert not Storage.open(root).list("explanations")


def test_a_budget_stops_cleanly_and_a_rerun_asks_only_for_the_rest(root: str) -> None:
    from neuronatlas.adapters.llm import BackendOptions
    from tests.fake_openai import FaultyServer, serve

    server = FaultyServer(lambda _messages: "the main thing this neuron does is find commas.")
    with serve(server) as url:
        tight = BackendOptions(base_url=url, concurrency=1, budget_tokens=4_000)
        first = explain_neurons(root=root, explainer="openai:m", options=tight, **SELECTION)
        early = simulate_and_score(root=root, backend=ScriptedBackend())  # scores of the partial explanations
        sent_first = len(server.requests)
        assert 0 < sent_first < 6 * 3  # stopped partway: 18 requests would be 3 samples x 6 neurons
        storage = Storage.open(root)
        rows = storage.read_parquet(contract.explanations_path(first.run_id)).to_pandas()
        refused = rows[rows["failure_reason"].fillna("").str.startswith("budget exhausted")]
        assert len(refused) > 0 and rows["explanation"].notna().sum() > 0
        assert first.failed == len(refused)

        # a larger budget: only the refused neurons are asked (answers so far come from the cache)
        second = explain_neurons(root=root, explainer="openai:m", options=BackendOptions(base_url=url), **SELECTION)
    assert second.run_id == first.run_id
    again = Storage.open(root).read_parquet(contract.explanations_path(second.run_id)).to_pandas()
    assert second.failed == 0 and second.explained == 18, again["failure_reason"].value_counts()
    refused_neurons = refused[["layer", "neuron"]].drop_duplicates()
    assert len(server.requests) - sent_first == 3 * len(refused_neurons)
    # the scores of the same run follow: layers whose explanations changed are scored again
    later = simulate_and_score(root=root, backend=ScriptedBackend())
    assert later.run_id == early.run_id
    scores = Storage.open(root).read_parquet(contract.scores_path(later.run_id)).to_pandas()
    assert not scores["failure_reason"].fillna("").str.contains("budget exhausted").any()
    assert early.summary["explanations"] == later.summary["explanations"] == 18
