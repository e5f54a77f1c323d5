"""Bad numbers (NaN, inf, zero digit mass, mismatched lengths) never crash a score nor reach a
table as NaN, and every null simulation score has its reason in the scores table."""

import json
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

from neuronatlas.adapters.local_llm import LocalBackend
from neuronatlas.core.explain import NeuronRecords, Simulation, explain_records, score, unexplainable
from neuronatlas.core.llm import GenerationParams, Usage
from neuronatlas.core.prompts import all_at_once_prompt, line_by_line_prompt
from neuronatlas.core.scorers import score_neuron
from neuronatlas.core.scorers.simulation import SimulationResult, SimulationScorer
from neuronatlas.core.scoring import SCORE_NAMES, ExplanationScores, Score
from neuronatlas.datasets import explanations as contract
from neuronatlas.datasets import published
from neuronatlas.expectations.explanations import scores_frame
from tests.support import ScriptedBackend
from tests.unit.test_scorers import partner_of
from tests.unit.test_validity import neuron_that_fires_on


def with_train_value(records: NeuronRecords, value: float) -> NeuronRecords:
    """`records` with the first train record's first activation set to `value`."""
    first = next(r for r in records.records if r.split == "train")
    activations = first.activations.copy()
    activations[0] = value
    changed = tuple(replace(r, activations=activations) if r is first else r for r in records.records)
    return replace(records, records=changed)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_train_activation_makes_the_neuron_unexplainable(bad: float) -> None:
    records = with_train_value(neuron_that_fires_on(" of"), bad)
    assert unexplainable(records) == "non-finite activations in the train records"
    backend = ScriptedBackend()
    [explained] = explain_records(backend, [records], GenerationParams(n=2), "pairs", 9)
    assert backend.generated == []  # nothing asked
    assert {row.failure_reason for row in explained.rows} == {"non-finite activations in the train records"}


def test_an_empty_train_excerpt_does_not_break_the_positive_check() -> None:
    records = neuron_that_fires_on(" of")
    empty = replace(records.records[0], tokens=(), activations=np.zeros(0, np.float32))
    assert unexplainable(replace(records, records=(empty, *records.records[1:]))) is None


def test_score_refuses_a_simulation_count_that_is_not_the_excerpt_count() -> None:
    excerpts = neuron_that_fires_on(" of").scored()
    simulations = [Simulation(r.activations.copy()) for r in excerpts]
    scores = score(excerpts, simulations[:-1])
    reason = f"{len(excerpts) - 1} simulations for {len(excerpts)} excerpts"
    assert scores == ExplanationScores.unscored(reason)


def test_score_refuses_a_simulation_of_the_wrong_length() -> None:
    excerpts = neuron_that_fires_on(" of").scored()
    simulations = [Simulation(r.activations.copy()) for r in excerpts]
    simulations[0] = Simulation(np.zeros(len(excerpts[0].tokens) + 1, np.float32))
    scores = score(excerpts, simulations)
    split, tokens = excerpts[0].split, len(excerpts[0].tokens)
    assert scores.calibration_score == Score(
        None, f"simulated activations of {tokens + 1} tokens for an excerpt of {tokens} ({split})"
    )


def partial_scores() -> ExplanationScores:
    return ExplanationScores(
        top_and_random_score=Score(0.5),
        random_only_score=Score(None, "no excerpts to score"),
        test_score=Score(0.25),
        calibration_score=Score(0.75),
        rsquared=Score(None, "non-finite simulated activations (calibration)"),
        absolute_dev_explained=Score(None, "non-finite simulated activations (calibration)"),
    )


def test_every_null_simulation_score_has_its_reason() -> None:
    assert SimulationResult(partial_scores(), Score(0.1)).reasons() == {
        "random_only_score": "no excerpts to score",
        "rsquared": "non-finite simulated activations (calibration)",
        "absolute_dev_explained": "non-finite simulated activations (calibration)",
    }
    every = SimulationResult(replace(partial_scores(), **{n: Score(0.5) for n in SCORE_NAMES}), Score(0.1))
    assert every.reasons() == {}
    unscored = SimulationResult.unscored("not simulated").reasons()
    assert unscored == dict.fromkeys([*SCORE_NAMES, "null_score"], "not simulated")


def test_a_null_score_without_a_reason_is_refused_not_published() -> None:
    with pytest.raises(AssertionError, match="null scores without a reason: null_score"):
        SimulationResult(partial_scores(), Score(None)).reasons()


def test_the_scores_table_carries_the_reasons_and_its_suite_checks_them() -> None:
    records = neuron_that_fires_on(" of")
    without_random = replace(records, records=tuple(r for r in records.records if r.kind != "random"))
    rows = [{"explanation_id": 0, "explanation": "the word of", "failure_reason": None}]
    scorer = SimulationScorer(ScriptedBackend(), "all-at-once")
    outcome = score_neuron([scorer], without_random, rows, partner_of(records))
    table = contract.layer_tables(3, [outcome])["scores"]
    assert table.schema.equals(contract.SCORES_SCHEMA)
    [row] = table.to_pylist()
    assert row["random_only_score"] is None and row["top_and_random_score"] is not None
    reasons = json.loads(row["score_reasons"])
    assert reasons["random_only_score"] == "no excerpts to score"
    # every other null score column is named too: the scorers that did not run, the embedding's
    # and the baseline's (the partner's records were given: its null is set)
    assert set(reasons) == {name for name in contract.REASONED_COLUMNS if row[name] is None}
    assert reasons["detection_auc"] == "not run (--scorers without detection)"
    assert scores_frame(table)["score_reasons_complete"].all()
    index = table.schema.get_field_index("score_reasons")
    broken = table.set_column(index, table.schema.field(index), pa.array([None], pa.string()))
    assert not scores_frame(broken)["score_reasons_complete"].all()


class CharTokenizer:
    """One id per character; the chat template joins the messages."""

    pad_token_id = eos_token_id = 0

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def apply_chat_template(self, messages: list[dict[str, str]], **kwargs: Any) -> str:
        return "\n".join(m["content"] for m in messages)


def backend_without_digit_mass_at(at: tuple[int, int] | None) -> LocalBackend:
    """A local backend on a fake model: even digit probabilities, but none at read position `at`
    (excerpt, token): a softmax that underflowed there."""
    backend = LocalBackend.__new__(LocalBackend)
    backend.device, backend.batch_size, backend.line_passes, backend.usage = "cpu", 8, 4, Usage()
    backend._model, backend._tokenizer = object(), CharTokenizer()

    def probabilities(
        prefix: list[int], rows: list[tuple[list[int], list[int]]], candidates: list[int]
    ) -> list[torch.Tensor]:
        found = [torch.full((len(positions), len(candidates)), 0.05) for _, positions in rows]
        if at is not None:
            found[at[0]][at[1]] = 0.0
        return found

    backend._candidate_probabilities = probabilities  # type: ignore[method-assign]
    return backend


@pytest.mark.parametrize("prompt", [all_at_once_prompt("years.", 9), line_by_line_prompt("years.", 9)])
def test_a_local_readout_with_no_digit_mass_fails_with_a_reason(prompt: Any) -> None:
    readout = backend_without_digit_mass_at((1, 2)).read_digits(prompt, [[" a", " b"], [" c", " d", " e"]])
    assert readout.failure == "excerpt 1 token 2: no probability on the digits"
    assert readout.expected == ()
    fine = backend_without_digit_mass_at(None).read_digits(prompt, [[], [" c"]])
    assert fine.failure is None and fine.expected == ((), (pytest.approx(4.5),))


def test_the_published_row_keeps_the_reasons_of_the_scores_it_carries() -> None:
    reasons = json.dumps({"random_only_score": "no excerpts to score", "rsquared": "true activations are all zero"})
    assert json.loads(published.published_reasons(reasons) or "") == {"random_only_score": "no excerpts to score"}
    assert published.published_reasons(json.dumps({"rsquared": "true activations are all zero"})) is None
    assert published.published_reasons(None) is None
    assert "score_reasons" in published.SCHEMA.names
