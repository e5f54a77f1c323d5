"""`explain_neurons` and `simulate_and_score` end to end with real Prefect, real activations of the
shipped subject model and real GE suites; the LLM is the scripted fake (`ScriptedBackend`): this
tier tests the plumbing (the integration tier runs real LLMs)."""

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from neuronatlas.adapters.storage import Storage
from neuronatlas.catalog.runs import find_activation_run
from neuronatlas.datasets import explanations as contract
from neuronatlas.errors import InputError
from neuronatlas.flows.explain import explain_neurons
from neuronatlas.flows.extract import extract_activations
from neuronatlas.flows.ingest import ingest_corpus
from neuronatlas.flows.score import simulate_and_score
from tests.support import ScriptedBackend, small_jsonl_corpus

if TYPE_CHECKING:
    import pandas as pd

SMALL = {"top_k": 5, "random_k": 4, "limit": 48, "batch_size": 16}
SELECTION = {"layers": "0,2", "neurons": "6", "samples": 3, "prompt_format": "pairs"}
"""The scripted explainer names the strongest token of the paper's format."""


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
    # exactly one best sample per neuron, chosen by the embedding AUC on train/calibration spans
    best = scores[scores["is_best"]]
    rankable = explained_rows[explained_rows["selection_auc"].notna()]
    assert len(best) == rankable[["layer", "neuron"]].drop_duplicates().shape[0] > 0
    for (_layer, _neuron), group in rankable.groupby(["layer", "neuron"]):
        assert group[group["is_best"]]["selection_auc"].iloc[0] == group["selection_auc"].max()
    # a simulation that marks nothing is undefined, not zero
    constant = scores[scores["failure_reason"] == "constant simulated activations"]
    assert constant["top_and_random_score"].isna().all()
    check_excerpt_scores(scores)
    # the scripted explanations point at the strongest train token: they beat the null
    figures = scored.summary
    assert figures["mean_best_top_and_random"] > figures["mean_null"]
    check_scorer_figures(figures, best, explained_rows)
    assert -1 <= figures["explanation_sensitivity"] <= 1
    manifest = storage.read_json(f"{contract.scores_path(scored.run_id)}/_manifest.json")
    assert manifest["summary"] == figures
    assert manifest["simulator"] == "scripted:v1"
    assert manifest["explanations_run"] == explained.run_id
    assert storage.exists(f"{contract.scores_path(scored.run_id)}/real_vs_null.png")


def check_scorer_figures(figures: dict, best: "pd.DataFrame", explained_rows: "pd.DataFrame") -> None:
    """Per scorer, real vs null over the best sample of each neuron, and over all samples."""
    assert {name for name, gap in figures["scorers"].items() if gap} == {
        "simulation",
        "embedding",
        "fuzzing",
        "lookup baseline",
    }
    simulation = figures["scorers"]["simulation"]
    assert simulation["n"] == len(best.dropna(subset=["top_and_random_score", "null_score"]))
    every = explained_rows.dropna(subset=["top_and_random_score", "null_score"])
    assert figures["scorers_all_samples"]["simulation"]["n"] == every[["layer", "neuron"]].drop_duplicates().shape[0]
    assert simulation["ci95"][0] <= simulation["gap"] <= simulation["ci95"][1]
    assert simulation["significant"] == (simulation["ci95"][0] > 0 and simulation["n"] >= 5)


def check_excerpt_scores(scores: "pd.DataFrame") -> None:
    """The embedding scorer (a value or the reason there is none) and the lookup baseline, each
    with its own null."""
    explained_rows = scores[scores["explanation"].notna()]
    embedded = explained_rows["embedding_auc"].notna()
    assert (embedded != explained_rows["embedding_failure_reason"].notna()).all()
    assert explained_rows.loc[embedded, "embedding_auc"].between(0, 1).all() and embedded.sum() >= 6
    assert explained_rows["embedding_failure_reason"].dropna().str.match(r"no (activating|quiet) spans").all()
    assert scores[scores["explanation"].isna()]["embedding_auc"].isna().all()
    assert scores.groupby(["layer", "neuron"])["lookup_score"].nunique(dropna=False).eq(1).all()


def test_scoring_without_simulation_embedding_detection_and_fuzzing(root: str) -> None:
    explain_neurons(root=root, backend=ScriptedBackend(), **SELECTION)
    simulator = ScriptedBackend()
    scored = simulate_and_score(root=root, backend=simulator, scorers="embedding,detection,fuzzing")
    assert simulator.read == []  # nothing simulated
    storage = Storage.open(root)
    scores = storage.read_parquet(contract.scores_path(scored.run_id)).to_pandas()
    explained = scores[scores["explanation"].notna()]
    assert explained["top_and_random_score"].isna().all()
    assert set(explained["failure_reason"]) == {"not simulated (--scorers without simulation)"}
    assert scored.summary["failed"] == len(scores) - len(explained)  # only the explainer's failures
    assert scored.summary["scorers"]["simulation"] is None
    assert not storage.list(contract.simulations_path(scored.run_id))
    rankable = explained[explained["selection_auc"].notna()]
    assert scores["is_best"].sum() == rankable[["layer", "neuron"]].drop_duplicates().shape[0]
    for name in ("embedding", "detection", "fuzzing"):
        assert (explained[f"{name}_auc"].notna() != explained[f"{name}_failure_reason"].notna()).all()
        assert explained[f"{name}_auc"].dropna().between(0, 1).all()
        assert scored.summary["scorers"][name]["n"] >= 1
    assert explained["fuzzing_auc"].notna().sum() >= 3
    # the scripted simulator says Yes exactly where the explanation's token is marked: a decoy
    # marking never beats the true one
    assert (explained["fuzzing_auc"].dropna() >= 0.5).all()
    assert 0 < simulator.usage.calls <= 2 * 2 * len(explained)  # (detection, fuzzing) x (real, null)
    again = ScriptedBackend()
    simulate_and_score(root=root, backend=again, scorers="embedding,detection,fuzzing")
    assert again.usage.calls == 0  # committed, and every answer cached
    with pytest.raises(InputError, match="--scorers embedding,sparse: expected"):
        simulate_and_score(root=root, backend=simulator, scorers="embedding,sparse")


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
    from neuronatlas.config import LLMOptions
    from tests.fake_openai import FaultyServer, serve

    server = FaultyServer(lambda _messages: "the main thing this neuron does is find commas.")
    with serve(server) as url:
        tight = LLMOptions(base_url=url, concurrency=1, budget_tokens=11_000)  # about two neurons
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
        second = explain_neurons(root=root, explainer="openai:m", options=LLMOptions(base_url=url), **SELECTION)
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


def test_validity_harness_reports_every_scorer_against_its_null(root: str) -> None:
    from neuronatlas.flows.validity import validity

    explainer, simulator = ScriptedBackend(), ScriptedBackend()
    result = validity(
        root=root,
        neurons=6,
        samples=1,
        formats="pairs",
        explainer_backend=explainer,
        simulator_backend=simulator,
        seed=0,
    )
    storage = Storage.open(root)
    manifest = storage.read_json(f"validity/{result.run_id}/_manifest.json")
    assert [row["scorer"] for row in manifest["rows"]] == ["simulation", "embedding", "fuzzing", "lookup baseline"]
    assert len(manifest["neurons"]) == 6 and manifest["layers"] == [0, 2]  # shared evenly: 3 per layer
    assert sum(layer == 0 for layer, _ in manifest["neurons"]) == 3
    scores = storage.read_parquet(contract.scores_path(manifest["runs"]["pairs"]["scores"])).to_pandas()
    simulation, embedding, fuzzing, lookup = manifest["rows"]

    def neurons_with(real: str, null: str) -> int:
        return len(scores[scores["is_best"]].dropna(subset=[real, null]))

    assert simulation["n"] == neurons_with("top_and_random_score", "null_score") >= 1
    assert embedding["n"] == neurons_with("embedding_auc", "embedding_null") >= 3
    assert fuzzing["n"] == neurons_with("fuzzing_auc", "fuzzing_null") >= 3
    assert lookup["n"] == neurons_with("lookup_score", "lookup_null")
    for row in manifest["rows"]:
        assert row["ci95"][0] <= row["gap"] <= row["ci95"][1]
    # the scripted explanations name the strongest train token, and the simulator marks it
    assert simulation["real"] > simulation["null"]
    # oracle neurons: the lookup baseline recovers a neuron that fires on one token class
    oracles = {row["oracle"]: row for row in manifest["oracles"]}
    assert set(oracles) == {"digits", "the", "comma", "of"}
    assert all(row["lookup baseline"] > 0.9 > row["lookup_null"] for row in oracles.values())
    assert all(row["fuzzing"] is not None for row in oracles.values())  # a default scorer on the oracles too
    report = storage.read_bytes(f"validity/{result.run_id}/report.md").decode()
    assert "| pairs | simulation |" in report and "## Oracle neurons" in report
    assert storage.read_bytes(f"validity/{result.run_id}/gaps.png").startswith(b"\x89PNG")


def test_the_negative_side_is_explained_from_the_bottom_records(root: str) -> None:
    explainer, simulator = ScriptedBackend(), ScriptedBackend()
    explained = explain_neurons(
        root=root, backend=explainer, sign="negative", layers="2", neurons="2:5", samples=1, prompt_format="pairs"
    )
    storage = Storage.open(root)
    manifest = storage.read_json(f"{contract.explanations_path(explained.run_id)}/_manifest.json")
    assert manifest["parameters"]["sign"] == "negative"
    # the explainer saw the bottom train records, most negative activation shown as the strongest
    run = find_activation_run(storage, None)
    records = storage.read_parquet(f"{run.records}/layer=2").to_pandas()
    bottom = records[(records["neuron"] == 5) & (records["kind"] == "bottom") & (records["split"] == "train")]
    shown = explainer.generated[-1]
    assert len(bottom) > 0
    lines = [line for line in shown.split("Activations:\n", 1)[1].splitlines() if "\t" in line]
    assert len([line for line in lines if line.endswith("\t9")]) >= 1
    scored = simulate_and_score(root=root, backend=simulator, explanations=explained.run_id, scorers="simulation")
    simulations = storage.read_parquet(contract.simulations_path(scored.run_id)).to_pandas()
    tops = simulations[simulations["kind"] == "top"]
    bottom_all = records[(records["neuron"] == 5) & (records["kind"] == "bottom")]
    assert set(tops["sequence_id"]) <= set(bottom_all["sequence_id"])  # bottom records stand as the top
    for sequence, true in zip(tops["sequence_id"], tops["true_activations"], strict=True):
        original = bottom_all[bottom_all["sequence_id"] == sequence]["activations"].iloc[0]
        assert list(true) == pytest.approx([-a for a in original])
    assert storage.read_json(f"{contract.scores_path(scored.run_id)}/_manifest.json")["sign"] == "negative"
