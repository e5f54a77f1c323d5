"""Scorers: how well an explanation predicts its neuron, each against its permutation null.

Every scorer implements `base.Scorer`; to add one, write its module here and list it in
`SCORERS`. `score_neuron` runs the chosen scorers on each explanation of a neuron, and the
token-lookup baseline (`lookup.py`, no LLM) on the neuron itself.
"""

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from neuronatlas.core.explain import SCORED_SPLITS, NeuronRecords
from neuronatlas.core.llm import LLMBackend
from neuronatlas.core.scorers.base import ExplanationOutcome, NeuronOutcome, Scorer, ScorerResult
from neuronatlas.core.scorers.choices import READS_CHOICES, ChoiceScorer
from neuronatlas.core.scorers.choices import unscored as unscored_choice
from neuronatlas.core.scorers.embedding import NOT_EMBEDDED, EmbeddingResult, EmbeddingScorer, TextEncoder
from neuronatlas.core.scorers.lookup import LookupScorer
from neuronatlas.core.scorers.simulation import NOT_SIMULATED, SimulationResult, SimulationScorer
from neuronatlas.core.scoring import best_explanation

SCORERS: dict[str, Callable[[str], ScorerResult]] = {
    "simulation": SimulationResult.unscored,
    "embedding": EmbeddingResult.unscored,
    "detection": partial(unscored_choice, "detection"),
    "fuzzing": partial(unscored_choice, "fuzzing"),
}
"""What `--scorers` can name, in the order they run, each with its result when it did not run."""
NOT_RUN = {
    "simulation": NOT_SIMULATED,
    "embedding": NOT_EMBEDDED,
    "detection": "not run (--scorers without detection)",
    "fuzzing": "not run (--scorers without fuzzing)",
}
BASELINE = LookupScorer
COLUMNS: dict[str, tuple[str, str]] = {
    "simulation": SimulationScorer.columns,
    "embedding": EmbeddingScorer.columns,
    "detection": ("detection_auc", "detection_null"),
    "fuzzing": ("fuzzing_auc", "fuzzing_null"),
    BASELINE.name: BASELINE.columns,
}
"""Each scorer's real and permutation-null columns in the scores table."""
AUTO = ("simulation", "embedding", "fuzzing")
"""What `--scorers auto` (the default) runs with a simulator that reads prompt probabilities.
Fuzzing is among them because it is the scorer that puts every oracle neuron's correct
explanation far above its null with the shipped 1.5B model; it costs about 16 s per explanation.
Without prompt probabilities (a chat API), auto is simulation and embedding."""


def parse_names(value: str, allowed: Sequence[str]) -> tuple[str, ...]:
    """A comma-separated choice of `allowed` names, in the given order, without repeats."""
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not names or any(name not in allowed for name in names):
        raise ValueError(f"expected a comma-separated list of {', '.join(allowed)}")
    return names


def choose_scorers(value: str, reads_probabilities: bool = True) -> tuple[str, ...]:
    """`--scorers`: names from `SCORERS`, or auto (see `AUTO`)."""
    if value.strip() == "auto":
        return AUTO if reads_probabilities else tuple(s for s in AUTO if s not in READS_CHOICES)
    return parse_names(value, tuple(SCORERS))


def build_scorers(
    chosen: Sequence[str],
    simulator: LLMBackend | None,
    encoder: Callable[[], TextEncoder],
    method: str,
    scale: int = 9,
    placeholder: str = "unknown",
    splits: Sequence[str] = SCORED_SPLITS,
) -> list[Scorer]:
    """The chosen scorers, in `SCORERS` order, around the injected simulator and encoder (the
    encoder is built only when the embedding scorer is chosen); `splits`: those simulated."""
    built: list[Scorer] = []
    for name in SCORERS:
        if name not in chosen:
            continue
        if name == "embedding":
            built.append(EmbeddingScorer(encoder()))
            continue
        if simulator is None:
            raise ValueError(f"the {name} scorer needs a simulator")
        built.append(
            SimulationScorer(simulator, method, scale, placeholder, splits)
            if name == "simulation"
            else ChoiceScorer(simulator, name)
        )
    return built


def score_neuron(
    scorers: Sequence[Scorer],
    records: NeuronRecords,
    explanations: Sequence[dict[str, Any]],
    partner: NeuronRecords | None,
) -> NeuronOutcome:
    """Each explanation (`explanation_id`, `explanation`, `failure_reason`) scored by every scorer
    on the neuron and on its permutation-control partner; the best sample chosen."""
    outcomes = []
    for row in explanations:
        text = row["explanation"]
        if text is None:
            reason = f"no explanation: {row['failure_reason']}"
            results = {name: unscored(reason) for name, unscored in SCORERS.items()}
            results.update({name: unscored_choice(name, "no explanation") for name in READS_CHOICES})
        else:
            results = {scorer.name: scorer.score(text, records, partner) for scorer in scorers}
        outcomes.append(ExplanationOutcome(row["explanation_id"], text, results))
    control_of = (partner.layer, partner.neuron) if partner is not None else None
    baseline = BASELINE().score(None, records, partner)
    return NeuronOutcome(records.layer, records.neuron, control_of, outcomes, baseline, best_sample(outcomes))


def best_sample(explanations: Sequence[ExplanationOutcome]) -> int | None:
    """The sample to publish: by the embedding AUC on train/calibration spans when there is one
    (never valid or test), else by the simulation's top-and-random score."""
    selection = [_value(e, "embedding", "selection") for e in explanations]
    if any(value is not None for value in selection):
        return best_explanation(selection)
    return best_explanation([_value(e, "simulation", "real") for e in explanations])


def _value(outcome: ExplanationOutcome, scorer: str, score: str) -> float | None:
    result = outcome.results.get(scorer)
    return None if result is None else getattr(result, score).value


def result_or_not_run(outcome: ExplanationOutcome, name: str) -> ScorerResult:
    """A scorer's result on an explanation, or its 'not run' one."""
    return outcome.results.get(name) or SCORERS[name](NOT_RUN[name])


def retryable_failures(outcomes: Sequence[NeuronOutcome]) -> int:
    """Simulations whose LLM call failed (a rerun retries them)."""
    return sum(
        result.retryable
        for neuron in outcomes
        for outcome in neuron.explanations
        for result in outcome.results.values()
        if isinstance(result, SimulationResult)
    )
