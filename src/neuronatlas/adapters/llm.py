"""Which LLM backend a `--explainer` / `--simulator` value names, checked and built (the interface
they implement is `core/llm.py`).

- `local:<model>`: in-process transformers (`local_llm.py`); reads digit probabilities from the
  prompt itself (all-at-once simulation).
- `openai:<model>`: any OpenAI-compatible server (`openai_llm.py`): chat completions (JSON
  simulation); detection and fuzzing read `top_logprobs` where the server returns them;
  all-at-once simulation reads echoed prompt log-probabilities where the server returns them
  aligned and `--llm-tokenizer` gives the chat template. `--batch-api` sends a stage's chat
  requests as one OpenAI batch.
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
    """What can be checked of a backend in milliseconds, before anything loads: the spec, its
    counts (batch size; concurrency, retries, token budget), a local model's files
    (checksum-verified), an API key or server for openai: backends."""
    spec = parse_backend(value, option)
    if spec.kind == "local":
        from neuronatlas.adapters.models import resolve_model

        if options.batch_size < 1:
            raise InputError(f"--llm-batch-size {options.batch_size}: must be at least 1")
        resolve_model(spec.model)
        return
    for name, least in (("concurrency", 1), ("max_retries", 0), ("budget_tokens", 0)):
        given = getattr(options, name)
        if given is not None and given < least:
            raise InputError(f"{LLMOptions.option(name)} {given}: must be at least {least}")
    require_extra("openai", "openai", f"{option} {value}")
    if options.base_url is None and not os.environ.get("OPENAI_API_KEY"):
        raise InputError(f"{option} {value}: set OPENAI_API_KEY (or pass --base-url for a local server)")
    if options.tokenizer is not None:
        from neuronatlas.adapters.models import resolve_model

        try:
            resolve_model(options.tokenizer)
        except InputError as error:
            raise InputError(f"--llm-tokenizer {options.tokenizer}: {error}") from None


def check_batch(options: LLMOptions, runner: str, *values: tuple[str, str]) -> None:
    """`--batch-api` needs an openai: backend among the (value, option) pairs, and the flow's
    process (the batch is collected there)."""
    if not options.batch:
        return
    if all(parse_backend(value, option).kind != "openai" for value, option in values):
        named = ", ".join(f"{option} {value}" for value, option in values)
        raise InputError(f"--batch-api: {named}: the Batch API needs an openai: backend")
    if runner != "local":
        raise InputError(f"--batch-api: the batch is sent from the flow's process; use --runner local, not {runner}")


def make_backend(
    value: str, option: str, options: LLMOptions, store: Any = None, shared_budget: str | None = None
) -> LLMBackend:
    """Build the backend a `--explainer` / `--simulator` value names (`store`: the `Storage` where
    batch mode keeps its batch ids and the probe its findings; `shared_budget`: the name of the
    budget the Dask workers of one stage share)."""
    spec = parse_backend(value, option)
    if spec.kind == "local":
        from neuronatlas.adapters.local_llm import LocalBackend

        return LocalBackend(spec.model, options.device, options.dtype, options.batch_size)
    from neuronatlas.adapters.openai_llm import Budget, OpenAIBackend, byte_bound, chat_template

    bound, render = chat_template(options.tokenizer) if options.tokenizer else (byte_bound, None)
    budget = Budget(
        options.budget_tokens, options.budget_usd, options.usd_per_million_prompt, options.usd_per_million_completion
    )
    return OpenAIBackend(
        spec.model,
        options.base_url,
        options.concurrency,
        options.max_retries,
        options.timeout_s,
        budget,
        batch=options.batch,
        store=store,
        poll_s=options.poll_s,
        max_wait_s=options.max_wait_s,
        prompt_bound=bound,
        shared_budget=shared_budget,
        template=render,
    )
