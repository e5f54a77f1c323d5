"""Steps of the `simulate_and_score` flow: simulate one neuron's explanations, turn the outcomes of a
layer into the three tables, and summarise a run's scores."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from neuronatlas.adapters.llm import GenerationParams, LLMBackend
from neuronatlas.core.explain import NeuronRecords, Record, Simulation, json_simulations, score
from neuronatlas.core.prompts import all_at_once_prompt, json_simulation_prompt
from neuronatlas.core.scoring import ExplanationScores, Score, best_explanation, pooled_correlation
from neuronatlas.datasets import explanations as contract
from neuronatlas.tasks.explain import float_list


@dataclass
class ExplanationOutcome:
    explanation_id: int
    explanation: str | None
    scores: ExplanationScores
    null: Score
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


def simulate(
    llm: LLMBackend, explanation: str, excerpts: Sequence[Record], method: str, scale: int, placeholder: str
) -> list[Simulation]:
    """Simulated activations of `excerpts` from `explanation` alone."""
    if not excerpts:
        return []
    tokens = [record.tokens for record in excerpts]
    if method == "all-at-once":
        readout = llm.read_digits(all_at_once_prompt(explanation, scale, placeholder), tokens)
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


def simulate_neuron(
    llm: LLMBackend,
    records: NeuronRecords,
    explanations: list[dict[str, Any]],
    control: NeuronRecords | None,
    method: str,
    scale: int,
    placeholder: str,
) -> NeuronOutcome:
    """Simulate and score each explanation of a neuron, and its permutation control."""
    outcomes = []
    for row in explanations:
        text = row["explanation"]
        if text is None:
            reason = f"no explanation: {row['failure_reason']}"
            null = Score(None, reason)
            nulls = ExplanationScores(null, null, null, null, null, null, failure_reason=reason)
            outcomes.append(ExplanationOutcome(row["explanation_id"], None, nulls, null))
            continue
        excerpts = records.scored()
        control_excerpts = control.control() if control is not None else []
        simulations = simulate(llm, text, excerpts + control_excerpts, method, scale, placeholder)
        own, others = simulations[: len(excerpts)], simulations[len(excerpts) :]
        outcomes.append(
            ExplanationOutcome(
                row["explanation_id"],
                text,
                score(excerpts, own),
                _null_score(control_excerpts, others, control),
                excerpts,
                own,
                control_excerpts,
                others,
            )
        )
    control_of = (control.layer, control.neuron) if control is not None else None
    return NeuronOutcome(records.layer, records.neuron, control_of, outcomes)


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
        best = best_explanation([e.scores.top_and_random_score.value for e in neuron.explanations])
        for index, outcome in enumerate(neuron.explanations):
            key = {"layer": layer, "neuron": neuron.neuron, "explanation_id": outcome.explanation_id}
            simulations += _simulation_rows(key, outcome.excerpts, outcome.simulations)
            if neuron.control_of is not None:
                extra = {"record_layer": neuron.control_of[0], "record_neuron": neuron.control_of[1]}
                control += _simulation_rows({**key, **extra}, outcome.control_excerpts, outcome.control_simulations)
            scores.append(_score_row(key, outcome, neuron.control_of, is_best=index == best))
    return {
        "simulations": pa.Table.from_pylist(simulations, schema=contract.SIMULATIONS_SCHEMA),
        "control": pa.Table.from_pylist(control, schema=contract.CONTROL_SCHEMA),
        "scores": pa.Table.from_pylist(scores, schema=contract.SCORES_SCHEMA),
    }


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
    key: dict[str, Any], outcome: ExplanationOutcome, control_of: tuple[int, int] | None, is_best: bool
) -> dict[str, Any]:
    scores = outcome.scores
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
        "is_best": is_best,
    }


def summary(scores: pd.DataFrame) -> dict[str, Any]:
    """The run's figures: means of every score over scored explanations (and of the best per
    neuron), the permutation null and the paired gap, failures."""

    def mean(values: pd.Series) -> float | None:
        values = values.dropna()
        return round(float(values.mean()), 4) if len(values) else None

    best = scores[scores["is_best"]]
    paired = scores.dropna(subset=["top_and_random_score", "null_score"])
    gap = paired["top_and_random_score"] - paired["null_score"]
    return {
        "neurons": int(scores[["layer", "neuron"]].drop_duplicates().shape[0]),
        "explanations": len(scores),
        "scored": int(scores["top_and_random_score"].notna().sum()),
        "failed": int(scores["failure_reason"].notna().sum()),
        "failures": {str(k): int(v) for k, v in scores["failure_reason"].dropna().value_counts().items()},
        "mean_top_and_random": mean(scores["top_and_random_score"]),
        "mean_random_only": mean(scores["random_only_score"]),
        "mean_best_top_and_random": mean(best["top_and_random_score"]),
        "mean_best_test": mean(best["test_score"]),
        "mean_null": mean(scores["null_score"]),
        "null_quantiles": _quantiles(scores["null_score"]),
        "mean_gap_real_minus_null": round(float(gap.mean()), 4) if len(gap) else None,
        "real_above_null": f"{int((gap > 0).sum())} of {len(gap)}",
        "mean_digit_mass": mean(scores["mean_digit_mass"]),
    }


def _quantiles(values: pd.Series) -> dict[str, float] | None:
    """5th, 50th and 95th percentiles of the permutation-null distribution."""
    values = values.dropna()
    if not len(values):
        return None
    return {f"p{q}": round(float(values.quantile(q / 100)), 4) for q in (5, 50, 95)}
