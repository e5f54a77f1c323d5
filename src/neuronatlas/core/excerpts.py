"""Excerpt-level scoring (docs/method.md §8): can an explanation tell the spans where the neuron fires
from spans where it stays quiet? Small models cannot simulate token by token, but an embedding
or a yes/no question can rank spans; the score is the AUC of that ranking.

Positives: from each top record, the `width` tokens ending just after its strongest token (so
the activating token sits near the end of the span). Negatives: the random records cut into
non-overlapping `width`-token spans, dropping any where the neuron reaches `QUIET_FRACTION` of its
top maximum. Scoring uses the calibration, valid and test top records against the valid and test
random ones; choosing among an explanation's samples uses the train top records against the
calibration random ones (no record in both), never valid or test.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from neuronatlas.core.explain import NeuronRecords, Record
from neuronatlas.core.prompts import marked

SPAN_WIDTH = 16
AFTER_PEAK = 2
"""Tokens kept after the strongest one (the activating token sits near the end)."""
QUIET_FRACTION = 0.3
"""A negative span must stay below this fraction of the neuron's top maximum."""
SCORED_SPLITS = {"top": ("calibration", "valid", "test"), "random": ("valid", "test")}
SELECTION_SPLITS = {"top": ("train",), "random": ("calibration",)}


@dataclass(frozen=True)
class Spans:
    """A neuron's positive and negative spans, as token tuples."""

    positive: tuple[tuple[str, ...], ...]
    negative: tuple[tuple[str, ...], ...]

    def texts(self) -> list[str]:
        """Positives then negatives, each span's tokens joined."""
        return ["".join(span).strip() for span in self.positive + self.negative]

    @property
    def labels(self) -> np.ndarray:
        return np.array([True] * len(self.positive) + [False] * len(self.negative))


def peak_span(record: Record, width: int = SPAN_WIDTH, after: int = AFTER_PEAK) -> tuple[str, ...]:
    """The `width` tokens ending `after` tokens past the record's strongest token."""
    peak = int(np.argmax(record.activations))
    end = min(len(record.tokens), max(peak + 1 + after, width))
    return tuple(record.tokens[max(0, end - width) : end])


def quiet_spans(record: Record, ceiling: float, width: int = SPAN_WIDTH) -> list[tuple[str, ...]]:
    """Non-overlapping `width`-token spans of a record where the activation stays below `ceiling`."""
    spans = []
    for start in range(0, len(record.tokens) - width + 1, width):
        if float(np.max(record.activations[start : start + width])) < ceiling:
            spans.append(tuple(record.tokens[start : start + width]))
    return spans


def neuron_spans(
    records: NeuronRecords,
    top_splits: Sequence[str] = SCORED_SPLITS["top"],
    random_splits: Sequence[str] = SCORED_SPLITS["random"],
) -> Spans:
    """Positive spans from the top records of `top_splits`, quiet negatives from the random ones."""
    top = records.select(["top"], ["train", "calibration", "valid", "test"])
    ceiling = QUIET_FRACTION * max((float(np.max(r.activations)) for r in top), default=0.0)
    positive = [peak_span(r) for r in records.select(["top"], top_splits)]
    negative = [span for r in records.select(["random"], random_splits) for span in quiet_spans(r, ceiling)]
    return Spans(tuple(positive), tuple(negative))


def selection_spans(records: NeuronRecords) -> Spans:
    """Spans for choosing among an explanation's samples: train tops, calibration randoms."""
    return neuron_spans(records, SELECTION_SPLITS["top"], SELECTION_SPLITS["random"])


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); None without both classes."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):  # average ranks over ties
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    u = ranks[labels].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def fuzzed_spans(records: NeuronRecords, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Fuzzing (as delphi does): each scored top record's peak span twice, once with the
    tokens where the neuron fires marked (label True), once with as many other tokens marked
    (False). Texts as `marked` writes them, and the labels."""
    top = records.select(["top"], ["train", "calibration", "valid", "test"])
    ceiling = QUIET_FRACTION * max((float(np.max(r.activations)) for r in top), default=0.0)
    texts: list[str] = []
    labels: list[bool] = []
    for record in records.select(["top"], SCORED_SPLITS["top"]):
        peak = int(np.argmax(record.activations))
        end = min(len(record.tokens), max(peak + 1 + AFTER_PEAK, SPAN_WIDTH))
        start = max(0, end - SPAN_WIDTH)
        tokens = record.tokens[start:end]
        hot = record.activations[start:end] >= ceiling
        cold = np.flatnonzero(~hot)
        if not hot.any() or len(cold) < hot.sum():
            continue
        decoy = np.zeros(len(tokens), dtype=bool)
        decoy[rng.choice(cold, size=int(hot.sum()), replace=False)] = True
        texts += [marked(tokens, hot.tolist()), marked(tokens, decoy.tolist())]
        labels += [True, False]
    return texts, np.array(labels, dtype=bool)
