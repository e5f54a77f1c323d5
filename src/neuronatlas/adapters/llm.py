"""Which LLM backend a `--explainer` / `--simulator` value names, checked and built (the interface
they implement is `core/llm.py`).

- `local:<model>`: in-process transformers (`local_llm.py`); reads digit probabilities from the
  prompt itself (all-at-once simulation).
- `openai:<model>`: any OpenAI-compatible server (`openai_llm.py`); chat only, so it simulates
  with the JSON format.
"""

import os
from dataclasses import dataclass
from typing import Any

from neuronatlas.config import LLMOptions
from neuronatlas.core.llm import LLMBackend
from neuronatlas.errors import InputError, require_extra


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


def check_backend(value: str, option: str, options: LLMOptions) -> None:
    """What can be checked of a backend in milliseconds, before anything loads: the spec, a local
    model's files (checksum-verified), an API key or server for openai: backends."""
    spec = parse_backend(value, option)
    if spec.kind == "local":
        from neuronatlas.adapters.models import resolve_model

        resolve_model(spec.model)
        return
    require_extra("openai", "openai", f"{option} {value}")
    if options.base_url is None and not os.environ.get("OPENAI_API_KEY"):
        raise InputError(f"{option} {value}: set OPENAI_API_KEY (or pass --base-url for a local server)")


def make_backend(value: str, option: str, options: LLMOptions, store: Any = None) -> LLMBackend:
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
