"""One interface for every LLM backend, passed into the explain and simulate stages.

- `local:<model>`: in-process transformers (`local_llm.py`); reads digit probabilities from the
  prompt itself (all-at-once simulation).
- `openai:<model>`: any OpenAI-compatible server (`openai_llm.py`); chat only, so it simulates
  with the JSON format.

Every answer is a value: text, or a failure with its reason. Backends count calls and tokens.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from neuronatlas.core.prompts import AllAtOncePrompt, ChatPrompt, ChoicePrompt, LineByLinePrompt
from neuronatlas.errors import InputError


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
    cost_usd: float = 0.0
    failures: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, other: "Usage") -> None:
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd
        self.failures += other.failures
        for reason, count in other.by_reason.items():
            self.by_reason[reason] = self.by_reason.get(reason, 0) + count


class LLMBackend(Protocol):
    """What the explain and simulate stages need from an LLM."""

    id: str
    """Backend, model and weights identity (for cache keys and lineage), e.g.
    `local:qwen2.5-coder-1.5b@sha256:cc324af0...`."""
    can_read_digits: bool
    """Whether `read_digits` works (needs prompt probabilities: in-process models)."""

    @property
    def usage(self) -> Usage:
        """Calls, tokens and cost so far."""
        ...

    def generate(self, prompts: Sequence[ChatPrompt], params: GenerationParams) -> list[Generation]: ...

    def read_digits(
        self, prompt: AllAtOncePrompt | LineByLinePrompt, excerpts: Sequence[Sequence[str]]
    ) -> DigitReadout: ...

    def read_choices(self, prompt: ChoicePrompt, texts: Sequence[str]) -> ChoiceReadout: ...


@dataclass(frozen=True)
class BackendSpec:
    """A parsed `--explainer` / `--simulator` value."""

    kind: str
    """local | openai"""
    model: str


def parse_backend(value: str, option: str) -> BackendSpec:
    kind, _, model = value.partition(":")
    if kind not in ("local", "openai") or not model:
        raise InputError(f"{option} {value}: expected local:<model> or openai:<model>")
    return BackendSpec(kind, model)


@dataclass(frozen=True)
class BackendOptions:
    """Settings of the backends a stage may build (the CLI's options)."""

    base_url: str | None = None
    """OpenAI-compatible server (openai: backends)."""
    concurrency: int = 8
    max_retries: int = 5
    timeout_s: float = 60.0
    budget_tokens: int | None = None
    budget_usd: float | None = None
    usd_per_million_prompt: float = 0.0
    usd_per_million_completion: float = 0.0
    batch: bool = False
    """Use the OpenAI Batch API (openai: backends)."""
    poll_s: float = 30.0
    max_wait_s: float | None = None
    device: str = "auto"
    """local: backends."""
    dtype: str = "bf16"
    batch_size: int = 8


def check_backend(value: str, option: str, options: BackendOptions) -> None:
    """What can be checked of a backend in milliseconds, before anything loads: the spec, a local
    model's files (checksum-verified), an API key or server for openai: backends."""
    spec = parse_backend(value, option)
    if spec.kind == "local":
        from neuronatlas.adapters.models import resolve_model

        resolve_model(spec.model)
    elif options.base_url is None and not os.environ.get("OPENAI_API_KEY"):
        raise InputError(f"{option} {value}: set OPENAI_API_KEY (or pass --base-url for a local server)")


def make_backend(value: str, option: str, options: BackendOptions, store: Any = None) -> LLMBackend:
    """Build the backend a `--explainer` / `--simulator` value names (`store`: the `Storage` where
    batch mode keeps its batch ids)."""
    spec = parse_backend(value, option)
    if spec.kind == "local":
        from neuronatlas.adapters.local_llm import LocalBackend

        return LocalBackend(spec.model, options.device, options.dtype, options.batch_size)
    from neuronatlas.adapters.openai_llm import Budget, OpenAIBackend

    budget = Budget(
        options.budget_tokens, options.budget_usd, options.usd_per_million_prompt, options.usd_per_million_completion
    )
    return OpenAIBackend(
        spec.model, options.base_url, options.concurrency, options.max_retries, options.timeout_s, budget
    )
