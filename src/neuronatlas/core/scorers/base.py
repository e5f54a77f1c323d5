"""The interface every scorer implements, and what scoring a neuron produces.

A scorer takes an explanation, the neuron's records and its permutation-control partner's, and
returns a `ScorerResult`: a real score, a null score (the same explanation on the partner's
records) and the scorer's columns of the scores table, each null score with its reason.
"""

from dataclasses import dataclass, field
from typing import Any, Protocol

from neuronatlas.core.explain import NeuronRecords
from neuronatlas.core.scoring import Score, null_reasons

NO_PARTNER = "permutation control needs at least 2 neurons"


class ScorerResult(Protocol):
    """One scorer's verdict on one explanation."""

    @property
    def real(self) -> Score:
        """The explanation on its own neuron's records."""
        ...

    @property
    def null(self) -> Score:
        """The explanation on its control partner's records."""
        ...

    def columns(self) -> dict[str, Any]:
        """This scorer's columns of the scores table."""
        ...

    def reasons(self) -> dict[str, str]:
        """Each of its null score columns and why it is null."""
        ...


class Scorer(Protocol):
    """Scores explanations with a model (or none) injected when it is built."""

    name: str
    """How `--scorers` names it, and its label in the run summary."""
    columns: tuple[str, str]
    """Its real and null columns of the scores table."""

    def score(self, explanation: str, records: NeuronRecords, partner: NeuronRecords | None) -> ScorerResult: ...


@dataclass(frozen=True)
class PairResult:
    """A real and a null score and nothing else: their columns are `<name>_auc`, `<name>_null` and
    `<name>_failure_reason` (the real score's reason)."""

    name: str
    real: Score
    null: Score

    def columns(self) -> dict[str, Any]:
        return {
            f"{self.name}_auc": self.real.value,
            f"{self.name}_null": self.null.value,
            f"{self.name}_failure_reason": self.real.reason,
        }

    def reasons(self) -> dict[str, str]:
        return null_reasons({f"{self.name}_auc": self.real, f"{self.name}_null": self.null})


@dataclass
class ExplanationOutcome:
    """Every scorer's result on one explanation (or, without an explanation, why not)."""

    explanation_id: int
    explanation: str | None
    results: dict[str, ScorerResult] = field(default_factory=dict)
    """By scorer name; the scorers that did not run are absent."""


@dataclass
class NeuronOutcome:
    """A neuron's explanations scored, with the token-lookup baseline of the neuron."""

    layer: int
    neuron: int
    control_of: tuple[int, int] | None
    """The neuron whose records the permutation control used."""
    explanations: list[ExplanationOutcome]
    baseline: ScorerResult
    """The token-lookup baseline (no LLM): the same on every explanation of the neuron."""
    best: int | None = None
    """Index into `explanations` of the sample that gets published (None: none ranked)."""
