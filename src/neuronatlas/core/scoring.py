"""Scores of an explanation: how well activations simulated from it track the real ones.

Every correlation is pooled: all tokens of all scored excerpts are concatenated and correlated at
once (docs/method.md §4), never the mean of per-excerpt correlations. A score that is undefined (no
excerpts or no tokens, constant simulated or true activations, a failed simulation, a simulation of
the wrong length, a non-finite value, an overflow) is `None` with a reason, never 0 and never NaN;
nothing here raises on bad numbers.
"""

import math
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

    @classmethod
    def unscored(cls, reason: str) -> "ExplanationScores":
        """Every score null, for `reason`."""
        null = Score(None, reason)
        return cls(null, null, null, null, null, null, failure_reason=reason)

    def reasons(self) -> dict[str, str]:
        """Each null score's name and its reason, in `SCORE_NAMES` order."""
        return null_reasons({name: getattr(self, name) for name in SCORE_NAMES})


def null_reasons(scores: dict[str, Score]) -> dict[str, str]:
    """Each null score's column and its reason. A null score without a reason is a bug of the
    scorer that made it, not something to publish."""
    missing = [name for name, score in scores.items() if score.value is None and not score.reason]
    if missing:
        raise AssertionError(f"null scores without a reason: {', '.join(missing)}")
    return {name: str(score.reason) for name, score in scores.items() if score.value is None}


SCORE_NAMES = tuple(f.name for f in fields(ExplanationScores) if f.name != "failure_reason")
"""The six score columns of a simulated explanation, in the scores table's order."""


def unusable(true: list[np.ndarray], simulated: list[np.ndarray]) -> str | None:
    """Why these excerpts cannot be scored token by token, if they cannot: no excerpts, a
    simulation whose length is not its excerpt's, no tokens at all, or a non-finite value."""
    if not true:
        return "no excerpts to score"
    if len(simulated) != len(true):
        return f"{len(simulated)} simulated excerpts for {len(true)} excerpts"
    for t, s in zip(true, simulated, strict=True):
        if np.size(s) != np.size(t):
            return f"simulated activations of {np.size(s)} tokens for an excerpt of {np.size(t)}"
    if not any(np.size(t) for t in true):
        return "no tokens to score"
    if not all(np.isfinite(s).all() for s in simulated):
        return "non-finite simulated activations"
    if not all(np.isfinite(t).all() for t in true):
        return "non-finite true activations"
    return None


def _pooled(arrays: list[np.ndarray]) -> np.ndarray:
    """All tokens of the excerpts, in order, as float64."""
    return np.concatenate([np.ravel(a) for a in arrays]).astype(np.float64)


def pooled_correlation(true: list[np.ndarray], simulated: list[np.ndarray]) -> Score:
    """Pearson correlation over all tokens of all excerpts at once."""
    reason = unusable(true, simulated)
    if reason is not None:
        return Score(None, reason)
    y, x = _pooled(true), _pooled(simulated)
    if np.ptp(x) == 0:
        return Score(None, "constant simulated activations")
    if np.ptp(y) == 0:
        return Score(None, "constant true activations")
    x, y = x - x.mean(), y - y.mean()
    with np.errstate(over="ignore", invalid="ignore"):
        sxy, sxx, syy = np.dot(x, y), np.dot(x, x), np.dot(y, y)
    if not np.isfinite([sxy, sxx, syy]).all():
        return Score(None, "activations too large to correlate (overflow)")
    value = float(sxy / np.sqrt(sxx * syy))
    return Score(max(-1.0, min(1.0, value)))


def calibration_fit(true: list[np.ndarray], simulated: list[np.ndarray]) -> tuple[float, float] | str:
    """Least-squares (slope, intercept) mapping simulated to true activations, or why there is
    none (unusable excerpts, constant simulated values: no slope is defined, a failed fit)."""
    reason = unusable(true, simulated)
    if reason is not None:
        return reason
    x, y = _pooled(simulated), _pooled(true)
    if np.ptp(x) == 0:
        return "constant simulated activations"
    try:
        with np.errstate(all="ignore"):
            slope, intercept = np.polyfit(x, y, 1)
    except np.linalg.LinAlgError as error:
        return f"calibration fit failed: {error}"
    if not (np.isfinite(slope) and np.isfinite(intercept)):
        return "calibration fit is not finite"
    return float(slope), float(intercept)


def _finite(value: float, name: str) -> Score:
    """`value` as a score, or null when it overflowed."""
    if not math.isfinite(value):
        return Score(None, f"{name} is not finite (activations too large)")
    return Score(value)


def rsquared(true: np.ndarray, predicted: np.ndarray) -> Score:
    """1 - mean((y - yhat)^2) / mean(y^2): the mean of squares, not the variance (docs/method.md §4)."""
    with np.errstate(over="ignore", invalid="ignore"):
        denominator = float(np.mean(np.square(true)))
        if denominator == 0:
            return Score(None, "true activations are all zero")
        return _finite(1.0 - float(np.mean(np.square(true - predicted))) / denominator, "rsquared")


def absolute_dev_explained(true: np.ndarray, predicted: np.ndarray) -> Score:
    """1 - mean|y - yhat| / mean|y|."""
    with np.errstate(over="ignore", invalid="ignore"):
        denominator = float(np.mean(np.abs(true)))
        if denominator == 0:
            return Score(None, "true activations are all zero")
        return _finite(1.0 - float(np.mean(np.abs(true - predicted))) / denominator, "absolute_dev_explained")


def score_explanation(excerpts: list[ScoredExcerpt]) -> ExplanationScores:
    """Every score of one explanation from its simulated excerpts (see `ExplanationScores`). A
    split whose excerpts cannot be scored (`unusable`) nulls the scores that use it, with the
    reason and the split; the other splits' scores stand."""
    failed = [e for e in excerpts if e.simulated_activations is None]
    if failed:
        return ExplanationScores.unscored(f"simulation failed on {len(failed)} of {len(excerpts)} excerpts")

    def pick(split: str, kinds: tuple[str, ...] = ("top", "random")) -> tuple[list[np.ndarray], list[np.ndarray]]:
        chosen = [e for e in excerpts if e.split == split and e.kind in kinds]
        return [e.true_activations for e in chosen], [e.simulated_activations for e in chosen]  # type: ignore[misc]

    def correlation(split: str, kinds: tuple[str, ...] = ("top", "random")) -> Score:
        true, simulated = pick(split, kinds)
        reason = _split_unusable(split, true, simulated)
        return Score(None, reason) if reason else pooled_correlation(true, simulated)

    headline = correlation("valid")
    r2, adx = _calibrated(pick("calibration"), pick("valid"))
    return ExplanationScores(
        top_and_random_score=headline,
        random_only_score=correlation("valid", ("random",)),
        test_score=correlation("test"),
        calibration_score=correlation("calibration"),
        rsquared=r2,
        absolute_dev_explained=adx,
        failure_reason=headline.reason,
    )


def _split_unusable(split: str, true: list[np.ndarray], simulated: list[np.ndarray]) -> str | None:
    """`unusable`'s reason with the split named, for reasons other than having no excerpts."""
    reason = unusable(true, simulated)
    return None if reason in (None, "no excerpts to score") else f"{reason} ({split})"


def _calibrated(
    calibration: tuple[list[np.ndarray], list[np.ndarray]], valid: tuple[list[np.ndarray], list[np.ndarray]]
) -> tuple[Score, Score]:
    """rsquared and absolute_dev_explained on valid after the calibration fit, or both null with why."""
    why = "no valid records" if not valid[0] else None
    why = why or _split_unusable("calibration", *calibration) or _split_unusable("valid", *valid)
    fit = calibration_fit(*calibration) if why is None else why
    if isinstance(fit, str):
        null = Score(None, why or f"no calibration fit ({fit})")
        return null, null
    slope, intercept = fit
    y = _pooled(valid[0])
    with np.errstate(over="ignore", invalid="ignore"):
        predicted = slope * _pooled(valid[1]) + intercept
    return rsquared(y, predicted), absolute_dev_explained(y, predicted)


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
