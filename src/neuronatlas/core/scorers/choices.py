"""Detection and fuzzing (delphi's scorers): the simulator answers Yes or No to "does this span
match the explanation?"; P(Yes | Yes or No) ranks the spans, scored by AUC.

Detection asks of the neuron's activating and quiet spans; fuzzing of its activating spans with
the strongest tokens marked, against the same spans with decoy tokens marked instead.
"""

import numpy as np

from neuronatlas.core.excerpts import auc, fuzzed_spans, neuron_spans
from neuronatlas.core.explain import NeuronRecords
from neuronatlas.core.llm import LLMBackend
from neuronatlas.core.prompts import detection_prompt, fuzzing_prompt
from neuronatlas.core.scorers.base import NO_PARTNER, PairResult
from neuronatlas.core.scoring import Score

READS_CHOICES = ("detection", "fuzzing")
"""Scorers that read Yes/No probabilities off the prompt."""


class ChoiceScorer:
    """`kind` is detection or fuzzing."""

    def __init__(self, llm: LLMBackend, kind: str) -> None:
        if kind not in READS_CHOICES:
            raise ValueError(f"not a choice scorer: {kind}")
        self.llm, self.name = llm, kind
        self.columns = (f"{kind}_auc", f"{kind}_null")

    def score(self, explanation: str, records: NeuronRecords, partner: NeuronRecords | None) -> PairResult:
        return PairResult(self.name, self.auc(explanation, records), self.auc(explanation, partner))

    def auc(self, explanation: str, records: NeuronRecords | None) -> Score:
        if records is None:
            return Score(None, NO_PARTNER)
        if self.name == "detection":
            spans = neuron_spans(records)
            texts, labels = spans.texts(), spans.labels
            prompt = detection_prompt(explanation)
        else:
            seed = 1_000_003 * (records.layer + 2) + records.neuron  # the same decoys for every explanation
            texts, labels = fuzzed_spans(records, np.random.default_rng(seed))
            prompt = fuzzing_prompt(explanation)
        if not labels.any() or labels.all():
            return Score(None, f"no {self.name} spans of both kinds in layer {records.layer} neuron {records.neuron}")
        readout = self.llm.read_choices(prompt, texts)
        if readout.failure is not None:
            return Score(None, readout.failure)
        answers = np.array(readout.probabilities, dtype=np.float64)
        yes = answers[:, 0] / np.maximum(answers.sum(axis=1), 1e-12)
        return Score(auc(yes, labels), None)


def unscored(kind: str, reason: str) -> PairResult:
    null = Score(None, reason)
    return PairResult(kind, null, null)
