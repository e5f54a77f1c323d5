"""A score run's figures: each scorer against its permutation null, over neurons.

- `paired_gap`: mean of (real - null) over neurons, with a bootstrap 95% interval;
- `scorer_gap` / `summary`: per scorer, real and null means, the gap, its interval and whether it
  is significant (never with fewer than `MIN_GAP_NEURONS` neurons);
- `explanation_sensitivity`: do simulations change with the explanation? (1.0: the simulator
  ignores it);
- `verdict`: the one-line reading of a gap that the flow logs and the command prints.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from neuronatlas.core.scorers import COLUMNS as SCORER_COLUMNS
from neuronatlas.core.scorers.simulation import NOT_SIMULATED

MIN_GAP_NEURONS = 5
"""Below this many neurons a bootstrap over neurons says nothing (with 2 it is their range): such a
gap is never called significant, whatever its interval."""


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
        "neurons_without_score": neurons_without_score(scores),
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
    gap = paired_gap(per_neuron[real].tolist(), per_neuron[null].tolist(), np.random.default_rng(seed))
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


def verdict(gap: dict[str, Any]) -> str:
    """How a scorer's gap reads: beats its null, not significantly, or too few neurons to tell."""
    if gap["n"] < MIN_GAP_NEURONS:
        return f"cannot tell (fewer than {MIN_GAP_NEURONS} neurons) whether it beats its permutation null"
    return "beats its permutation null" if gap["significant"] else "does NOT significantly beat its permutation null"


def neurons_without_score(scores: pd.DataFrame) -> int:
    """Neurons none of whose explanations got a score from any scorer."""
    columns = [real for real, _ in SCORER_COLUMNS.values() if real != "lookup_score"]
    scored = scores[columns].notna().any(axis=1).groupby([scores["layer"], scores["neuron"]]).any()
    return int((~scored).sum())


def llm_totals(stages: list[dict[str, Any]]) -> dict[str, float]:
    """A run's LLM calls, tokens, cost and cache hits over its stages' usage records."""
    totals = {"calls": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0, "cost_usd": 0.0, "cache_hits": 0.0}
    for stage in stages:
        for name in totals:
            totals[name] += float((stage.get("llm") or {}).get(name) or 0)
    return {name: round(value, 4) if name == "cost_usd" else int(value) for name, value in totals.items()}
