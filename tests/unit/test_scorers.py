"""Scorers behind one interface: `score_neuron` runs whatever scorers it is given on each
explanation and on the control partner, the best sample is chosen on held-in spans only, and
every scorer's columns reach the scores table (null with a reason when it did not run)."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from neuronatlas.core.explain import NeuronRecords
from neuronatlas.core.scorers import SCORERS, build_scorers, choose_scorers, score_neuron
from neuronatlas.core.scorers.base import PairResult
from neuronatlas.core.scorers.embedding import EmbeddingResult
from neuronatlas.core.scorers.simulation import SimulationScorer, simulated_splits
from neuronatlas.core.scoring import Score
from neuronatlas.datasets import explanations as contract
from tests.support import ScriptedBackend
from tests.unit.test_validity import neuron_that_fires_on


@dataclass
class CountingScorer:
    """A scorer of the interface's shape: the explanation's length on the neuron, 0 on the partner."""

    name: str = "embedding"
    columns: tuple[str, str] = ("embedding_auc", "embedding_null")

    def __post_init__(self) -> None:
        self.calls: list[tuple[str, int, int | None]] = []

    def score(self, explanation: str, records: NeuronRecords, partner: NeuronRecords | None) -> Any:
        self.calls.append((explanation, records.neuron, partner.neuron if partner else None))
        value = Score(len(explanation) / 100)
        return EmbeddingResult(value, Score(0.0), Score(1.0 - len(explanation) / 100))


def partner_of(records: NeuronRecords) -> NeuronRecords:
    return NeuronRecords(records.layer, records.neuron + 1, records.records)


def test_each_explanation_is_scored_on_its_neuron_and_its_partner() -> None:
    records = neuron_that_fires_on(" of")
    scorer = CountingScorer()
    rows = [
        {"explanation_id": 0, "explanation": "the word of", "failure_reason": None},
        {"explanation_id": 1, "explanation": "of", "failure_reason": None},
        {"explanation_id": 2, "explanation": None, "failure_reason": "did not parse"},
    ]
    outcome = score_neuron([scorer], records, rows, partner_of(records))
    assert scorer.calls == [("the word of", 7, 8), ("of", 7, 8)]  # the failed row asks nothing
    assert outcome.control_of == (3, 8)
    assert outcome.best == 1  # the higher selection AUC, never the headline
    failed = outcome.explanations[2].results
    assert set(failed) == set(SCORERS)
    assert failed["simulation"].real.reason == "no explanation: did not parse"
    assert failed["fuzzing"].real.reason == "no explanation"
    assert outcome.baseline.real.value is not None  # the lookup baseline needs no explanation


def test_the_scores_table_has_every_scorers_columns_with_reasons() -> None:
    records = neuron_that_fires_on(" of")
    rows = [{"explanation_id": 0, "explanation": "the word of", "failure_reason": None}]
    outcome = score_neuron([CountingScorer()], records, rows, partner_of(records))
    tables = contract.layer_tables(3, [outcome])
    [row] = tables["scores"].to_pylist()
    assert row["embedding_auc"] == 0.11 and row["selection_auc"] == 0.89 and row["is_best"]
    assert (
        row["top_and_random_score"] is None and row["failure_reason"] == "not simulated (--scorers without simulation)"
    )
    assert row["detection_auc"] is None and row["detection_failure_reason"] == "not run (--scorers without detection)"
    assert row["null_layer"] == 3 and row["null_neuron"] == 8
    assert tables["simulations"].num_rows == tables["control"].num_rows == 0
    assert tables["scores"].schema.equals(contract.SCORES_SCHEMA)
    assert isinstance(tables["scores"], pa.Table)


def test_simulation_runs_one_batch_of_own_and_control_excerpts() -> None:
    records = neuron_that_fires_on(" of")
    backend = ScriptedBackend()
    scorers = build_scorers(["fuzzing", "simulation"], backend, lambda: None, "line-by-line")  # type: ignore[arg-type, return-value]
    assert [s.name for s in scorers] == ["simulation", "fuzzing"]  # listed order, not asked order
    assert isinstance(scorers[0], SimulationScorer)
    rows = [{"explanation_id": 0, "explanation": "the word of", "failure_reason": None}]
    outcome = score_neuron(scorers[:1], records, rows, partner_of(records))
    result = outcome.explanations[0].results["simulation"]
    assert [count for _, count in backend.read] == [len(records.scored()) + len(records.control())]
    assert len(result.excerpts) == len(records.scored()) and len(result.control_excerpts) == len(records.control())
    tables = contract.layer_tables(3, [outcome])
    assert tables["simulations"].num_rows == len(records.scored())
    assert tables["control"].num_rows == len(records.control())
    assert np.isfinite(tables["scores"]["mean_digit_mass"].to_numpy(zero_copy_only=False)).all()


def test_a_pair_result_names_its_columns_after_its_scorer() -> None:
    result = PairResult("fuzzing", Score(0.8), Score(None, "no fuzzing spans"))
    assert result.columns() == {"fuzzing_auc": 0.8, "fuzzing_null": None, "fuzzing_failure_reason": None}


def test_auto_depends_on_what_the_simulator_can_read() -> None:
    assert choose_scorers("auto") == ("simulation", "embedding", "fuzzing")
    assert choose_scorers("auto", reads_probabilities=False) == ("simulation", "embedding")
    assert choose_scorers("fuzzing, embedding,fuzzing") == ("fuzzing", "embedding")


def test_simulating_the_valid_split_alone_keeps_the_headline_and_nulls_the_rest() -> None:
    records = neuron_that_fires_on(" of")
    everything, valid_only = ScriptedBackend(), ScriptedBackend()
    rows = [{"explanation_id": 0, "explanation": "the word of", "failure_reason": None}]
    full = score_neuron([SimulationScorer(everything, "all-at-once")], records, rows, partner_of(records))
    scorer = SimulationScorer(valid_only, "all-at-once", splits=simulated_splits("valid"))
    outcome = score_neuron([scorer], records, rows, partner_of(records))
    valid = len(records.select(["top", "random"], ["valid"]))
    assert [count for _, count in valid_only.read] == [valid + len(records.control())]
    result, reference = outcome.explanations[0].results["simulation"], full.explanations[0].results["simulation"]
    assert {r.split for r in result.excerpts} == {"valid"}
    assert result.real.value is not None and result.null.value is not None
    assert result.real == reference.real and result.null == reference.null  # same definition, same value
    scores = result.scores
    for name in ("test_score", "calibration_score", "rsquared", "absolute_dev_explained"):
        assert getattr(scores, name).value is None
    assert scores.test_score.reason == "test records not simulated (--splits valid)"
    assert scores.rsquared.reason == "calibration records not simulated (--splits valid)"


@pytest.mark.parametrize(
    ("value", "message"),
    [("test", "valid is needed"), ("valid,train", "expected a comma-separated list"), ("", "expected")],
)
def test_splits_must_name_scored_splits_and_include_valid(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulated_splits(value)
    assert simulated_splits("test, valid,valid") == ("valid", "test")
