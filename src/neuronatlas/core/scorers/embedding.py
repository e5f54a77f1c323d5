"""Embedding AUC: does the explanation's sentence embedding rank the spans where the neuron fires
above the spans where it stays quiet (`core/excerpts.py`)? The encoder is injected; the spans'
vectors are computed once per neuron and purpose."""

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from neuronatlas.core.excerpts import Spans, auc, neuron_spans, selection_spans
from neuronatlas.core.explain import NeuronRecords
from neuronatlas.core.scorers.base import NO_PARTNER
from neuronatlas.core.scoring import Score, null_reasons

NOT_EMBEDDED = "not embedded (--scorers without embedding)"


class TextEncoder(Protocol):
    id: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) L2-normalised vectors."""
        ...


@dataclass(frozen=True)
class EmbeddingResult:
    real: Score
    null: Score
    selection: Score
    """The AUC on train/calibration spans, which picks a neuron's best sample (never valid or test)."""

    def columns(self) -> dict[str, Any]:
        return {
            "embedding_auc": self.real.value,
            "embedding_null": self.null.value,
            "embedding_failure_reason": self.real.reason,
            "embedding_null_failure_reason": self.null.reason,
            "selection_auc": self.selection.value,
        }

    def reasons(self) -> dict[str, str]:
        return null_reasons({"embedding_auc": self.real, "embedding_null": self.null, "selection_auc": self.selection})

    @classmethod
    def unscored(cls, reason: str) -> "EmbeddingResult":
        null = Score(None, reason)
        return cls(null, null, null)


class EmbeddingScorer:
    name = "embedding"
    columns = ("embedding_auc", "embedding_null")

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder = encoder
        self._vectors: dict[tuple[int, int, str], tuple[Spans, np.ndarray]] = {}
        self._query: tuple[str, np.ndarray] | None = None
        """The last explanation's vector (each is scored on its neuron, its partner, and for selection)."""
        self._one_at_a_time = threading.Lock()
        """Neurons scored in parallel threads share this scorer: its caches and the encoder are
        used by one at a time (the encoder runs in process; the LLM scorers are what wait)."""

    def score(self, explanation: str, records: NeuronRecords, partner: NeuronRecords | None) -> EmbeddingResult:
        with self._one_at_a_time:
            return EmbeddingResult(
                self.auc(explanation, records),
                self.auc(explanation, partner),
                self.auc(explanation, records, purpose="select"),
            )

    def auc(self, explanation: str, records: NeuronRecords | None, purpose: str = "score") -> Score:
        """AUC of cosine(explanation, span) for activating vs quiet spans; null with the reason
        when either kind of span is missing."""
        if records is None:
            return Score(None, NO_PARTNER)
        spans, vectors = self._spans(records, purpose)
        if not spans.positive or not spans.negative:
            which = "activating" if not spans.positive else "quiet"
            return Score(None, f"no {which} spans in layer {records.layer} neuron {records.neuron}'s records")
        if self._query is None or self._query[0] != explanation:
            self._query = (explanation, self.encoder.encode([explanation])[0])
        return Score(auc(vectors @ self._query[1], spans.labels), None)

    def _spans(self, records: NeuronRecords, purpose: str) -> tuple[Spans, np.ndarray]:
        key = (records.layer, records.neuron, purpose)
        if key not in self._vectors:
            spans = neuron_spans(records) if purpose == "score" else selection_spans(records)
            self._vectors[key] = (spans, self.encoder.encode(spans.texts()))
        return self._vectors[key]
