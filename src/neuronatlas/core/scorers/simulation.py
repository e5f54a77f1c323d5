"""The paper's scorer: simulate the neuron's activations from the explanation alone, then
correlate them with the real ones (`core/scoring.py`).

The simulator reads digit probabilities off the prompt where it can (line by line or all at
once: in-process models) and otherwise answers in JSON, up to `JSON_EXCERPTS_PER_REQUEST` excerpts
per request. Each explanation is simulated on its neuron's calibration, valid and test records
and, for the permutation null, on its partner's valid records.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from neuronatlas.core.explain import SCORED_SPLITS, NeuronRecords, Record, Simulation, json_simulations, score
from neuronatlas.core.llm import GenerationParams, LLMBackend
from neuronatlas.core.prompts import (
    JSON_EXCERPTS_PER_REQUEST,
    all_at_once_prompt,
    json_simulation_prompt,
    line_by_line_prompt,
)
from neuronatlas.core.scorers.base import NO_PARTNER
from neuronatlas.core.scoring import SCORE_NAMES, ExplanationScores, Score, null_reasons, pooled_correlation

METHODS = ("auto", "line-by-line", "all-at-once", "json")
READS_DIGITS = ("line-by-line", "all-at-once")
LOCAL_METHOD = "line-by-line"
"""What `auto` picks for simulators that read prompt probabilities: the method that listens."""
NOT_SIMULATED = "not simulated (--scorers without simulation)"


def simulated_splits(value: str) -> tuple[str, ...]:
    """`--splits`: some of calibration, valid, test, always with valid (the headline score's)."""
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not names or any(name not in SCORED_SPLITS for name in names):
        raise ValueError(f"expected a comma-separated list of {', '.join(SCORED_SPLITS)}")
    if "valid" not in names:
        raise ValueError("valid is needed: the headline score and its null are computed on it")
    return tuple(split for split in SCORED_SPLITS if split in names)


def choose_method(method: str, reads_digits: bool) -> str:
    """`auto` resolved for a simulator; a method it cannot run is a ValueError."""
    if method not in METHODS:
        raise ValueError(f"expected one of {', '.join(METHODS)}")
    if method == "auto":
        return LOCAL_METHOD if reads_digits else "json"
    if method in READS_DIGITS and not reads_digits:
        raise ValueError("this simulator cannot read prompt probabilities; use --method json")
    return method


@dataclass(frozen=True)
class SimulationResult:
    scores: ExplanationScores
    null: Score
    excerpts: list[Record] = field(default_factory=list)
    simulations: list[Simulation] = field(default_factory=list)
    control_excerpts: list[Record] = field(default_factory=list)
    control_simulations: list[Simulation] = field(default_factory=list)

    @property
    def real(self) -> Score:
        return self.scores.top_and_random_score

    @property
    def retryable(self) -> int:
        """Simulations whose LLM call failed (a rerun asks again)."""
        return sum(s.retryable for s in self.simulations + self.control_simulations)

    def columns(self) -> dict[str, Any]:
        masses = [s.digit_mass for s in self.simulations if s.digit_mass is not None]
        return {
            **{name: getattr(self.scores, name).value for name in SCORE_NAMES},
            "null_score": self.null.value,
            "failure_reason": self.scores.failure_reason,
            "null_failure_reason": self.null.reason,
            "mean_digit_mass": float(np.mean(np.concatenate(masses))) if masses else None,
        }

    def reasons(self) -> dict[str, str]:
        return self.scores.reasons() | null_reasons({"null_score": self.null})

    @classmethod
    def unscored(cls, reason: str) -> "SimulationResult":
        """Every column null, for `reason`."""
        return cls(ExplanationScores.unscored(reason), Score(None, reason))


def simulate(
    llm: LLMBackend, explanation: str, excerpts: Sequence[Record], method: str, scale: int, placeholder: str
) -> list[Simulation]:
    """Simulated activations of `excerpts` from `explanation` alone."""
    if not excerpts:
        return []
    tokens = [record.tokens for record in excerpts]
    if method in READS_DIGITS:
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
    size = JSON_EXCERPTS_PER_REQUEST
    groups = [excerpts[start : start + size] for start in range(0, len(excerpts), size)]
    prompts = [json_simulation_prompt(explanation, [record.tokens for record in group], scale) for group in groups]
    max_tokens = max(24 * sum(len(record.tokens) for record in group) + 32 * len(group) for group in groups)
    params = GenerationParams(n=1, temperature=0.0, max_tokens=max_tokens, seed=0)
    answers = llm.generate(prompts, params)
    pairs = [(answer.texts[0] if answer.texts else None, answer.failure) for answer in answers]
    return json_simulations(pairs, groups, scale)


class SimulationScorer:
    name = "simulation"
    columns = ("top_and_random_score", "null_score")

    def __init__(
        self,
        llm: LLMBackend,
        method: str,
        scale: int = 9,
        placeholder: str = "unknown",
        splits: Sequence[str] = SCORED_SPLITS,
    ) -> None:
        """`splits`: those simulated (always valid: the headline score's; the others' scores are
        null, "not simulated", when left out)."""
        self.llm, self.method, self.scale, self.placeholder = llm, method, scale, placeholder
        self.splits = tuple(splits)

    def score(self, explanation: str, records: NeuronRecords, partner: NeuronRecords | None) -> SimulationResult:
        """One batch of simulations: the neuron's scored records, then the partner's control ones."""
        excerpts = records.select(["top", "random"], self.splits)
        control_excerpts = partner.control() if partner is not None else []
        simulations = simulate(
            self.llm, explanation, excerpts + control_excerpts, self.method, self.scale, self.placeholder
        )
        own, others = simulations[: len(excerpts)], simulations[len(excerpts) :]
        return SimulationResult(
            self._not_simulated(score(excerpts, own)),
            _null_score(control_excerpts, others, partner),
            excerpts,
            own,
            control_excerpts,
            others,
        )

    def _not_simulated(self, scores: ExplanationScores) -> ExplanationScores:
        """The scores of splits left out, null with that reason."""
        left_out = {
            "calibration": ("calibration_score", "rsquared", "absolute_dev_explained"),
            "test": ("test_score",),
        }
        nulls: dict[str, Any] = {
            name: Score(None, f"{split} records not simulated (--splits {','.join(self.splits)})")
            for split, names in left_out.items()
            if split not in self.splits
            for name in names
        }
        return replace(scores, **nulls)


def _null_score(excerpts: list[Record], simulations: list[Simulation], partner: NeuronRecords | None) -> Score:
    if partner is None:
        return Score(None, NO_PARTNER)
    failed = [s for s in simulations if s.values is None]
    if failed:
        return Score(None, f"control simulation failed: {failed[0].failure}")
    return pooled_correlation([r.activations for r in excerpts], [s.values for s in simulations])  # type: ignore[misc]
