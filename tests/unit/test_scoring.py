"""Scoring math, against values computed by hand."""

import math

import numpy as np
import pytest

from neuronatlas.core.scoring import (
    SCORE_NAMES,
    ExplanationScores,
    Score,
    ScoredExcerpt,
    absolute_dev_explained,
    best_explanation,
    calibration_fit,
    derangement,
    pooled_correlation,
    rsquared,
    score_explanation,
)


def arrays(*rows: list[float]) -> list[np.ndarray]:
    return [np.array(row, dtype=np.float32) for row in rows]


def test_pooled_correlation_hand_computed() -> None:
    # x = 1,2,3,4; y = 2,4,5,4: sxy = 3.5, sxx = 5, syy = 4.75
    score = pooled_correlation(arrays([2, 4], [5, 4]), arrays([1, 2], [3, 4]))
    assert score.value == pytest.approx(3.5 / math.sqrt(5 * 4.75), rel=1e-12)
    assert score.reason is None


def test_pooling_is_not_averaging() -> None:
    # excerpt A alone correlates +1, excerpt B alone -1: their mean is 0, the pooled value is not
    true, simulated = arrays([0, 1], [10, 12]), arrays([0, 1], [1, 0])
    per_excerpt = [pooled_correlation([t], [s]).value for t, s in zip(true, simulated, strict=True)]
    assert per_excerpt == [pytest.approx(1.0), pytest.approx(-1.0)]
    # pooled: dx = -.5,.5,.5,-.5; dy = -5.75,-4.75,4.25,6.25 -> sxy = -0.5, sxx = 1, syy = 112.75
    assert pooled_correlation(true, simulated).value == pytest.approx(-0.5 / math.sqrt(112.75), rel=1e-12)


@pytest.mark.parametrize(
    ("true", "simulated", "reason"),
    [
        ([], [], "no excerpts to score"),
        ([[1.0, 2.0]], [[3.0, 3.0]], "constant simulated activations"),
        ([[0.0, 0.0]], [[1.0, 2.0]], "constant true activations"),
        ([[0.0, float("nan")]], [[1.0, 2.0]], "non-finite true activations"),
    ],
)
def test_undefined_correlation_is_null_with_a_reason(true: list, simulated: list, reason: str) -> None:
    score = pooled_correlation(arrays(*true), arrays(*simulated))
    assert score.value is None
    assert score.reason == reason


def test_rsquared_uses_the_mean_of_squares() -> None:
    # 1 - mean((y - yhat)^2) / mean(y^2) = 1 - 0.5 / 2.5 (the variance would give 1 - 0.5 / 0.25)
    assert rsquared(np.array([1.0, 2.0]), np.array([1.0, 1.0])).value == pytest.approx(0.8)
    assert absolute_dev_explained(np.array([1.0, 2.0]), np.array([1.0, 1.0])).value == pytest.approx(1 - 0.5 / 1.5)
    assert rsquared(np.zeros(2), np.ones(2)).reason == "true activations are all zero"


def test_calibration_fit() -> None:
    assert calibration_fit(arrays([1, 3, 5]), arrays([0, 1, 2])) == pytest.approx((2.0, 1.0))
    assert calibration_fit(arrays([1, 3]), arrays([2, 2])) == "constant simulated activations"


def excerpt(split: str, kind: str, true: list[float], simulated: list[float] | None) -> ScoredExcerpt:
    values = None if simulated is None else np.array(simulated, dtype=np.float32)
    return ScoredExcerpt(split, kind, np.array(true, dtype=np.float32), values)


def test_score_explanation_by_split_with_calibration() -> None:
    excerpts = [
        excerpt("calibration", "top", [1, 3], [0, 1]),
        excerpt("calibration", "random", [5], [2]),  # calibration fit: y = 2x + 1
        excerpt("valid", "top", [3], [1]),
        excerpt("valid", "random", [4, 0], [2, 0]),
        excerpt("test", "top", [2, 0], [1, 0]),
        excerpt("test", "random", [1, 2], [2, 1]),
    ]
    scores = score_explanation(excerpts)
    # valid: x = 1,2,0; y = 3,4,0 (means 1 and 7/3) -> sxy = 4, sxx = 2, syy = 26/3
    assert scores.top_and_random_score.value == pytest.approx(
        pooled_correlation(arrays([3, 4, 0]), arrays([1, 2, 0])).value
    )
    assert scores.top_and_random_score.value == pytest.approx(4 / math.sqrt(2 * 26 / 3), rel=1e-9)
    assert scores.random_only_score.value == pytest.approx(1.0)  # (2,0) vs (4,0)
    assert scores.test_score.value == pytest.approx(
        pooled_correlation(arrays([2, 0, 1, 2]), arrays([1, 0, 2, 1])).value
    )
    # yhat = 2x + 1 on valid = 3, 5, 1 vs y = 3, 4, 0: mean sq err 2/3, mean y^2 25/3, mean abs err 2/3, mean |y| 7/3
    assert scores.rsquared.value == pytest.approx(1 - (2 / 3) / (25 / 3))
    assert scores.absolute_dev_explained.value == pytest.approx(1 - (2 / 3) / (7 / 3))
    assert scores.failure_reason is None


def test_a_failed_simulation_nulls_every_score() -> None:
    scores = score_explanation([excerpt("valid", "top", [1, 2], [1, 2]), excerpt("valid", "random", [0, 1], None)])
    assert scores.top_and_random_score.value is None
    assert scores.failure_reason == "simulation failed on 1 of 2 excerpts"
    assert scores.rsquared.value is None


def test_best_explanation_on_valid() -> None:
    assert best_explanation([None, 0.2, 0.5, 0.5]) == 2
    assert best_explanation([-0.3, None]) == 0
    assert best_explanation([None, None]) is None


def test_derangement_has_no_fixed_point() -> None:
    rng = np.random.default_rng(0)
    for n in (2, 3, 10):
        for _ in range(20):
            permutation = derangement(n, rng)
            assert sorted(permutation.tolist()) == list(range(n))
            assert not np.any(permutation == np.arange(n))
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1, rng)


def splits_with(split: str, simulated: list[float]) -> list[ScoredExcerpt]:
    """Calibration, valid and test records that all score, but `split`'s top record simulated as given."""
    rows = {name: [0.0, 1.0, 2.0] for name in ("calibration", "valid", "test")}
    excerpts = [excerpt(name, kind, [0, 1, 3], rows[name]) for name in rows for kind in ("top", "random")]
    return [
        excerpt(e.split, e.kind, [0, 1, 3], simulated) if (e.split, e.kind) == (split, "top") else e for e in excerpts
    ]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_calibration_simulation_nulls_only_what_uses_it(bad: float) -> None:
    scores = score_explanation(splits_with("calibration", [0.0, bad, 2.0]))
    reason = "non-finite simulated activations (calibration)"
    assert scores.calibration_score == Score(None, reason)
    assert scores.rsquared == scores.absolute_dev_explained == Score(None, reason)
    assert scores.top_and_random_score.value is not None and scores.failure_reason is None
    assert scores.random_only_score.value is not None and scores.test_score.value is not None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_valid_simulation_nulls_the_valid_scores_with_a_reason(bad: float) -> None:
    scores = score_explanation(splits_with("valid", [0.0, bad, 2.0]))
    reason = "non-finite simulated activations (valid)"
    assert scores.top_and_random_score == scores.rsquared == scores.absolute_dev_explained == Score(None, reason)
    assert scores.failure_reason == reason
    assert scores.random_only_score.value is not None  # the valid random records are finite
    assert scores.calibration_score.value is not None and scores.test_score.value is not None


def every_score_is_a_number_or_has_a_reason(scores: ExplanationScores) -> None:
    for name in SCORE_NAMES:
        score = getattr(scores, name)
        assert (score.value is None) != (score.reason is None), name
        assert score.value is None or math.isfinite(score.value), name


@pytest.mark.parametrize("split", ["calibration", "valid", "test"])
@pytest.mark.parametrize("simulated", [[0.0, float("nan"), 2.0], [1.0, 2.0], []])
def test_bad_simulations_never_raise_nor_score_nan(split: str, simulated: list[float]) -> None:
    every_score_is_a_number_or_has_a_reason(score_explanation(splits_with(split, simulated)))


def test_calibration_fit_never_raises() -> None:
    assert calibration_fit(arrays([1, 3, 5]), arrays([0, float("nan"), 2])) == "non-finite simulated activations"
    assert calibration_fit(arrays([1, float("inf")]), arrays([0, 1])) == "non-finite true activations"
    assert calibration_fit(arrays([1, 3]), arrays([0])) == "simulated activations of 1 tokens for an excerpt of 2"
    assert calibration_fit(arrays([]), arrays([])) == "no tokens to score"
    assert calibration_fit([], []) == "no excerpts to score"


def test_calibration_fit_turns_a_failed_solver_into_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise np.linalg.LinAlgError("SVD did not converge in Linear Least Squares")

    monkeypatch.setattr(np, "polyfit", fail)
    assert calibration_fit(arrays([1, 3, 5]), arrays([0, 1, 2])) == (
        "calibration fit failed: SVD did not converge in Linear Least Squares"
    )


def test_no_tokens_is_null_with_a_reason() -> None:
    assert pooled_correlation(arrays([]), arrays([])) == Score(None, "no tokens to score")
    assert pooled_correlation(arrays([], []), arrays([], [])) == Score(None, "no tokens to score")
    scores = score_explanation([excerpt("valid", "top", [], []), excerpt("valid", "random", [], [])])
    assert scores.failure_reason == "no tokens to score (valid)"
    every_score_is_a_number_or_has_a_reason(scores)


def test_a_zero_length_excerpt_among_others_is_pooled() -> None:
    assert pooled_correlation(arrays([], [1, 2]), arrays([], [1, 2])) == Score(1.0)


@pytest.mark.parametrize(
    ("true", "simulated", "reason"),
    [
        ([[1, 2, 3]], [[1, 2]], "simulated activations of 2 tokens for an excerpt of 3"),
        ([[1, 2], [3, 4]], [[1, 2], [3, 4, 5]], "simulated activations of 3 tokens for an excerpt of 2"),
        ([[1, 2], [3, 4]], [[1, 2]], "1 simulated excerpts for 2 excerpts"),
    ],
)
def test_token_count_mismatches_are_refused(true: list, simulated: list, reason: str) -> None:
    assert pooled_correlation(arrays(*true), arrays(*simulated)) == Score(None, reason)


def test_score_explanation_refuses_a_mismatched_excerpt() -> None:
    scores = score_explanation(splits_with("test", [1.0, 2.0]))
    assert scores.test_score == Score(None, "simulated activations of 2 tokens for an excerpt of 3 (test)")
    assert scores.top_and_random_score.value is not None


def test_an_overflowing_correlation_is_null_not_clamped() -> None:
    score = pooled_correlation(arrays([0, 1, 3]), [np.array([1e300, -1e300, 1e300])])
    assert score.value is None and score.reason is not None
