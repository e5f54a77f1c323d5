"""Scores of an explanation: how well activations simulated from it track the real ones.

Every correlation is pooled: all tokens of all scored excerpts are concatenated and correlated at
once (docs/method.md §4), never the mean of per-excerpt correlations. A score that is undefined (no
excerpts, constant simulated or true activations, a failed simulation) is `None` with a reason,
never 0 and never NaN.
"""

from dataclasses import dataclass, field, fields

import numpy as np

SPLITS = ("calibration", "valid", "test")


@dataclass(frozen=True)
class ScoredExcerpt:
    """One excerpt of a neuron's records, with its real and simulated activations."""

    split: str
    """calibration | valid | test (train records are never scored)."""
    kind: str
    """top | random."""
    true_activations: np.ndarray
    """(T,) the neuron's real activation per token."""
    simulated_activations: np.ndarray | None
    """(T,) the simulator's prediction per token (its 0..scale expected value); None if it failed."""


@dataclass(frozen=True)
class Score:
    """A score, or why there is none."""

    value: float | None
    reason: str | None = None
    """Set exactly when `value` is None."""


@dataclass(frozen=True)
class ExplanationScores:
    """All scores of one explanation of one neuron."""

    top_and_random_score: Score
    """Pooled correlation on valid top + valid random records (the headline score)."""
    random_only_score: Score
    """Pooled correlation on valid random records."""
    test_score: Score
    """Pooled correlation on test top + test random records (held out from selection)."""
    calibration_score: Score
    """Pooled correlation on calibration top + random records."""
    rsquared: Score
    """1 - mean((y - yhat)^2) / mean(y^2) on valid top + random, after the calibration fit."""
    absolute_dev_explained: Score
    """1 - mean|y - yhat| / mean|y| on valid top + random, after the calibration fit."""
    failure_reason: str | None = field(default=None)
    """Why the headline score is null (None when it exists)."""


SCORE_NAMES = tuple(f.name for f in fields(ExplanationScores) if f.name != "failure_reason")
"""The six score columns of a simulated explanation, in the scores table's order."""


def pooled_correlation(true: list[np.ndarray], simulated: list[np.ndarray]) -> Score:
    """Pearson correlation over all tokens of all excerpts at once."""
    if not true:
        return Score(None, "no excerpts to score")
    y = np.concatenate(true).astype(np.float64)
    x = np.concatenate(simulated).astype(np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return Score(None, "non-finite activations")
    if np.ptp(x) == 0:
        return Score(None, "constant simulated activations")
    if np.ptp(y) == 0:
        return Score(None, "constant true activations")
    x, y = x - x.mean(), y - y.mean()
    value = float(np.dot(x, y) / np.sqrt(np.dot(x, x) * np.dot(y, y)))
    return Score(max(-1.0, min(1.0, value)))


def calibration_fit(true: list[np.ndarray], simulated: list[np.ndarray]) -> tuple[float, float] | None:
    """Least-squares (slope, intercept) mapping simulated to true activations; None when the
    simulated values are constant (no slope is defined)."""
    if not true:
        return None
    x = np.concatenate(simulated).astype(np.float64)
    y = np.concatenate(true).astype(np.float64)
    if np.ptp(x) == 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def rsquared(true: np.ndarray, predicted: np.ndarray) -> Score:
    """1 - mean((y - yhat)^2) / mean(y^2): the mean of squares, not the variance (docs/method.md §4)."""
    denominator = float(np.mean(np.square(true)))
    if denominator == 0:
        return Score(None, "true activations are all zero")
    return Score(1.0 - float(np.mean(np.square(true - predicted))) / denominator)


def absolute_dev_explained(true: np.ndarray, predicted: np.ndarray) -> Score:
    """1 - mean|y - yhat| / mean|y|."""
    denominator = float(np.mean(np.abs(true)))
    if denominator == 0:
        return Score(None, "true activations are all zero")
    return Score(1.0 - float(np.mean(np.abs(true - predicted))) / denominator)


def score_explanation(excerpts: list[ScoredExcerpt]) -> ExplanationScores:
    """Every score of one explanation from its simulated excerpts (see `ExplanationScores`)."""
    failed = [e for e in excerpts if e.simulated_activations is None]
    if failed:
        reason = f"simulation failed on {len(failed)} of {len(excerpts)} excerpts"
        null = Score(None, reason)
        return ExplanationScores(null, null, null, null, null, null, failure_reason=reason)

    def pick(split: str, kinds: tuple[str, ...] = ("top", "random")) -> tuple[list[np.ndarray], list[np.ndarray]]:
        chosen = [e for e in excerpts if e.split == split and e.kind in kinds]
        return [e.true_activations for e in chosen], [e.simulated_activations for e in chosen]  # type: ignore[misc]

    valid_true, valid_sim = pick("valid")
    headline = pooled_correlation(valid_true, valid_sim)
    fit = calibration_fit(*pick("calibration"))
    if fit is None or not valid_true:
        why = "no valid records" if not valid_true else "no calibration fit (constant or missing calibration)"
        r2 = adx = Score(None, why)
    else:
        slope, intercept = fit
        y = np.concatenate(valid_true).astype(np.float64)
        predicted = slope * np.concatenate(valid_sim).astype(np.float64) + intercept
        r2, adx = rsquared(y, predicted), absolute_dev_explained(y, predicted)
    return ExplanationScores(
        top_and_random_score=headline,
        random_only_score=pooled_correlation(*pick("valid", ("random",))),
        test_score=pooled_correlation(*pick("test")),
        calibration_score=pooled_correlation(*pick("calibration")),
        rsquared=r2,
        absolute_dev_explained=adx,
        failure_reason=headline.reason,
    )


def best_explanation(headline_scores: list[float | None]) -> int | None:
    """Index of the explanation with the highest valid (top-and-random) score; ties go to the
    first; None when no explanation has a score."""
    scored = [(value, -index) for index, value in enumerate(headline_scores) if value is not None]
    if not scored:
        return None
    return -max(scored)[1]


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of range(n) with no fixed point (n >= 2): the permutation control
    scores explanation i on the records of neuron `result[i]`, never its own."""
    if n < 2:
        raise ValueError("a derangement needs at least 2 items")
    while True:
        permutation = rng.permutation(n)
        if not np.any(permutation == np.arange(n)):
            return permutation


def control_partners(
    neurons: list[tuple[int, int]], rng: np.random.Generator
) -> dict[tuple[int, int], tuple[int, int]]:
    """Neuron -> the other neuron whose records its explanations are scored on in the permutation
    control (a derangement: never itself); empty with fewer than 2 neurons."""
    if len(neurons) < 2:
        return {}
    permutation = derangement(len(neurons), rng)
    return {neurons[i]: neurons[int(j)] for i, j in enumerate(permutation)}
