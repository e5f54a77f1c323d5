"""From a neuron's records to explanations and scores: the pure steps of both LLM stages.

Records arrive as `NeuronRecords` (tokens joined from the corpus); answers come back from a
backend as texts or failures; what leaves is rows for the dataset contracts.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from neuronatlas.core.llm import Generation, GenerationParams, LLMBackend, parallel_requests
from neuronatlas.core.parsing import Failure, parse_explanation, parse_json_simulation
from neuronatlas.core.prompts import ActivationRecord, explainer_prompt, records_max
from neuronatlas.core.scoring import ExplanationScores, ScoredExcerpt, score_explanation

SCORED_SPLITS = ("calibration", "valid", "test")
CONTROL_SPLIT = "valid"


@dataclass(frozen=True)
class Record:
    """One kept excerpt of a neuron."""

    kind: str
    """top | random (bottom records are not explained or scored)."""
    split: str
    rank: int
    sequence_id: int
    tokens: tuple[str, ...]
    """Decoded tokens of the excerpt."""
    activations: np.ndarray
    """(T,) float32 raw activation per token."""


@dataclass(frozen=True)
class NeuronRecords:
    layer: int
    neuron: int
    records: tuple[Record, ...]

    def select(self, kinds: Sequence[str], splits: Sequence[str]) -> list[Record]:
        """Records of these kinds and splits, top before random, then by rank."""
        chosen = [r for r in self.records if r.kind in kinds and r.split in splits]
        return sorted(chosen, key=lambda r: (r.kind != "top", r.rank))

    def train(self) -> list[ActivationRecord]:
        """What the explainer sees: the top records of the train split."""
        return [ActivationRecord(r.tokens, r.activations.tolist()) for r in self.select(["top"], ["train"])]

    def scored(self) -> list[Record]:
        """What the simulator is scored on: top and random records of calibration, valid, test."""
        return self.select(["top", "random"], SCORED_SPLITS)

    def control(self) -> list[Record]:
        """What another neuron's explanation is scored on in the permutation control."""
        return self.select(["top", "random"], [CONTROL_SPLIT])


def unexplainable(records: NeuronRecords) -> str | None:
    """Why a neuron cannot be explained from its train records, if it cannot."""
    train = records.train()
    if not train:
        return "no train records"
    if not all(math.isfinite(a) for r in train for a in r.activations):
        return "non-finite activations in the train records"
    if records_max(train) <= 0:
        return "no positive activation in the train records"
    return None


@dataclass(frozen=True)
class ExplanationRow:
    explanation_id: int
    explanation: str | None
    failure_reason: str | None
    answer: str | None
    """The model's raw answer (None when there was none)."""


def explanation_rows(texts: Sequence[str], failure: str | None, samples: int) -> list[ExplanationRow]:
    """One row per requested sample: the parsed explanation, or null with the reason."""
    if failure is not None:
        return [ExplanationRow(i, None, failure, None) for i in range(samples)]
    rows = []
    for index in range(samples):
        if index >= len(texts):
            rows.append(ExplanationRow(index, None, "no answer for this sample", None))
            continue
        parsed = parse_explanation(texts[index])
        if isinstance(parsed, Failure):
            rows.append(ExplanationRow(index, None, parsed.reason, texts[index]))
        else:
            rows.append(ExplanationRow(index, parsed, None, texts[index]))
    return rows


@dataclass(frozen=True)
class ExplainedNeuron:
    """A neuron's explanation rows, and what its prompt and answers cost."""

    neuron: int
    rows: list[ExplanationRow]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retryable: int = 0
    """Samples whose LLM call itself failed (a rerun asks again; answers that did not parse are final)."""


CHUNK = 8
"""Neurons per backend call at least (a cached backend stores answers as each chunk returns);
more where an API backend keeps more requests in flight (`parallel_requests`)."""


def explain_records(
    llm: LLMBackend,
    neurons: Sequence[NeuronRecords],
    params: GenerationParams,
    prompt_format: str,
    scale: int,
    on_chunk: Callable[[int], None] = lambda done: None,
) -> list[ExplainedNeuron]:
    """`params.n` explanations of each neuron from its train records, asked `CHUNK` neurons at a
    time (or enough to fill an API backend's concurrency limit); a neuron that cannot be explained
    gets null rows with the reason, and no request."""
    explained = []
    size = max(CHUNK, parallel_requests(llm) // max(params.n, 1))
    for start in range(0, len(neurons), size):
        chunk = neurons[start : start + size]
        reasons = [unexplainable(neuron) for neuron in chunk]
        asked = [neuron for neuron, reason in zip(chunk, reasons, strict=True) if reason is None]
        prompts = [explainer_prompt(neuron.train(), prompt_format, scale) for neuron in asked]  # type: ignore[arg-type]
        answers = iter(llm.generate(prompts, params) if prompts else [])
        for neuron, reason in zip(chunk, reasons, strict=True):
            answer: Generation | None = next(answers) if reason is None else None
            failure = reason or (answer.failure if answer else None)
            explained.append(
                ExplainedNeuron(
                    neuron.neuron,
                    explanation_rows(answer.texts if answer else (), failure, params.n),
                    answer.prompt_tokens if answer else 0,
                    answer.completion_tokens if answer else 0,
                    params.n if answer is not None and answer.failure is not None else 0,
                )
            )
        on_chunk(start + len(chunk))
    return explained


@dataclass(frozen=True)
class Simulation:
    """A simulator's output on one excerpt."""

    values: np.ndarray | None
    """(T,) predicted activation per token on the 0..scale scale; None when it failed."""
    digit_mass: np.ndarray | None = None
    """(T,) probability on the digit tokens at each read position (log-prob simulators only)."""
    failure: str | None = None
    retryable: bool = False
    """The LLM call itself failed (a rerun asks again); False for answers that did not parse."""


def json_simulations(
    answers: Sequence[tuple[str | None, str | None]], groups: Sequence[Sequence[Record]], scale: int
) -> list[Simulation]:
    """Parse JSON simulator answers ((text, failure) per request, each request the excerpts of one
    group) with strict token alignment: one simulation per excerpt, in the groups' order."""
    simulations = []
    for (text, failure), group in zip(answers, groups, strict=True):
        simulations += _request_simulations(text, failure, group, scale)
    return simulations


def _request_simulations(
    text: str | None, failure: str | None, group: Sequence[Record], scale: int
) -> list[Simulation]:
    """The simulations of one request's excerpts: a failed call fails each (retryable), an
    unusable answer each, else every excerpt has its values or its own failure."""
    if failure is not None or text is None:
        return [Simulation(None, failure=failure or "no answer", retryable=True) for _ in group]
    parsed = parse_json_simulation(text, [record.tokens for record in group], scale)
    if isinstance(parsed, Failure):
        return [Simulation(None, failure=parsed.reason) for _ in group]
    return [
        Simulation(None, failure=values.reason)
        if isinstance(values, Failure)
        else Simulation(np.asarray(values, dtype=np.float32))
        for values in parsed
    ]


def score(excerpts: Sequence[Record], simulations: Sequence[Simulation]) -> ExplanationScores:
    """The scores of `excerpts` from their simulations, one each in order (any other count scores
    nothing, with the reason)."""
    if len(simulations) != len(excerpts):
        return ExplanationScores.unscored(f"{len(simulations)} simulations for {len(excerpts)} excerpts")
    return score_explanation(
        [
            ScoredExcerpt(record.split, record.kind, record.activations, simulation.values)
            for record, simulation in zip(excerpts, simulations, strict=True)
        ]
    )
