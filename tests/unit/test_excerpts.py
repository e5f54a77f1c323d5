"""Excerpt-level scoring: span selection around the peak, quiet negatives, and the AUC."""

import numpy as np
import pytest

from neuronatlas.core.excerpts import auc, neuron_spans, peak_span, quiet_spans, selection_spans
from neuronatlas.core.explain import NeuronRecords, Record


def record(kind: str, split: str, values: list[float], rank: int = 0) -> Record:
    tokens = tuple(f" t{i}" for i in range(len(values)))
    return Record(kind, split, rank, rank, tokens, np.array(values, np.float32))


def test_auc_against_hand_counts() -> None:
    labels = np.array([True, True, False, False, False])
    assert auc(np.array([0.9, 0.8, 0.1, 0.2, 0.3]), labels) == 1.0
    assert auc(np.array([0.1, 0.2, 0.8, 0.9, 0.7]), labels) == 0.0
    # positives 0.5 and 0.2 against negatives 0.5, 0.1, 0.3: (0.5 + 1 + 1) + (0 + 1 + 0) = 3.5 of 6 pairs
    assert auc(np.array([0.5, 0.2, 0.5, 0.1, 0.3]), labels) == pytest.approx(3.5 / 6)
    assert auc(np.array([0.5, 0.5]), np.array([True, True])) is None


def test_peak_span_ends_just_after_the_strongest_token() -> None:
    values = [0.0] * 40
    values[30] = 5.0
    span = peak_span(record("top", "valid", values), width=16, after=2)
    assert span == tuple(f" t{i}" for i in range(17, 33))
    early = [0.0] * 40
    early[3] = 5.0  # near the start: the first 16 tokens
    assert peak_span(record("top", "valid", early), width=16) == tuple(f" t{i}" for i in range(16))


def test_quiet_spans_drop_those_where_the_neuron_fires() -> None:
    values = [0.0] * 48
    values[20] = 1.0  # inside the second span
    spans = quiet_spans(record("random", "valid", values), ceiling=0.9, width=16)
    assert [span[0] for span in spans] == [" t0", " t32"]


def test_scored_and_selection_spans_use_disjoint_splits() -> None:
    peak = [0.0] * 31 + [10.0]
    records = NeuronRecords(
        1,
        2,
        (
            record("top", "train", peak, 0),
            record("top", "calibration", peak, 1),
            record("top", "valid", peak, 2),
            record("top", "test", peak, 3),
            record("random", "calibration", [0.0] * 32, 0),
            record("random", "valid", [0.0] * 16 + [5.0] * 16, 1),  # second half reaches 0.5 x max
            record("random", "test", [0.0] * 32, 2),
        ),
    )
    scored = neuron_spans(records)  # calibration, valid, test tops; valid and test randoms
    assert len(scored.positive) == 3 and len(scored.negative) == 3
    chosen = selection_spans(records)  # train tops, calibration randoms
    assert len(chosen.positive) == 1 and len(chosen.negative) == 2
    assert scored.labels.tolist() == [True, True, True, False, False, False]
