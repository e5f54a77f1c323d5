"""Reference points and statistics of the validity harness, on hand-built neurons."""

import numpy as np
import pytest

from neuronatlas.core.explain import NeuronRecords, Record
from neuronatlas.core.scorers.lookup import token_lookup, token_means
from neuronatlas.core.summary import explanation_sensitivity, paired_gap


def record(kind: str, split: str, rank: int, tokens: list[str], values: list[float]) -> Record:
    return Record(kind, split, rank, rank + (0 if kind == "top" else 100), tuple(tokens), np.array(values, np.float32))


def neuron_that_fires_on(token: str) -> NeuronRecords:
    """A synthetic neuron: 2.0 on `token`, 0.1 on " the", 0 elsewhere."""

    def excerpt(kind: str, split: str, rank: int, tokens: list[str]) -> Record:
        values = [2.0 if t == token else 0.1 if t == " the" else 0.0 for t in tokens]
        return record(kind, split, rank, tokens, values)

    return NeuronRecords(
        3,
        7,
        (
            excerpt("top", "train", 0, [" the", " cat", " of", " Rome"]),
            excerpt("top", "train", 4, [" of", " the", " sea"]),
            excerpt("top", "calibration", 1, [" a", " of", " b"]),
            excerpt("top", "valid", 2, [" king", " of", " the", " hill"]),
            excerpt("top", "test", 3, [" of", " x"]),
            excerpt("random", "calibration", 0, [" dog", " the"]),
            excerpt("random", "valid", 1, [" blue", " sky", " the"]),
            excerpt("random", "test", 2, [" of", " y"]),
        ),
    )


def test_token_means_over_train_records() -> None:
    means = token_means(neuron_that_fires_on(" of"))
    assert means[" of"] == pytest.approx(2.0)
    assert means[" the"] == pytest.approx(0.1)
    assert means[" cat"] == 0.0
    assert " king" not in means  # valid records are never looked at


def test_token_lookup_scores_a_token_detector_perfectly() -> None:
    baseline = token_lookup(neuron_that_fires_on(" of"))
    assert baseline.explanation.startswith("tokens: ' of', ' the'")
    # the lookup reproduces the neuron exactly on held-out records (its tokens all seen in train)
    assert baseline.scores.top_and_random_score.value == pytest.approx(1.0)
    assert baseline.scores.test_score.value == pytest.approx(1.0)


def test_paired_gap_and_its_interval() -> None:
    rng = np.random.default_rng(0)
    gap = paired_gap([0.5, 0.4, 0.6, 0.5], [0.1, 0.0, 0.2, 0.1], rng, draws=2_000)
    assert gap.mean == pytest.approx(0.4)
    assert gap.low == pytest.approx(0.4) and gap.high == pytest.approx(0.4)  # every difference is 0.4
    noisy = paired_gap([0.3, -0.2, 0.1, 0.0], [0.0, 0.0, 0.0, 0.0], rng, draws=2_000)
    assert noisy.low < 0 < noisy.high  # not significant
    with pytest.raises(ValueError, match="no paired scores"):
        paired_gap([], [], rng)


def test_explanation_sensitivity() -> None:
    same = [np.array([0.0, 1.0, 2.0]), np.array([1.0, 0.0])]
    assert explanation_sensitivity([same, same, same]) == pytest.approx(1.0)  # the explanation changes nothing
    flipped = [2.0 - x for x in same]
    assert explanation_sensitivity([same, flipped]) == pytest.approx(-1.0)
    constant = [np.zeros(3), np.zeros(2)]
    assert explanation_sensitivity([same, constant]) is None
