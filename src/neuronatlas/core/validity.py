"""Is a score measuring anything? Reference points and statistics for the validity harness.

- `token_lookup`: a baseline that needs no LLM: the "explanation" is the neuron's strongest train
  tokens, the simulation of a token is its mean activation over the train records (0 where
  unseen). An explanation must beat it to add anything over a token detector.
- `paired_gap`: mean of (real - null) over explanations, with a bootstrap 95% interval.
- `explanation_sensitivity`: do simulations change with the explanation? Mean pairwise
  correlation of simulations of different explanations on the same excerpts (1.0: the simulator
  ignores the explanation).
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from neuronatlas.core.explain import NeuronRecords
from neuronatlas.core.scoring import ExplanationScores, Score, ScoredExcerpt, pooled_correlation, score_explanation

MIN_GAP_NEURONS = 5
"""Below this many neurons a bootstrap over neurons says nothing (with 2 it is their range): such a
gap is never called significant, whatever its interval."""


@dataclass(frozen=True)
class LookupBaseline:
    explanation: str
    """The neuron's strongest train tokens, e.g. 'tokens: " of", " in"'."""
    scores: ExplanationScores


def token_means(records: NeuronRecords) -> dict[str, float]:
    """Mean activation of each token string over the neuron's train top records."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for record in records.select(["top"], ["train"]):
        for token, value in zip(record.tokens, record.activations, strict=True):
            sums[token] += float(value)
            counts[token] += 1
    return {token: sums[token] / counts[token] for token in sums}


def token_lookup(records: NeuronRecords, shown: int = 5) -> LookupBaseline:
    """Score the token-lookup baseline on the neuron's calibration / valid / test records."""
    means = token_means(records)
    strongest = sorted(means, key=lambda token: -means[token])[:shown]
    excerpts = [
        ScoredExcerpt(
            record.split,
            record.kind,
            record.activations,
            np.array([means.get(token, 0.0) for token in record.tokens], dtype=np.float32),
        )
        for record in records.scored()
    ]
    return LookupBaseline("tokens: " + ", ".join(repr(token) for token in strongest), score_explanation(excerpts))


def lookup_null(records: NeuronRecords, other: NeuronRecords) -> Score:
    """The baseline's permutation null: this neuron's token means as the simulation of the other
    neuron's control records."""
    means = token_means(records)
    excerpts = other.control()
    simulated = [np.array([means.get(token, 0.0) for token in r.tokens], dtype=np.float32) for r in excerpts]
    return pooled_correlation([r.activations for r in excerpts], simulated)


@dataclass(frozen=True)
class Gap:
    mean: float
    low: float
    high: float
    """Bootstrap 95% interval of the mean paired gap."""
    n: int


def paired_gap(real: Sequence[float], null: Sequence[float], rng: np.random.Generator, draws: int = 10_000) -> Gap:
    """Mean of real - null over paired explanations, with a percentile bootstrap 95% interval."""
    differences = np.asarray(real, dtype=np.float64) - np.asarray(null, dtype=np.float64)
    if len(differences) == 0:
        raise ValueError("no paired scores")
    resampled = rng.choice(differences, size=(draws, len(differences)), replace=True).mean(axis=1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return Gap(float(differences.mean()), float(low), float(high), len(differences))


def explanation_sensitivity(simulations: Sequence[Sequence[np.ndarray]]) -> float | None:
    """Mean pairwise Pearson correlation between the simulations of different explanations on the
    same excerpts: `simulations[e][x]` is explanation e's simulation of excerpt x (every e covers
    the same excerpts). Pairs with a constant simulation are skipped; None without any pair."""
    pooled = [np.concatenate(per_excerpt).astype(np.float64) for per_excerpt in simulations]
    correlations = []
    for i in range(len(pooled)):
        for j in range(i + 1, len(pooled)):
            a, b = pooled[i], pooled[j]
            if np.ptp(a) == 0 or np.ptp(b) == 0:
                continue
            correlations.append(float(np.corrcoef(a, b)[0, 1]))
    return float(np.mean(correlations)) if correlations else None
