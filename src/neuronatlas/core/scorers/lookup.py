"""The token-lookup baseline: a scorer that needs no LLM and no explanation.

Its "explanation" is the neuron's strongest train tokens; its simulation of a token is that
token's mean activation over the train top records (0 where unseen). An explanation must beat it
to add anything over a token detector. The null: this neuron's token means as the simulation of
its partner's control records.
"""

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from neuronatlas.core.explain import NeuronRecords
from neuronatlas.core.scoring import (
    ExplanationScores,
    Score,
    ScoredExcerpt,
    null_reasons,
    pooled_correlation,
    score_explanation,
)


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
class LookupResult:
    real: Score
    null: Score

    def columns(self) -> dict[str, Any]:
        return {"lookup_score": self.real.value, "lookup_null": self.null.value}

    def reasons(self) -> dict[str, str]:
        return null_reasons({"lookup_score": self.real, "lookup_null": self.null})


class LookupScorer:
    name = "lookup baseline"
    columns = ("lookup_score", "lookup_null")

    def score(self, explanation: str | None, records: NeuronRecords, partner: NeuronRecords | None) -> LookupResult:
        """The baseline of `records` (the explanation is not read: the baseline has its own)."""
        null = lookup_null(records, partner) if partner is not None else Score(None, "no control partner")
        return LookupResult(token_lookup(records).scores.top_and_random_score, null)
