"""What the explain and score stages need from an LLM: one interface, implemented by the adapters
(`adapters/local_llm.py`, `adapters/openai_llm.py`) and passed in, never built here.

Every answer is a value: text or readout probabilities, or a failure with its reason.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from neuronatlas.core.prompts import AllAtOncePrompt, ChatPrompt, ChoicePrompt, LineByLinePrompt


@dataclass(frozen=True)
class GenerationParams:
    """How to sample answers."""

    n: int = 1
    """Samples per prompt."""
    temperature: float = 1.0
    max_tokens: int = 60
    seed: int = 0


@dataclass(frozen=True)
class Generation:
    """The answers to one prompt, or why there are none."""

    texts: tuple[str, ...] = ()
    """One text per sample (answer prefix not included)."""
    failure: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class DigitReadout:
    """All-at-once simulation of excerpts: per excerpt, per token, the expected activation under
    the digit probabilities renormalised over the digits, and the digits' share of all the
    probability there (how much the simulator answers with a digit at all)."""

    expected: tuple[tuple[float, ...], ...] = ()
    digit_mass: tuple[tuple[float, ...], ...] = ()
    failure: str | None = None


@dataclass(frozen=True)
class ChoiceReadout:
    """Per text, the next-token probability of each choice (in the prompt's order)."""

    probabilities: tuple[tuple[float, ...], ...] = ()
    failure: str | None = None


@dataclass
class Usage:
    """What a backend has spent so far."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    """Of the prompt tokens, those the server reported reading from its prefix cache
    (`usage.prompt_tokens_details.cached_tokens`: OpenAI, vLLM); 0 where it reports none."""
    cost_usd: float = 0.0
    failures: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, other: "Usage") -> None:
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_prompt_tokens += other.cached_prompt_tokens
        self.cost_usd += other.cost_usd
        self.failures += other.failures
        for reason, count in other.by_reason.items():
            self.by_reason[reason] = self.by_reason.get(reason, 0) + count


def parallel_requests(llm: object) -> int:
    """How many requests `llm` keeps in flight at once (an API backend's concurrency limit; 1 for
    a model in process): how much independent work its callers hand it at a time."""
    return int(getattr(llm, "parallel_requests", 1))


class LLMBackend(Protocol):
    """What the explain and simulate stages need from an LLM."""

    id: str
    """Backend, model and weights identity (for cache keys and lineage), e.g.
    `local:qwen2.5-coder-1.5b@sha256:cc324af0...`."""

    @property
    def can_read_digits(self) -> bool:
        """Whether `read_digits` works (all-at-once: prompt probabilities, in process or echoed
        aligned by a server)."""
        ...

    @property
    def can_read_choices(self) -> bool:
        """Whether `read_choices` works (next-token probabilities of a one-token answer)."""
        ...

    @property
    def abilities(self) -> str:
        """What it can read and why, for the log and the manifest."""
        ...

    @property
    def usage(self) -> Usage:
        """Calls, tokens and cost so far."""
        ...

    def generate(self, prompts: Sequence[ChatPrompt], params: GenerationParams) -> list[Generation]: ...

    def read_digits(
        self, prompt: AllAtOncePrompt | LineByLinePrompt, excerpts: Sequence[Sequence[str]]
    ) -> DigitReadout: ...

    def read_choices(self, prompt: ChoicePrompt, texts: Sequence[str]) -> ChoiceReadout: ...
