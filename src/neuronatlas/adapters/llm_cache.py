"""A content-addressed cache of LLM answers under the root (`llm_cache/`), wrapped around any
backend: a rerun with the same prompts spends nothing, and a crashed stage resumes where it
stopped. The key is the sha256 of the backend identity (model and weights checksum), the full
request and the sampling parameters; failures are not cached, so a rerun retries them.
"""

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from neuronatlas.adapters.storage import Storage
from neuronatlas.core.llm import (
    ChoiceReadout,
    DigitReadout,
    Generation,
    GenerationParams,
    LLMBackend,
    Usage,
    parallel_requests,
)
from neuronatlas.core.prompts import AllAtOncePrompt, ChatPrompt, ChoicePrompt, LineByLinePrompt

CACHE_DIR = "llm_cache"


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class UsageReport:
    """What a backend on another process (a Dask worker) spent, to add to the flow's account."""

    usage: Usage
    hits: int
    misses: int


class CachedBackend:
    """The wrapped backend's interface, answered from the cache where possible."""

    def __init__(self, backend: LLMBackend, storage: Storage) -> None:
        self.backend = backend
        self.storage = storage
        self.id = backend.id
        self.hits = 0
        self.misses = 0
        self._counting = threading.Lock()  # neurons may be scored in parallel threads

    @property
    def parallel_requests(self) -> int:
        return parallel_requests(self.backend)

    def release(self) -> None:
        release = getattr(self.backend, "release", None)
        if release is not None:
            release()

    @property
    def usage(self) -> Usage:
        return self.backend.usage

    @property
    def can_read_digits(self) -> bool:
        return self.backend.can_read_digits

    @property
    def can_read_choices(self) -> bool:
        return self.backend.can_read_choices

    @property
    def abilities(self) -> str:
        return self.backend.abilities

    def report(self) -> UsageReport:
        return UsageReport(self.usage, self.hits, self.misses)

    def absorb(self, report: UsageReport) -> None:
        """Count what a worker's backend spent as spent by this one."""
        self.usage.add(report.usage)
        self.hits += report.hits
        self.misses += report.misses

    def usage_manifest(self) -> dict[str, Any]:
        """What this run asked of the LLM, for a manifest: calls, tokens, cost, cache hits."""
        usage = self.usage
        return {
            "calls": usage.calls,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cached_prompt_tokens": usage.cached_prompt_tokens,
            "cost_usd": round(usage.cost_usd, 6),
            "failures": usage.failures,
            "cache_hits": self.hits,
            "cache_misses": self.misses,
        }

    def _path(self, key: str) -> str:
        return f"{CACHE_DIR}/{key[:2]}/{key}.json"

    def _get(self, key: str) -> Any:
        path = self._path(key)
        if not self.storage.exists(path):
            return None
        return self.storage.read_json(path)

    def generate(self, prompts: Sequence[ChatPrompt], params: GenerationParams) -> list[Generation]:
        keys = [_key(self.id, "generate", prompt.messages, prompt.answer_prefix, asdict(params)) for prompt in prompts]
        found: dict[int, Generation] = {}
        for index, key in enumerate(keys):
            entry = self._get(key)
            if entry is not None:
                found[index] = Generation(
                    tuple(entry["texts"]), None, entry["prompt_tokens"], entry["completion_tokens"]
                )
        with self._counting:
            self.hits += len(found)
        missing = [index for index in range(len(prompts)) if index not in found]
        with self._counting:
            self.misses += len(missing)
        if missing:
            answers = self.backend.generate([prompts[index] for index in missing], params)
            for index, answer in zip(missing, answers, strict=True):
                found[index] = answer
                if answer.failure is None:
                    self.storage.write_json(self._path(keys[index]), asdict(answer))
        return [found[index] for index in range(len(prompts))]

    def read_digits(
        self, prompt: AllAtOncePrompt | LineByLinePrompt, excerpts: Sequence[Sequence[str]]
    ) -> DigitReadout:
        if isinstance(prompt, AllAtOncePrompt):
            kind: tuple[Any, ...] = (
                "read_digits",
                prompt.prefix.messages,
                prompt.prefix.answer_prefix,
                prompt.placeholder,
            )
        else:
            kind = ("read_lines", prompt.prefix.messages, prompt.prefix.answer_prefix)
        keys = [_key(self.id, *kind, prompt.scale, list(tokens)) for tokens in excerpts]
        found, missing = self._lookup(keys)
        if missing:
            readout = self.backend.read_digits(prompt, [excerpts[index] for index in missing])
            if readout.failure is not None:
                return readout
            for index, expected, mass in zip(missing, readout.expected, readout.digit_mass, strict=True):
                found[index] = self._store(keys[index], {"expected": expected, "digit_mass": mass})
        ordered = [found[index] for index in range(len(excerpts))]
        return DigitReadout(
            tuple(tuple(entry["expected"]) for entry in ordered), tuple(tuple(entry["digit_mass"]) for entry in ordered)
        )

    def read_choices(self, prompt: ChoicePrompt, texts: Sequence[str]) -> ChoiceReadout:
        keys = [_key(self.id, "read_choices", prompt.prefix.messages, prompt.choices, text) for text in texts]
        found, missing = self._lookup(keys)
        if missing:
            readout = self.backend.read_choices(prompt, [texts[index] for index in missing])
            if readout.failure is not None:
                return readout
            for index, probabilities in zip(missing, readout.probabilities, strict=True):
                found[index] = self._store(keys[index], {"probabilities": probabilities})
        return ChoiceReadout(tuple(tuple(found[index]["probabilities"]) for index in range(len(texts))))

    def _lookup(self, keys: list[str]) -> tuple[dict[int, dict[str, Any]], list[int]]:
        """Cached entries by position, and the positions to ask the backend for."""
        found = {index: entry for index, key in enumerate(keys) if (entry := self._get(key)) is not None}
        missing = [index for index in range(len(keys)) if index not in found]
        with self._counting:
            self.hits += len(found)
        with self._counting:
            self.misses += len(missing)
        return found, missing

    def _store(self, key: str, entry: dict[str, Any]) -> dict[str, Any]:
        self.storage.write_json(self._path(key), entry)
        return entry


def warn_if_budget_ran_out(logger: Any, llm: CachedBackend) -> None:
    """Say so when the budget stopped requests: their rows are failures, the rest is cached."""
    refused = llm.usage.by_reason.get("budget exhausted", 0)
    if refused:
        logger.warning(
            "budget exhausted: %d requests were not sent and are recorded as failures; answers so far are "
            "cached, so a rerun with a larger budget asks only for the rest",
            refused,
        )
