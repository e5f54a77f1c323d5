"""Steps of the `simulate_and_score` flow: simulate one neuron's explanations, turn the outcomes of a
layer into the three tables, and summarise a run's scores."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from neuronatlas.adapters.embedding import Encoder
from neuronatlas.adapters.llm import GenerationParams, LLMBackend
from neuronatlas.core.excerpts import Spans, auc, fuzzed_spans, neuron_spans, selection_spans
from neuronatlas.core.explain import NeuronRecords, Record, Simulation, json_simulations, score
from neuronatlas.core.prompts import (
    all_at_once_prompt,
    detection_prompt,
    fuzzing_prompt,
    json_simulation_prompt,
    line_by_line_prompt,
)
from neuronatlas.core.scoring import ExplanationScores, Score, best_explanation, pooled_correlation
from neuronatlas.core.validity import (
    MIN_GAP_NEURONS,
    Gap,
    explanation_sensitivity,
    lookup_null,
    paired_gap,
    token_lookup,
)
from neuronatlas.datasets import explanations as contract
from neuronatlas.tasks.explain import float_list

SCORERS = ("simulation", "embedding", "detection", "fuzzing")
"""What `--scorers` can name. The token-lookup baseline needs no model and always runs."""
SCORER_VERSION = "2"
"""Bumped whenever a scorer's spans, prompts or arithmetic change: part of every score run's id,
so a rerun after such a change scores afresh (LLM answers still come from the cache)."""
NOT_SIMULATED = "not simulated (--scorers without simulation)"
NOT_EMBEDDED = Score(None, "not embedded (--scorers without embedding)")


class SpanScorer:
    """Embedding AUC of an explanation on a neuron's spans (METHOD.md §8), with the spans'
    vectors computed once per neuron."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self._vectors: dict[tuple[int, int, str], tuple[Spans, np.ndarray]] = {}
        self._query: tuple[str, np.ndarray] | None = None
        """The last explanation's vector (each is scored on its neuron, its partner, and for selection)."""

    def _spans(self, records: NeuronRecords, purpose: str) -> tuple[Spans, np.ndarray]:
        key = (records.layer, records.neuron, purpose)
        if key not in self._vectors:
            spans = neuron_spans(records) if purpose == "score" else selection_spans(records)
            self._vectors[key] = (spans, self.encoder.encode(spans.texts()))
        return self._vectors[key]

    def score(self, explanation: str, records: NeuronRecords | None, purpose: str = "score") -> Score:
        """AUC of cosine(explanation, span) for activating vs quiet spans; null with the reason
        when either kind of span is missing."""
        if records is None:
            return Score(None, "permutation control needs at least 2 neurons")
        spans, vectors = self._spans(records, purpose)
        if not spans.positive or not spans.negative:
            which = "activating" if not spans.positive else "quiet"
            return Score(None, f"no {which} spans in layer {records.layer} neuron {records.neuron}'s records")
        if self._query is None or self._query[0] != explanation:
            self._query = (explanation, self.encoder.encode([explanation])[0])
        return Score(auc(vectors @ self._query[1], spans.labels), None)


class ChoiceScorer:
    """Detection and fuzzing (METHOD.md §8; delphi): the simulator's Yes/No probabilities on
    spans, normalised to P(Yes | Yes or No), ranked by AUC."""

    def __init__(self, llm: LLMBackend) -> None:
        self.llm = llm

    def score(self, scorer: str, explanation: str, records: NeuronRecords | None) -> Score:
        if records is None:
            return Score(None, "permutation control needs at least 2 neurons")
        if scorer == "detection":
            spans = neuron_spans(records)
            texts, labels = spans.texts(), spans.labels
            prompt = detection_prompt(explanation)
        else:
            seed = 1_000_003 * (records.layer + 2) + records.neuron  # the same decoys for every explanation
            texts, labels = fuzzed_spans(records, np.random.default_rng(seed))
            prompt = fuzzing_prompt(explanation)
        if not labels.any() or labels.all():
            return Score(None, f"no {scorer} spans of both kinds in layer {records.layer} neuron {records.neuron}")
        readout = self.llm.read_choices(prompt, texts)
        if readout.failure is not None:
            return Score(None, readout.failure)
        answers = np.array(readout.probabilities, dtype=np.float64)
        yes = answers[:, 0] / np.maximum(answers.sum(axis=1), 1e-12)
        return Score(auc(yes, labels), None)


@dataclass
class ExplanationOutcome:
    explanation_id: int
    explanation: str | None
    scores: ExplanationScores
    null: Score
    embedding: Score = NOT_EMBEDDED
    embedding_null: Score = NOT_EMBEDDED
    selection: Score = NOT_EMBEDDED
    choices: dict[str, tuple[Score, Score]] = field(default_factory=dict)
    """Detection / fuzzing: (real, null) when that scorer ran."""
    excerpts: list[Record] = field(default_factory=list)
    simulations: list[Simulation] = field(default_factory=list)
    control_excerpts: list[Record] = field(default_factory=list)
    control_simulations: list[Simulation] = field(default_factory=list)


@dataclass
class NeuronOutcome:
    layer: int
    neuron: int
    control_of: tuple[int, int] | None
    """The neuron whose records the control used."""
    explanations: list[ExplanationOutcome]
    lookup: Score
    lookup_null: Score


def simulate(
    llm: LLMBackend, explanation: str, excerpts: Sequence[Record], method: str, scale: int, placeholder: str
) -> list[Simulation]:
    """Simulated activations of `excerpts` from `explanation` alone."""
    if not excerpts:
        return []
    tokens = [record.tokens for record in excerpts]
    if method in ("all-at-once", "line-by-line"):
        prompt = (
            all_at_once_prompt(explanation, scale, placeholder)
            if method == "all-at-once"
            else line_by_line_prompt(explanation, scale)
        )
        readout = llm.read_digits(prompt, tokens)
        if readout.failure is not None:
            return [Simulation(None, failure=readout.failure, retryable=True) for _ in excerpts]
        return [
            Simulation(np.asarray(values, dtype=np.float32), np.asarray(mass, dtype=np.float32))
            for values, mass in zip(readout.expected, readout.digit_mass, strict=True)
        ]
    prompts = [json_simulation_prompt(explanation, excerpt, scale) for excerpt in tokens]
    longest = max(len(excerpt) for excerpt in tokens)
    params = GenerationParams(n=1, temperature=0.0, max_tokens=24 * longest + 32, seed=0)
    answers = llm.generate(prompts, params)
    pairs = [(answer.texts[0] if answer.texts else None, answer.failure) for answer in answers]
    return json_simulations(pairs, excerpts, scale)


@dataclass(frozen=True)
class Scorers:
    """What scores a run's explanations (None: that scorer is off)."""

    simulator: LLMBackend | None = None
    spans: SpanScorer | None = None
    choices: ChoiceScorer | None = None
    choice_names: tuple[str, ...] = ()
    """Which of detection / fuzzing `choices` runs."""


def simulate_neuron(
    scorers: Scorers,
    records: NeuronRecords,
    explanations: list[dict[str, Any]],
    control: NeuronRecords | None,
    method: str,
    scale: int,
    placeholder: str,
) -> NeuronOutcome:
    """Score each explanation of a neuron with the chosen scorers, and the same explanation on its
    permutation-control partner."""
    outcomes = []
    for row in explanations:
        text = row["explanation"]
        if text is None:
            reason = f"no explanation: {row['failure_reason']}"
            null = Score(None, reason)
            nulls = ExplanationScores(null, null, null, null, null, null, failure_reason=reason)
            outcomes.append(ExplanationOutcome(row["explanation_id"], None, nulls, null, null, null, null))
            continue
        outcome = _simulated(
            scorers.simulator, row["explanation_id"], text, records, control, method, scale, placeholder
        )
        if scorers.spans is not None:
            outcome.embedding = scorers.spans.score(text, records)
            outcome.embedding_null = scorers.spans.score(text, control)
            outcome.selection = scorers.spans.score(text, records, purpose="select")
        if scorers.choices is not None:
            for name in scorers.choice_names:
                outcome.choices[name] = (
                    scorers.choices.score(name, text, records),
                    scorers.choices.score(name, text, control),
                )
        outcomes.append(outcome)
    control_of = (control.layer, control.neuron) if control is not None else None
    baseline = token_lookup(records).scores.top_and_random_score
    baseline_null = lookup_null(records, control) if control is not None else Score(None, "no control partner")
    return NeuronOutcome(records.layer, records.neuron, control_of, outcomes, baseline, baseline_null)


def _simulated(
    llm: LLMBackend | None,
    explanation_id: int,
    text: str,
    records: NeuronRecords,
    control: NeuronRecords | None,
    method: str,
    scale: int,
    placeholder: str,
) -> ExplanationOutcome:
    if llm is None:
        null = Score(None, NOT_SIMULATED)
        nulls = ExplanationScores(null, null, null, null, null, null, failure_reason=NOT_SIMULATED)
        return ExplanationOutcome(explanation_id, text, nulls, null)
    excerpts = records.scored()
    control_excerpts = control.control() if control is not None else []
    simulations = simulate(llm, text, excerpts + control_excerpts, method, scale, placeholder)
    own, others = simulations[: len(excerpts)], simulations[len(excerpts) :]
    return ExplanationOutcome(
        explanation_id,
        text,
        score(excerpts, own),
        _null_score(control_excerpts, others, control),
        excerpts=excerpts,
        simulations=own,
        control_excerpts=control_excerpts,
        control_simulations=others,
    )


def _null_score(excerpts: list[Record], simulations: list[Simulation], control: NeuronRecords | None) -> Score:
    if control is None:
        return Score(None, "permutation control needs at least 2 neurons")
    failed = [s for s in simulations if s.values is None]
    if failed:
        return Score(None, f"control simulation failed: {failed[0].failure}")
    return pooled_correlation([r.activations for r in excerpts], [s.values for s in simulations])  # type: ignore[misc]


def retryable_failures(outcomes: list[NeuronOutcome]) -> int:
    """Simulations of the layer whose LLM call failed (a rerun retries them)."""
    return sum(
        simulation.retryable
        for neuron in outcomes
        for outcome in neuron.explanations
        for simulation in outcome.simulations + outcome.control_simulations
    )


def layer_tables(layer: int, outcomes: list[NeuronOutcome]) -> dict[str, pa.Table]:
    """The simulations, control and scores tables of one layer (scores last: it marks it done)."""
    simulations: list[dict[str, Any]] = []
    control: list[dict[str, Any]] = []
    scores: list[dict[str, Any]] = []
    for neuron in outcomes:
        best = _best(neuron.explanations)
        for index, outcome in enumerate(neuron.explanations):
            key = {"layer": layer, "neuron": neuron.neuron, "explanation_id": outcome.explanation_id}
            simulations += _simulation_rows(key, outcome.excerpts, outcome.simulations)
            if neuron.control_of is not None:
                extra = {"record_layer": neuron.control_of[0], "record_neuron": neuron.control_of[1]}
                control += _simulation_rows({**key, **extra}, outcome.control_excerpts, outcome.control_simulations)
            scores.append(_score_row(key, outcome, neuron, is_best=index == best))
    return {
        "simulations": pa.Table.from_pylist(simulations, schema=contract.SIMULATIONS_SCHEMA),
        "control": pa.Table.from_pylist(control, schema=contract.CONTROL_SCHEMA),
        "scores": pa.Table.from_pylist(scores, schema=contract.SCORES_SCHEMA),
    }


def _choice_columns(outcome: ExplanationOutcome) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for name in ("detection", "fuzzing"):
        real, null = outcome.choices.get(name, (Score(None, f"not run (--scorers without {name})"),) * 2)
        if outcome.explanation is None:
            real = null = Score(None, "no explanation")
        columns |= {f"{name}_auc": real.value, f"{name}_null": null.value, f"{name}_failure_reason": real.reason}
    return columns


def _best(explanations: list[ExplanationOutcome]) -> int | None:
    """The best sample: by the embedding AUC on train/calibration spans when there is one (never
    valid or test), else by the simulation's top-and-random score."""
    selection = [e.selection.value for e in explanations]
    if any(value is not None for value in selection):
        return best_explanation(selection)
    return best_explanation([e.scores.top_and_random_score.value for e in explanations])


def _simulation_rows(
    key: dict[str, Any], excerpts: list[Record], simulations: list[Simulation]
) -> list[dict[str, Any]]:
    return [
        {
            **key,
            "sequence_id": record.sequence_id,
            "split": record.split,
            "kind": record.kind,
            "true_activations": float_list(record.activations),
            "simulated_activations": float_list(simulation.values),
            "digit_mass": float_list(simulation.digit_mass),
            "failure_reason": simulation.failure,
        }
        for record, simulation in zip(excerpts, simulations, strict=True)
    ]


def _score_row(
    key: dict[str, Any], outcome: ExplanationOutcome, neuron: NeuronOutcome, is_best: bool
) -> dict[str, Any]:
    scores = outcome.scores
    control_of = neuron.control_of
    masses = [s.digit_mass for s in outcome.simulations if s.digit_mass is not None]
    return {
        **key,
        "explanation": outcome.explanation,
        **{name: getattr(scores, name).value for name in contract.SCORE_COLUMNS if name != "null_score"},
        "null_score": outcome.null.value,
        "failure_reason": scores.failure_reason,
        "null_failure_reason": outcome.null.reason,
        "null_layer": control_of[0] if control_of else None,
        "null_neuron": control_of[1] if control_of else None,
        "mean_digit_mass": float(np.mean(np.concatenate(masses))) if masses else None,
        "embedding_auc": outcome.embedding.value,
        "embedding_null": outcome.embedding_null.value,
        "embedding_failure_reason": outcome.embedding.reason,
        "embedding_null_failure_reason": outcome.embedding_null.reason,
        "selection_auc": outcome.selection.value,
        **_choice_columns(outcome),
        "lookup_score": neuron.lookup.value,
        "lookup_null": neuron.lookup_null.value,
        "is_best": is_best,
    }


SCORER_COLUMNS = {
    "simulation": ("top_and_random_score", "null_score"),
    "embedding": ("embedding_auc", "embedding_null"),
    "detection": ("detection_auc", "detection_null"),
    "fuzzing": ("fuzzing_auc", "fuzzing_null"),
    "lookup baseline": ("lookup_score", "lookup_null"),
}
"""Each scorer's real and permutation-null columns in the scores table."""


def summary(scores: pd.DataFrame, sensitivity: float | None = None, seed: int = 0) -> dict[str, Any]:
    """The run's figures: means of every score over scored explanations (and of the best per
    neuron), failures, and per scorer the real and permutation-null means with the paired gap and
    its bootstrap 95% interval, for the best sample of each neuron (what gets published) and over
    all samples; a gap whose interval reaches 0, or over fewer than `MIN_GAP_NEURONS` neurons, is
    flagged not significant."""

    def mean(values: pd.Series) -> float | None:
        values = values.dropna()
        return round(float(values.mean()), 4) if len(values) else None

    best = scores[scores["is_best"]]
    failed = scores["failure_reason"].notna() & (scores["failure_reason"] != NOT_SIMULATED)
    return {
        "neurons": int(scores[["layer", "neuron"]].drop_duplicates().shape[0]),
        "explanations": len(scores),
        "scored": int(scores["top_and_random_score"].notna().sum()),
        "failed": int(failed.sum()),
        "failures": {str(k): int(v) for k, v in scores.loc[failed, "failure_reason"].value_counts().items()},
        "mean_top_and_random": mean(scores["top_and_random_score"]),
        "mean_random_only": mean(scores["random_only_score"]),
        "mean_best_top_and_random": mean(best["top_and_random_score"]),
        "mean_best_test": mean(best["test_score"]),
        "mean_best_embedding_auc": mean(best["embedding_auc"]),
        "mean_null": mean(scores["null_score"]),
        "null_quantiles": _quantiles(scores["null_score"]),
        "mean_digit_mass": mean(scores["mean_digit_mass"]),
        "explanation_sensitivity": None if sensitivity is None else round(sensitivity, 4),
        "scorers": {name: scorer_gap(best, name, seed) for name in SCORER_COLUMNS},
        "scorers_all_samples": {name: scorer_gap(scores, name, seed) for name in SCORER_COLUMNS},
    }


def scorer_gap(scores: pd.DataFrame, scorer: str, seed: int = 0) -> dict[str, Any] | None:
    """Real vs permutation null of one scorer over the neurons with paired rows (each neuron's
    samples averaged; n counts neurons); None when no row has both."""
    real, null = SCORER_COLUMNS[scorer]
    paired = scores.dropna(subset=[real, null])
    if paired.empty:
        return None
    # a neuron's samples are not independent: average them, then resample neurons
    per_neuron = paired.groupby(["layer", "neuron"])[[real, null]].mean()
    gap: Gap = paired_gap(per_neuron[real].tolist(), per_neuron[null].tolist(), np.random.default_rng(seed))
    return {
        "real": round(float(per_neuron[real].mean()), 4),
        "null": round(float(per_neuron[null].mean()), 4),
        "gap": round(gap.mean, 4),
        "ci95": [round(gap.low, 4), round(gap.high, 4)],
        "n": gap.n,
        "real_above_null": int((per_neuron[real] > per_neuron[null]).sum()),
        "significant": bool(gap.low > 0 and gap.n >= MIN_GAP_NEURONS),
    }


def explanation_sensitivity_of(simulations: pd.DataFrame, control: pd.DataFrame) -> float | None:
    """Mean pairwise correlation of the simulations of different explanations on the same
    excerpts: a neuron's samples on its own records, and a partner's explanation (in the control)
    against the neuron's own on its valid records. Near 1: the simulator ignores the explanation."""
    own = simulations.assign(record_layer=simulations["layer"], record_neuron=simulations["neuron"])
    rows = pd.concat([own, control], ignore_index=True).dropna(subset=["simulated_activations"])
    if rows.empty:
        return None
    rows = rows[rows["split"] == "valid"]
    per_group = []
    for _, group in rows.groupby(["record_layer", "record_neuron"]):
        by_explanation = {
            key: dict(zip(part["sequence_id"], part["simulated_activations"], strict=True))
            for key, part in group.groupby(["layer", "neuron", "explanation_id"])
        }
        shared = set.intersection(*(set(values) for values in by_explanation.values()))
        if len(by_explanation) < 2 or not shared:
            continue
        order = sorted(shared)
        value = explanation_sensitivity(
            [[np.asarray(values[s], dtype=np.float64) for s in order] for values in by_explanation.values()]
        )
        if value is not None:
            per_group.append(value)
    return float(np.mean(per_group)) if per_group else None


def _quantiles(values: pd.Series) -> dict[str, float] | None:
    """5th, 50th and 95th percentiles of the permutation-null distribution."""
    values = values.dropna()
    if not len(values):
        return None
    return {f"p{q}": round(float(values.quantile(q / 100)), 4) for q in (5, 50, 95)}
