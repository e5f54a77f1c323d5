"""`openai:<model>`: any OpenAI-compatible chat server (OpenAI, vLLM, Ollama, llama.cpp...).

Requests run concurrently (bounded by a semaphore) on the `openai` async client, which already
retries 429, 5xx, timeouts and dropped connections with exponential backoff and honours
Retry-After. A hard budget in tokens and/or dollars is reserved before each request (prompt
estimate + max answer), so it is never exceeded: once spent, the remaining requests are failures
"budget exhausted" and the stage ends cleanly. The API key comes from `OPENAI_API_KEY` when the
backend is built and appears in no log, manifest or failure reason.

Batch mode (the OpenAI Batch API, half price for offline runs): the requests of a call go up as
one JSONL file, the batch id is stored under the root (`llm_batches/`) before polling starts, and
a rerun with the same requests (after a crash, or after `max_wait_s` ran out) polls that batch
instead of submitting a new one.
"""

import asyncio
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from neuronatlas.adapters.storage import Storage
from neuronatlas.core.llm import ChoiceReadout, DigitReadout, Generation, GenerationParams, Usage
from neuronatlas.core.prompts import AllAtOncePrompt, ChatPrompt, ChoicePrompt, LineByLinePrompt
from neuronatlas.errors import InputError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Budget:
    """A hard limit on what a backend may spend (None: no limit)."""

    max_tokens: int | None = None
    """Prompt plus completion tokens."""
    max_usd: float | None = None
    usd_per_million_prompt: float = 0.0
    usd_per_million_completion: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.usd_per_million_prompt + completion_tokens * self.usd_per_million_completion) / 1e6


class _Ledger:
    """Spent and reserved tokens and dollars, shared by the concurrent requests of a backend."""

    def __init__(self, budget: Budget, usage: Usage) -> None:
        self.budget, self.usage = budget, usage
        self.reserved_tokens = 0
        self.reserved_usd = 0.0
        self.lock = threading.Lock()

    def reserve(self, prompt_tokens: int, completion_tokens: int) -> str | None:
        """Reserve the most a request can cost; the reason it does not fit, if it does not."""
        tokens = prompt_tokens + completion_tokens
        usd = self.budget.cost(prompt_tokens, completion_tokens)
        with self.lock:
            spent_tokens = self.usage.prompt_tokens + self.usage.completion_tokens + self.reserved_tokens
            if self.budget.max_tokens is not None and spent_tokens + tokens > self.budget.max_tokens:
                return f"budget exhausted ({spent_tokens:,} of {self.budget.max_tokens:,} tokens spent or reserved)"
            spent_usd = self.usage.cost_usd + self.reserved_usd
            if self.budget.max_usd is not None and spent_usd + usd > self.budget.max_usd:
                return f"budget exhausted (${spent_usd:.4f} of ${self.budget.max_usd:.4f} spent or reserved)"
            self.reserved_tokens += tokens
            self.reserved_usd += usd
        return None

    def settle(self, reserved: tuple[int, int], prompt_tokens: int, completion_tokens: int) -> None:
        with self.lock:
            self.reserved_tokens -= sum(reserved)
            self.reserved_usd -= self.budget.cost(*reserved)
            self.usage.prompt_tokens += prompt_tokens
            self.usage.completion_tokens += completion_tokens
            self.usage.cost_usd += self.budget.cost(prompt_tokens, completion_tokens)


def estimate_tokens(messages: Sequence[tuple[str, str]]) -> int:
    """A safe over-estimate of a prompt's tokens (about 3 characters a token, plus per-message
    overhead), used only to reserve budget."""
    return sum(math.ceil(len(content) / 3) + 8 for _, content in messages)


class OpenAIBackend:
    """Chat completions on an OpenAI-compatible server (see module docstring)."""

    can_read_digits = False

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        concurrency: int = 8,
        max_retries: int = 5,
        timeout_s: float = 60.0,
        budget: Budget | None = None,
        batch: bool = False,
        store: Storage | None = None,
        poll_s: float = 30.0,
        max_wait_s: float | None = None,
    ) -> None:
        if concurrency < 1:
            raise InputError(f"--concurrency {concurrency}: must be at least 1")
        api_key = os.environ.get("OPENAI_API_KEY")
        if not api_key and base_url is None:
            raise InputError("openai backend: set OPENAI_API_KEY (or pass --base-url for a local server)")
        self.model, self.base_url = model, base_url
        self._client_settings = {
            "api_key": api_key or "unused",
            "base_url": base_url,
            "max_retries": max_retries,
            "timeout": timeout_s,
        }
        self.client: Any = None
        """The async client of the current call: each call runs its own event loop, and an httpx
        pool must not outlive the loop it was made in."""
        self.concurrency = concurrency
        self.id = f"openai:{model}" + (f"@{base_url}" if base_url else "")
        self.usage = Usage()
        self.ledger = _Ledger(budget or Budget(), self.usage)
        if batch and store is None:
            raise InputError("openai batch mode needs a storage root to keep its batch ids")
        self.batch, self.store, self.poll_s, self.max_wait_s = batch, store, poll_s, max_wait_s

    def generate(self, prompts: Sequence[ChatPrompt], params: GenerationParams) -> list[Generation]:
        from openai import AsyncOpenAI

        async def session() -> list[Generation]:
            async with AsyncOpenAI(**self._client_settings) as client:  # type: ignore[arg-type]
                self.client = client
                if self.batch:
                    return await self._generate_batch(prompts, params)
                return await self._generate_all(prompts, params)

        return _run(session())

    def read_digits(
        self, prompt: AllAtOncePrompt | LineByLinePrompt, excerpts: Sequence[Sequence[str]]
    ) -> DigitReadout:
        return DigitReadout(failure=f"{self.id} cannot read prompt probabilities; use the JSON simulator")

    def read_choices(self, prompt: ChoicePrompt, texts: Sequence[str]) -> ChoiceReadout:
        return ChoiceReadout(failure=f"{self.id} cannot read prompt probabilities; use the embedding scorer")

    async def _generate_all(self, prompts: Sequence[ChatPrompt], params: GenerationParams) -> list[Generation]:
        semaphore = asyncio.Semaphore(self.concurrency)
        return list(await asyncio.gather(*(self._generate_one(prompt, params, semaphore) for prompt in prompts)))

    async def _generate_one(
        self, prompt: ChatPrompt, params: GenerationParams, semaphore: asyncio.Semaphore
    ) -> Generation:
        messages = _chat_messages(prompt)
        # all samples of a prompt are reserved together: a prompt is answered whole or not sent
        reserved = (estimate_tokens(prompt.messages) * params.n, params.max_tokens * params.n)
        refusal = self.ledger.reserve(*reserved)
        if refusal is not None:
            return self._failed(refusal, 0, 0)
        texts: list[str] = []
        used = [0, 0]
        try:
            for sample in range(params.n):  # one request per sample: not every server honours n > 1
                try:
                    async with semaphore:
                        self.usage.calls += 1
                        response = await self.client.chat.completions.create(
                            model=self.model,
                            messages=messages,
                            temperature=params.temperature,
                            max_tokens=params.max_tokens,
                            seed=params.seed + sample,
                        )
                    text, (prompt_tokens, completion_tokens) = _answer(response)
                except Exception as error:  # every failure becomes a reason; none escapes as a crash
                    return self._failed(_describe(error), *used)
                used[0] += prompt_tokens
                used[1] += completion_tokens
                if text is None:
                    return self._failed("response has no message content", *used)
                texts.append(text)
        finally:
            self.ledger.settle(reserved, *used)
        return Generation(tuple(texts), None, *used)

    def _failed(self, reason: str, prompt_tokens: int, completion_tokens: int) -> Generation:
        self.usage.failures += 1
        key = reason.split(" (", maxsplit=1)[0]
        self.usage.by_reason[key] = self.usage.by_reason.get(key, 0) + 1
        return Generation((), reason, prompt_tokens, completion_tokens)

    # -- the Batch API ----------------------------------------------------------------------------

    def _batch_lines(self, prompts: Sequence[ChatPrompt], params: GenerationParams) -> list[dict[str, Any]]:
        return [
            {
                "custom_id": f"{index}-{sample}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": self.model,
                    "messages": _chat_messages(prompt),
                    "temperature": params.temperature,
                    "max_tokens": params.max_tokens,
                    "seed": params.seed + sample,
                },
            }
            for index, prompt in enumerate(prompts)
            for sample in range(params.n)
        ]

    async def _generate_batch(self, prompts: Sequence[ChatPrompt], params: GenerationParams) -> list[Generation]:
        assert self.store is not None
        lines = self._batch_lines(prompts, params)
        payload = "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines).encode()
        state = f"llm_batches/{hashlib.sha256(self.id.encode() + payload).hexdigest()[:24]}.json"
        if self.store.exists(state):
            batch_id = self.store.read_json(state)["batch_id"]
            log.info("resuming batch %s (%d requests)", batch_id, len(lines))
        else:
            reserved = (sum(estimate_tokens(p.messages) for p in prompts) * params.n, params.max_tokens * len(lines))
            refusal = self.ledger.reserve(*reserved)
            if refusal is not None:
                return [self._failed(refusal, 0, 0) for _ in prompts]
            self.ledger.settle(reserved, 0, 0)  # counted when the results come back
            try:
                uploaded = await self.client.files.create(file=("requests.jsonl", payload), purpose="batch")
                created = await self.client.batches.create(
                    input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
                )
            except Exception as error:
                return [self._failed(f"batch submission failed: {_describe(error)}", 0, 0) for _ in prompts]
            batch_id = created.id
            self.store.write_json(state, {"batch_id": batch_id, "requests": len(lines), "submitted": time.time()})
            self.usage.calls += 1
        return await self._collect(batch_id, prompts, params)

    async def _collect(
        self, batch_id: str, prompts: Sequence[ChatPrompt], params: GenerationParams
    ) -> list[Generation]:
        started = time.monotonic()
        while True:
            batch = await self.client.batches.retrieve(batch_id)
            if batch.status in ("completed", "failed", "expired", "cancelled"):
                break
            if self.max_wait_s is not None and time.monotonic() - started > self.max_wait_s:
                reason = f"batch {batch_id} still {batch.status}; rerun to resume it"
                return [self._failed(reason, 0, 0) for _ in prompts]
            await asyncio.sleep(self.poll_s)
        if batch.status != "completed" or not batch.output_file_id:
            return [self._failed(f"batch {batch_id} {batch.status}", 0, 0) for _ in prompts]
        output = (await self.client.files.content(batch.output_file_id)).text
        answers: dict[str, tuple[str | None, str | None, tuple[int, int]]] = {}
        for line in filter(None, output.splitlines()):
            item = json.loads(line)
            answers[item["custom_id"]] = _batch_answer(item)
        return [self._gather_samples(index, params.n, answers) for index in range(len(prompts))]

    def _gather_samples(self, index: int, n: int, answers: dict) -> Generation:
        texts, prompt_tokens, completion_tokens = [], 0, 0
        for sample in range(n):
            text, failure, used = answers.get(f"{index}-{sample}", (None, "no result for this request", (0, 0)))
            self.ledger.settle((0, 0), *used)
            prompt_tokens, completion_tokens = prompt_tokens + used[0], completion_tokens + used[1]
            if failure is not None or text is None:
                return self._failed(failure or "response has no message content", prompt_tokens, completion_tokens)
            texts.append(text)
        return Generation(tuple(texts), None, prompt_tokens, completion_tokens)


def _batch_answer(item: dict[str, Any]) -> tuple[str | None, str | None, tuple[int, int]]:
    """(text, failure, (prompt, completion) tokens) of one line of a batch's output file."""
    response = item.get("response") or {}
    if item.get("error") or response.get("status_code") != 200:
        error = item.get("error") or response.get("body", {}).get("error", {})
        return None, f"batch request failed: {str(error.get('message', error))[:160]}", (0, 0)
    body = response["body"]
    usage = body.get("usage") or {}
    used = (usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
    try:
        return body["choices"][0]["message"]["content"], None, used
    except (KeyError, IndexError, TypeError):
        return None, "malformed batch response body", used


def _chat_messages(prompt: ChatPrompt) -> list[dict[str, str]]:
    """Chat APIs cannot prefill the answer: ask for it to begin with the prefix instead."""
    messages = [{"role": role, "content": content} for role, content in prompt.messages]
    if prompt.answer_prefix and messages[-1]["role"] == "user":
        messages[-1]["content"] += f'\n\nAnswer with one sentence that begins "{prompt.answer_prefix}".'
    return messages


def _answer(response: Any) -> tuple[str | None, tuple[int, int]]:
    """The first choice's text and the (prompt, completion) tokens; raises on a malformed body."""
    if not hasattr(response, "choices"):  # a body that is not a chat completion (garbage JSON, text)
        raise ValueError(f"malformed response body: {str(response)[:80]!r}")
    usage = getattr(response, "usage", None)
    used = (getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0)
    if not response.choices:
        raise ValueError("response has no choices")
    return response.choices[0].message.content, used


def _describe(error: Exception) -> str:
    status = getattr(error, "status_code", None)
    message = str(getattr(error, "message", None) or error).splitlines()[0][:160]
    return f"{type(error).__name__}" + (f" {status}" if status else "") + f": {message}"


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code, also when this thread already has a
    running event loop (then in a helper thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coroutine))
        except BaseException as error:  # re-raised in the caller's thread
            errors.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]
