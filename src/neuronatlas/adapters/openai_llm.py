"""`openai:<model>`: any OpenAI-compatible chat server (OpenAI, vLLM, Ollama, llama.cpp...).

Every question becomes chat-completion request bodies; how they travel is separate:

- **Direct**: concurrently (bounded by a semaphore) over `openai_http.Transport` (aiohttp, the
  `openai` client's retry policy: 429, 5xx, timeouts and dropped connections with exponential
  backoff, Retry-After honoured), at a fifth of the `openai` client's CPU per request.
- **Batch** (the OpenAI Batch API, half price for offline runs): requests go up as one JSONL file
  whose lines are named by the sha256 of their body; each batch's id and request names are stored
  under the root (`llm_batches/`) before polling starts. A later call (a rerun after a crash, or
  after `max_wait_s` ran out) that asks for requests some stored batch holds polls that batch
  instead of submitting them again; only requests no batch answered go up in a new one. A stage
  uses `collecting()` then `flush()` so that all of its requests form one batch (`tasks/llm.py`).

A hard budget in tokens and/or dollars is reserved before each request (an upper bound of the
prompt's tokens + the most the answer may use), so it is never exceeded: once spent, the
remaining requests are failures "budget exhausted" and the stage ends cleanly. The prompt bound is
the model's own chat template and tokenizer where `--llm-tokenizer` names one, else the UTF-8
bytes of the messages (a byte-level or byte-fallback tokenizer never makes more tokens than bytes)
plus a per-message allowance for the template. The server's own token counts settle the account.

Yes/No readouts (detection, fuzzing) ask for a one-token answer with `top_logprobs` and sum each
choice's variants (" Yes", "yes"...). A probe request at first use finds out whether the server
returns them; a positive answer is remembered under the root (a negative one
is asked again by the next run). The API key comes from
`OPENAI_API_KEY` when the backend is built and appears in no log, manifest or failure reason.
"""

import asyncio
import hashlib
import json
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar

from neuronatlas import __version__
from neuronatlas.adapters.openai_http import Transport, TransportError
from neuronatlas.adapters.storage import Storage
from neuronatlas.core.llm import ChoiceReadout, DigitReadout, Generation, GenerationParams, Usage
from neuronatlas.core.prompts import (
    EXCERPT_MARK,
    AllAtOncePrompt,
    ChatPrompt,
    ChoicePrompt,
    LineByLinePrompt,
    token_line_pieces,
)
from neuronatlas.errors import InputError

log = logging.getLogger(__name__)
T = TypeVar("T")

BATCH_DIR = "llm_batches"
TOP_LOGPROBS = 20
"""Alternatives asked for per answer token (OpenAI's maximum)."""
MESSAGE_ALLOWANCE = 16
"""Template tokens allowed per message when no tokenizer is known (role markers, separators)."""
REQUEST_ALLOWANCE = 64
"""Template tokens allowed per request when no tokenizer is known (generation prompt, a default
system message some templates add)."""
DEFERRED = "deferred to this stage's batch"
DEFAULT_BASE_URL = "https://api.openai.com/v1"


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


class Ledger:
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
            refusal = self.refusal(spent_tokens, self.usage.cost_usd + self.reserved_usd, tokens, usd)
            if refusal is None:
                self.reserved_tokens += tokens
                self.reserved_usd += usd
        return refusal

    def refusal(self, spent_tokens: int, spent_usd: float, tokens: int, usd: float) -> str | None:
        if self.budget.max_tokens is not None and spent_tokens + tokens > self.budget.max_tokens:
            return f"budget exhausted ({spent_tokens:,} of {self.budget.max_tokens:,} tokens spent or reserved)"
        if self.budget.max_usd is not None and spent_usd + usd > self.budget.max_usd:
            return f"budget exhausted (${spent_usd:.4f} of ${self.budget.max_usd:.4f} spent or reserved)"
        return None

    def settle(self, reserved: tuple[int, int], prompt_tokens: int, completion_tokens: int) -> None:
        with self.lock:
            self.reserved_tokens -= sum(reserved)
            self.reserved_usd -= self.budget.cost(*reserved)
            self.usage.prompt_tokens += prompt_tokens
            self.usage.completion_tokens += completion_tokens
            self.usage.cost_usd += self.budget.cost(prompt_tokens, completion_tokens)


class SharedLedger(Ledger):
    """One budget for the backends of every Dask worker of a stage: the spent and reserved totals
    live on the Dask scheduler (a `distributed.Variable` named after the stage's invocation,
    changed only under a `distributed.Lock` of the same name); this backend's own usage is kept
    as well, for its report."""

    def __init__(self, name: str, budget: Budget, usage: Usage) -> None:
        super().__init__(budget, usage)
        self.name = name

    def reserve(self, prompt_tokens: int, completion_tokens: int) -> str | None:
        tokens = prompt_tokens + completion_tokens
        usd = self.budget.cost(prompt_tokens, completion_tokens)
        with self._shared() as state:
            refusal = self.refusal(
                state["tokens"] + state["reserved_tokens"], state["usd"] + state["reserved_usd"], tokens, usd
            )
            if refusal is None:
                state["reserved_tokens"] += tokens
                state["reserved_usd"] += usd
        return refusal

    def settle(self, reserved: tuple[int, int], prompt_tokens: int, completion_tokens: int) -> None:
        with self._shared() as state:
            state["reserved_tokens"] -= sum(reserved)
            state["reserved_usd"] -= self.budget.cost(*reserved)
            state["tokens"] += prompt_tokens + completion_tokens
            state["usd"] += self.budget.cost(prompt_tokens, completion_tokens)
        with self.lock:
            self.usage.prompt_tokens += prompt_tokens
            self.usage.completion_tokens += completion_tokens
            self.usage.cost_usd += self.budget.cost(prompt_tokens, completion_tokens)

    @contextmanager
    def _shared(self) -> Iterator[dict[str, Any]]:
        from distributed import Lock, Variable

        variable = Variable(self.name)
        with Lock(f"{self.name}-lock"):
            try:
                state = dict(variable.get(timeout=0.2))
            except TimeoutError:  # the first request of the stage
                state = {"tokens": 0, "usd": 0.0, "reserved_tokens": 0, "reserved_usd": 0.0}
            yield state
            variable.set(state)


def byte_bound(messages: Sequence[dict[str, str]]) -> int:
    """An upper bound of a chat request's prompt tokens without its tokenizer: each token of a
    byte-level (GPT-2, tiktoken, Qwen, Llama 3) or byte-fallback (SentencePiece) tokenizer covers
    at least one byte, plus the template's allowances."""
    return sum(len(m["content"].encode()) + MESSAGE_ALLOWANCE for m in messages) + REQUEST_ALLOWANCE


def chat_template(
    model: str,
) -> tuple[Callable[[Sequence[dict[str, str]]], int], Callable[[Sequence[dict[str, str]]], str]]:
    """A shipped model's (or model folder's) chat template: (prompt bound, rendered text)."""
    from neuronatlas.adapters.models import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model(model))

    def count(messages: Sequence[dict[str, str]]) -> int:
        ids = tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return len(ids) + MESSAGE_ALLOWANCE

    def render(messages: Sequence[dict[str, str]]) -> str:
        text: str = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        return text

    return count, render


def body_key(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Answer:
    """One request's response body, or why there is none, and the tokens it used."""

    body: dict[str, Any] | None
    failure: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens the server read from its prefix cache, as its usage reports them."""


@dataclass(frozen=True)
class Request:
    """The bodies of one question (a prompt's samples), reserved and answered together."""

    bodies: tuple[dict[str, Any], ...]
    reserve: tuple[int, int]
    """Upper bounds of (prompt, completion) tokens of all the bodies."""
    endpoint: str = "chat"
    """chat (chat completions) or completions (raw text, for prompt log-probabilities)."""


@dataclass(frozen=True)
class Capabilities:
    """What the server answers besides text, found by `probe`."""

    choice_logprobs: bool
    reason: str
    """Why (for the log and the manifest)."""


class OpenAIBackend:
    """Chat completions on an OpenAI-compatible server (see module docstring)."""

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
        prompt_bound: Callable[[Sequence[dict[str, str]]], int] = byte_bound,
        shared_budget: str | None = None,
        template: Callable[[Sequence[dict[str, str]]], str] | None = None,
    ) -> None:
        """`shared_budget`: the name of a budget the Dask workers of a stage share (`SharedLedger`);
        `template`: the model's chat template, for all-at-once simulation (`chat_template`)."""
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
        """The `openai` async client of the current Batch API call: each call runs its own event
        loop, and a connection pool must not outlive the loop it was made in."""
        self._transport_settings: dict[str, Any] = {
            "base_url": base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
            "headers": _headers(api_key or "unused"),
            "max_retries": max_retries,
            "timeout_s": timeout_s,
            "connections": concurrency,
        }
        self._loop: LoopThread | None = None
        """Direct requests run on an event loop of the backend's own, in a thread started at first
        use and stopped when the backend is collected: one connection pool kept warm across calls
        and one concurrency limit for every call, from whichever thread (neurons scored in
        parallel) it comes."""
        self._start = threading.Lock()
        self.concurrency = concurrency
        self.id = f"openai:{model}" + (f"@{base_url}" if base_url else "")
        self.usage = Usage()
        budget = budget or Budget()
        limited = budget.max_tokens is not None or budget.max_usd is not None
        self.ledger = (
            SharedLedger(shared_budget, budget, self.usage) if shared_budget and limited else Ledger(budget, self.usage)
        )
        if batch and store is None:
            raise InputError("openai batch mode needs a storage root to keep its batch ids")
        self.batch, self.store, self.poll_s, self.max_wait_s = batch, store, poll_s, max_wait_s
        self.prompt_bound = prompt_bound
        self._collected: dict[str, Request] | None = None
        """Batch mode, while collecting: the requests asked for, by their first body's key."""
        self._answered: dict[str, Answer] = {}
        """Batch mode: answers fetched by `flush`, by body key."""
        self._pending: list[Request] = []
        """Batch mode: what `collecting` recorded, for `flush`."""
        self._capabilities: Capabilities | None = None
        self.template = template
        self._prompt_logprobs: tuple[bool, str] | None = None

    # -- the interface --------------------------------------------------------------------------

    def generate(self, prompts: Sequence[ChatPrompt], params: GenerationParams) -> list[Generation]:
        requests = []
        for prompt in prompts:
            messages = _chat_messages(prompt)
            bodies = tuple(
                {
                    "model": self.model,
                    "messages": messages,
                    "temperature": params.temperature,
                    "max_tokens": params.max_tokens,
                    "seed": params.seed + sample,  # one request per sample: not every server honours n > 1
                }
                for sample in range(params.n)
            )
            requests.append(Request(bodies, (self.prompt_bound(messages) * params.n, params.max_tokens * params.n)))
        return [self._generation(answers) for answers in self._ask(requests)]

    @property
    def can_read_digits(self) -> bool:
        return self.prompt_logprobs()[0]

    def read_digits(
        self, prompt: AllAtOncePrompt | LineByLinePrompt, excerpts: Sequence[Sequence[str]]
    ) -> DigitReadout:
        """All-at-once simulation as in process: per excerpt, the prompt text (the chat template
        rendered here, the answer begun) with a placeholder where each token's activation goes;
        the server echoes the prompt with each position's top alternatives, and the digits' share
        where each placeholder starts is the expected activation. One request per call: the
        excerpts go as a list of prompts."""
        if isinstance(prompt, LineByLinePrompt):
            return DigitReadout(failure=f"{self.id}: line-by-line simulation runs in process only")
        able, reason = self.prompt_logprobs()
        if not able or self.template is None:
            return DigitReadout(failure=f"{self.id}: {reason}")
        head = self.template(_chat_messages(replace(prompt.prefix, answer_prefix=""))) + prompt.prefix.answer_prefix
        texts, reads = [], []
        for tokens in excerpts:
            text, offsets = head, []
            for before, after in token_line_pieces(tokens, prompt.placeholder):
                text += before
                offsets.append(len(text))
                text += after
            texts.append(text)
            reads.append(offsets)
        body = {
            "model": self.model,
            "prompt": texts,
            "echo": True,
            "logprobs": TOP_LOGPROBS,
            "max_tokens": 1,
            "temperature": 0.0,
        }
        bound = sum(self.prompt_bound([{"role": "user", "content": text}]) for text in texts)
        [[answer]] = self._ask([Request((body,), (bound, len(texts)), "completions")])
        if answer.failure is not None:
            return DigitReadout(failure=answer.failure)
        return _digit_readout(answer.body, reads, prompt.scale)

    def prompt_logprobs(self) -> tuple[bool, str]:
        """Whether the server echoes prompt log-probabilities aligned with the prompt's tokens
        (completions with `echo` and `logprobs`), found by one probe on a known text at first use;
        a positive answer is remembered under the root."""
        if self._prompt_logprobs is None:
            self._prompt_logprobs = self._probe_prompt_logprobs()
            log.info("%s: %s", self.id, self._prompt_logprobs[1])
        return self._prompt_logprobs

    def _probe_prompt_logprobs(self) -> tuple[bool, str]:
        if self.template is None:
            return False, "all-at-once simulation over an API needs the model's chat template: pass --llm-tokenizer"
        state = f"{BATCH_DIR}/prompt-logprobs-{hashlib.sha256(self.id.encode()).hexdigest()[:16]}.json"
        if self.store is not None and self.store.exists(state):
            return True, str(self.store.read_json(state)["reason"])
        body = {"model": self.model, "prompt": PROBE_TEXT, "echo": True, "logprobs": TOP_LOGPROBS, "max_tokens": 1}
        answer = self._on_loop(lambda: self._send(body, "completions"))
        self.usage.calls += 1
        self.ledger.settle((0, 0), answer.prompt_tokens, answer.completion_tokens)
        if answer.failure is not None:
            return False, f"no prompt log-probabilities (completions with echo and logprobs: {answer.failure})"
        able, reason = _alignment(answer.body)
        if able and self.store is not None:
            self.store.write_json(state, {"reason": reason, "probed": time.time()})
        return able, reason

    @property
    def can_read_choices(self) -> bool:
        return self.capabilities().choice_logprobs

    @property
    def abilities(self) -> str:
        """What the probes made so far found (none is made for this)."""
        found = [self._prompt_logprobs[1]] if self._prompt_logprobs else []
        found += [self._capabilities.reason] if self._capabilities else []
        return "; ".join(found) or "not probed"

    def read_choices(self, prompt: ChoicePrompt, texts: Sequence[str]) -> ChoiceReadout:
        """Per text, each choice's probability as the first answer token: its variants' (" Yes",
        "yes"...) probabilities among the top alternatives, summed."""
        capabilities = self.capabilities()
        if not capabilities.choice_logprobs:
            return ChoiceReadout(failure=f"{self.id}: {capabilities.reason}")
        requests = []
        for text in texts:
            messages = [
                {"role": role, "content": content.replace(EXCERPT_MARK, text)}
                for role, content in prompt.prefix.messages
            ]
            requests.append(Request((_choice_body(self.model, messages),), (self.prompt_bound(messages), 1)))
        probabilities = []
        for index, [answer] in enumerate(self._ask(requests)):
            if answer.failure is not None:
                return ChoiceReadout(failure=answer.failure)
            found = _choice_probabilities(answer.body, prompt.choices)
            if isinstance(found, str):
                return ChoiceReadout(failure=f"text {index}: {found}")
            probabilities.append(found)
        return ChoiceReadout(tuple(probabilities))

    # -- what the server can do -----------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        """One probe request at first use (remembered under the root when positive)."""
        if self._capabilities is None:
            self._capabilities = self._probe()
            log.info("%s: %s", self.id, self._capabilities.reason)
        return self._capabilities

    def _probe(self) -> Capabilities:
        state = f"{BATCH_DIR}/capabilities-{hashlib.sha256(self.id.encode()).hexdigest()[:16]}.json"
        if self.store is not None and self.store.exists(state):
            found = self.store.read_json(state)
            return Capabilities(found["choice_logprobs"], found["reason"])
        messages = [
            {"role": "system", "content": "Answer with one word."},
            {"role": "user", "content": "Is Paris in France? Answer Yes or No."},
        ]
        body = _choice_body(self.model, messages)
        answer = self._on_loop(lambda: self._send(body))
        self.usage.calls += 1
        self.ledger.settle((0, 0), answer.prompt_tokens, answer.completion_tokens)
        if answer.failure is not None:
            return Capabilities(False, f"the probe request failed ({answer.failure}), so no Yes/No readouts")
        found = _choice_probabilities(answer.body, ("Yes", "No"))
        if isinstance(found, str):
            capabilities = Capabilities(False, f"the server returns no usable top_logprobs ({found})")
        else:
            capabilities = Capabilities(True, "the server returns top_logprobs: Yes/No readouts read them")
        if self.store is not None and capabilities.choice_logprobs:  # a server may gain them, not lose them
            self.store.write_json(state, {**asdict(capabilities), "probed": time.time()})
        return capabilities

    # -- transport --------------------------------------------------------------------------------

    def _ask(self, requests: Sequence[Request]) -> list[list[Answer]]:
        if not requests:
            return []
        if not self.batch or any(r.endpoint != "chat" for r in requests):  # a batch has one endpoint: chat
            return self._on_loop(lambda: self._direct(requests))
        if self._collected is not None:
            for request in requests:
                self._collected.setdefault(body_key(request.bodies[0]), request)
            return [[Answer(None, DEFERRED)] * len(r.bodies) for r in requests]
        missing = [r for r in requests if any(body_key(b) not in self._answered for b in r.bodies)]
        if missing:
            self._answered.update(_run(self._with_client(lambda: self._batch(missing))))
        answers = [[self._answered[body_key(b)] for b in r.bodies] for r in requests]
        for asked in answers:
            for answer in asked:
                if answer.failure is not None:
                    self._count_failure(answer.failure)
        return answers

    async def _with_client(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        from openai import AsyncOpenAI

        async with AsyncOpenAI(**self._client_settings) as client:  # type: ignore[arg-type]
            self.client = client
            return await work()

    @property
    def parallel_requests(self) -> int:
        """How many requests this backend keeps in flight at once: callers with independent work
        (a layer's neurons) give it that much to do. Batch mode collects first: one at a time."""
        return 1 if self.batch else self.concurrency

    def _on_loop(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        with self._start:
            if self._loop is None:
                self._loop = LoopThread(Transport(**self._transport_settings), self.concurrency)
                weakref.finalize(self, self._loop.stop)
        return self._loop.run(work)

    def release(self) -> None:
        """Close the connection pool and stop the loop (the next call starts them again)."""
        with self._start:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.stop()

    async def _direct(self, requests: Sequence[Request]) -> list[list[Answer]]:
        assert self._loop is not None
        semaphore = self._loop.gate

        shared = isinstance(self.ledger, SharedLedger)  # its calls go to the Dask scheduler: off the loop

        async def account(call: Callable[..., T], *args: Any) -> T:
            return await asyncio.to_thread(call, *args) if shared else call(*args)

        async def one(request: Request) -> list[Answer]:
            refusal = await account(self.ledger.reserve, *request.reserve)
            if refusal is not None:
                self._count_failure(refusal)
                return [Answer(None, refusal)] * len(request.bodies)

            async def send(body: dict[str, Any]) -> Answer:
                async with semaphore:
                    self.usage.calls += 1
                    return await self._send(body, request.endpoint)

            answers = list(await asyncio.gather(*(send(body) for body in request.bodies)))
            used = (sum(a.prompt_tokens for a in answers), sum(a.completion_tokens for a in answers))
            await account(self.ledger.settle, request.reserve, *used)
            for answer in answers:
                if answer.failure is not None:
                    self._count_failure(answer.failure)
            return answers

        return list(await asyncio.gather(*(one(request) for request in requests)))

    async def _send(self, body: dict[str, Any], endpoint: str = "chat") -> Answer:
        try:
            path = "/chat/completions" if endpoint == "chat" else "/completions"
            assert self._loop is not None
            answer = _parse(await self._loop.transport.post(path, body))
            self.usage.cached_prompt_tokens += answer.cached_tokens
            return answer
        except TransportError as error:
            return Answer(None, error.reason)
        except Exception as error:  # every failure becomes a reason; none escapes as a crash
            return Answer(None, _describe(error))

    def _count_failure(self, reason: str) -> None:
        self.usage.failures += 1
        key = reason.split(" (", maxsplit=1)[0]
        self.usage.by_reason[key] = self.usage.by_reason.get(key, 0) + 1

    def _generation(self, answers: list[Answer]) -> Generation:
        used = (sum(a.prompt_tokens for a in answers), sum(a.completion_tokens for a in answers))
        for answer in answers:
            if answer.failure is not None:
                return Generation((), answer.failure, *used)
        texts = [_text(answer.body) for answer in answers]
        if any(text is None for text in texts):
            return Generation((), "response has no message content", *used)
        return Generation(tuple(t for t in texts if t is not None), None, *used)

    # -- the Batch API ----------------------------------------------------------------------------

    @contextmanager
    def collecting(self) -> Iterator[None]:
        """Batch mode: record what is asked (answered "deferred") instead of sending it."""
        self._collected = {}
        try:
            yield
        finally:
            collected, self._collected = self._collected, None
            self._pending = list(collected.values())

    @property
    def pending(self) -> list[Request]:
        """What `collecting` recorded and `flush` will send."""
        return self._pending

    def flush(self) -> list[str]:
        """Batch mode: send what `collecting` recorded as one batch (resuming any stored batch
        that holds some of it) and wait; the batches still running when `max_wait_s` ran out."""
        pending, self._pending = self._pending, []
        if not pending:
            return []
        self._answered.update(_run(self._with_client(lambda: self._batch(pending))))
        return sorted(
            {a.failure.split()[1] for a in self._answered.values() if a.failure and a.failure.endswith(RESUME)}
        )

    async def _batch(self, requests: Sequence[Request]) -> dict[str, Answer]:
        """Answers by body key: from stored batches that hold them, the rest from a new batch."""
        assert self.store is not None
        deadline = None if self.max_wait_s is None else time.monotonic() + self.max_wait_s
        wanted = {body_key(b): b for r in requests for b in r.bodies}
        found: dict[str, Answer] = {}
        for state in self._states(set(wanted)):
            held = set(state["keys"]) & set(wanted)
            if not held - set(found):
                continue
            log.info("resuming batch %s (%d of its requests wanted)", state["batch_id"], len(held))
            answers = await self._collect(state["batch_id"], deadline)
            for key in held:
                answer = answers.get(key) if isinstance(answers, dict) else Answer(None, answers)
                if answer is not None and (answer.failure is None or answer.failure.endswith(RESUME)):
                    found[key] = answer
        fresh = [r for r in requests if any(body_key(b) not in found for b in r.bodies)]
        submit: dict[str, dict[str, Any]] = {}
        reserved = [0, 0]
        for request in fresh:
            refusal = self.ledger.reserve(*request.reserve)
            for body in request.bodies:
                if refusal is None:
                    submit[body_key(body)] = body
                else:
                    found[body_key(body)] = Answer(None, refusal)
            if refusal is None:
                reserved = [reserved[0] + request.reserve[0], reserved[1] + request.reserve[1]]
        if submit:
            batch_id = await self._submit(submit)
            answers = await self._collect(batch_id, deadline) if batch_id else "batch submission failed (see the log)"
            for key in submit:
                answer = answers.get(key) if isinstance(answers, dict) else Answer(None, answers)
                found[key] = answer or Answer(None, "no result for this request in the batch output")
        self.ledger.settle((reserved[0], reserved[1]), 0, 0)  # the answers' own counts were settled
        return {key: found.get(key, Answer(None, "no result for this request")) for key in wanted}

    def _states(self, keys: set[str]) -> list[dict[str, Any]]:
        """Stored batches of this backend that hold any of `keys`, oldest first."""
        assert self.store is not None
        states = []
        for name in self.store.list(BATCH_DIR):
            if not name.startswith("batch-"):
                continue
            state = self.store.read_json(f"{BATCH_DIR}/{name}")
            if state.get("backend") == self.id and keys & set(state["keys"]):
                states.append(state)
        return sorted(states, key=lambda s: s["submitted"])

    async def _submit(self, bodies: dict[str, dict[str, Any]]) -> str | None:
        """Upload and create one batch; its id and request names stored before anything else."""
        assert self.store is not None
        lines = [
            {"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body}
            for key, body in bodies.items()
        ]
        payload = "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines).encode()
        try:
            uploaded = await self.client.files.create(file=("requests.jsonl", payload), purpose="batch")
            created = await self.client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
        except Exception as error:
            log.error("batch submission failed: %s", _describe(error))
            return None
        digest = hashlib.sha256(payload).hexdigest()[:24]
        self.store.write_json(
            f"{BATCH_DIR}/batch-{digest}.json",
            {"batch_id": created.id, "backend": self.id, "keys": list(bodies), "submitted": time.time()},
        )
        self.usage.calls += len(lines)
        log.info("submitted batch %s: %d requests", created.id, len(lines))
        return str(created.id)

    async def _collect(self, batch_id: str, deadline: float | None) -> dict[str, Answer] | str:
        """A batch's answers by request name once it ends, or why there are none."""
        while True:
            try:
                batch = await self.client.batches.retrieve(batch_id)
            except Exception as error:
                return f"batch {batch_id} could not be polled: {_describe(error)}"
            if batch.status in ("completed", "failed", "expired", "cancelled"):
                break
            if deadline is not None and time.monotonic() > deadline:
                return f"batch {batch_id} still {batch.status}{RESUME}"
            await asyncio.sleep(self.poll_s)
        if batch.status != "completed" or not batch.output_file_id:
            return f"batch {batch_id} {batch.status}"
        output = (await self.client.files.content(batch.output_file_id)).text
        answers = {}
        for line in filter(None, output.splitlines()):
            item = json.loads(line)
            answer = _batch_answer(item)
            self.usage.cached_prompt_tokens += answer.cached_tokens
            self.ledger.settle((0, 0), answer.prompt_tokens, answer.completion_tokens)
            answers[item["custom_id"]] = answer
        return answers


RESUME = "; rerun to resume it"
PROBE_TEXT = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20"
"""A text whose every next token is predictable: the probe of echoed prompt log-probabilities."""


def _alignment(body: dict[str, Any] | None) -> tuple[bool, str]:
    """Whether echoed prompt log-probabilities are aligned: at a position, the most likely
    alternative should be the prompt's own token there (aligned), not the next one (shifted)."""
    try:
        found = body["choices"][0]["logprobs"]  # type: ignore[index]
        tokens, top = found["tokens"], found["top_logprobs"]
    except (KeyError, IndexError, TypeError):
        return False, "no prompt log-probabilities (the server echoes no logprobs with the prompt)"
    aligned = shifted = counted = 0
    for i in range(1, len(tokens) - 1):
        if not top[i]:
            continue
        best = max(top[i], key=top[i].get)
        counted += 1
        aligned += best == tokens[i]
        shifted += best == tokens[i + 1]
    if counted and aligned >= 0.6 * counted and aligned > shifted:
        return True, f"the server echoes prompt log-probabilities, aligned ({aligned} of {counted} probe positions)"
    if shifted > aligned:
        return False, (
            "the server's echoed prompt log-probabilities are shifted by one position (each token's alternatives "
            f"are the next position's: {shifted} of {counted} probe positions), as llama.cpp's server returns them; "
            "all-at-once readouts would be misread, so they are refused"
        )
    return False, f"the server's echoed prompt log-probabilities do not follow the probe text ({aligned} of {counted})"


def _digit_readout(body: dict[str, Any] | None, reads: list[list[int]], scale: int) -> DigitReadout:
    """Per excerpt and read offset (where a placeholder starts in its prompt text), the expected
    digit and the digits' probability among the top alternatives there."""
    try:
        choices = sorted(body["choices"], key=lambda c: c.get("index", 0))  # type: ignore[index]
    except (KeyError, TypeError):
        return DigitReadout(failure="malformed completions response")
    if len(choices) != len(reads):
        return DigitReadout(failure=f"{len(choices)} answers to {len(reads)} prompts")
    digits = [str(d) for d in range(scale + 1)]
    expected, mass = [], []
    for x, (choice, offsets) in enumerate(zip(choices, reads, strict=True)):
        found = choice.get("logprobs") or {}
        at = {offset: i for i, offset in enumerate(found.get("text_offset") or [])}
        top = found.get("top_logprobs") or []
        values, shares = [], []
        for k, offset in enumerate(offsets):
            i = at.get(offset)
            if i is None or i >= len(top) or not top[i]:
                return DigitReadout(failure=f"excerpt {x} token {k}: no server token starts at its placeholder")
            p = [sum(math.exp(lp) for token, lp in top[i].items() if token == digit) for digit in digits]
            if not any(p):
                return DigitReadout(failure=f"excerpt {x} token {k}: no digit among the top {len(top[i])} next tokens")
            values.append(sum(d * q for d, q in enumerate(p)) / sum(p))
            shares.append(sum(p))
        expected.append(tuple(values))
        mass.append(tuple(shares))
    return DigitReadout(tuple(expected), tuple(mass))


def _choice_body(model: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    """A one-token answer with its top alternatives' log-probabilities."""
    return {
        "model": model,
        "messages": messages,
        "temperature": 0.0,
        "max_tokens": 1,
        "logprobs": True,
        "top_logprobs": TOP_LOGPROBS,
    }


def _choice_probabilities(body: dict[str, Any] | None, choices: Sequence[str]) -> tuple[float, ...] | str:
    """Each choice's probability as the first answer token (variants summed), or why not."""
    try:
        first = body["choices"][0]["logprobs"]["content"][0]  # type: ignore[index]
        alternatives = first["top_logprobs"]
    except (KeyError, IndexError, TypeError):
        return "no top_logprobs in the response"
    if len(alternatives) < 2:
        return f"only {len(alternatives)} top_logprobs in the response"
    wanted = [choice.strip().lower() for choice in choices]
    sums = [0.0] * len(choices)
    for alternative in alternatives:
        token = str(alternative.get("token", "")).strip().lower()
        if token in wanted:
            sums[wanted.index(token)] += math.exp(float(alternative["logprob"]))
    if not any(sums):
        return f"none of {', '.join(choices)} among the top {len(alternatives)} answers"
    return tuple(sums)


def _parse(body: Any) -> Answer:
    """A chat completion body as an answer; a body that is not one is a failure."""
    if not isinstance(body, dict) or "choices" not in body:
        return Answer(None, f"ValueError: response has no choices: {str(body)[:80]!r}")
    usage = body.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    used = (usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0, details.get("cached_tokens") or 0)
    if not body["choices"]:
        return Answer(None, "ValueError: response has no choices", *used)
    return Answer(body, None, *used)


def _text(body: dict[str, Any] | None) -> str | None:
    try:
        return body["choices"][0]["message"]["content"]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        return None


def _batch_answer(item: dict[str, Any]) -> Answer:
    """One line of a batch's output file."""
    response = item.get("response") or {}
    if item.get("error") or response.get("status_code") != 200:
        error = item.get("error") or response.get("body", {}).get("error", {})
        return Answer(None, f"batch request failed: {str(error.get('message', error))[:160]}")
    return _parse(response.get("body"))


def _headers(api_key: str) -> dict[str, str]:
    """What the `openai` client sends besides the body: the key, and the organisation and
    project where the environment names them."""
    headers = {"Authorization": f"Bearer {api_key}", "User-Agent": f"neuronatlas/{__version__}"}
    for variable, header in (("OPENAI_ORG_ID", "OpenAI-Organization"), ("OPENAI_PROJECT_ID", "OpenAI-Project")):
        if os.environ.get(variable):
            headers[header] = os.environ[variable]
    return headers


def _chat_messages(prompt: ChatPrompt) -> list[dict[str, str]]:
    """Chat APIs cannot prefill the answer: ask for it to begin with the prefix instead."""
    messages = [{"role": role, "content": content} for role, content in prompt.messages]
    if prompt.answer_prefix and messages[-1]["role"] == "user":
        messages[-1]["content"] += f'\n\nAnswer with one sentence that begins "{prompt.answer_prefix}".'
    return messages


def _describe(error: Exception) -> str:
    status = getattr(error, "status_code", None)
    message = str(getattr(error, "message", None) or error).splitlines()[0][:160]
    return f"{type(error).__name__}" + (f" {status}" if status else "") + f": {message}"


class LoopThread:
    """An event loop running in a daemon thread of its own, with the transport and concurrency
    gate that live on it; `run` submits work from any thread and waits for its result."""

    def __init__(self, transport: Transport, concurrency: int) -> None:
        self.transport = transport
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="neuronatlas-llm-http", daemon=True)
        self.thread.start()
        self.gate: asyncio.Semaphore = self.run(lambda: self._open(concurrency))

    async def _open(self, concurrency: int) -> asyncio.Semaphore:
        await self.transport.__aenter__()
        return asyncio.Semaphore(concurrency)

    def run(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        async def call() -> T:  # the coroutine is made on the loop, never in the caller's thread
            return await work()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result()

    def stop(self) -> None:
        if not self.loop.is_running():
            return
        with suppress(Exception):  # closing at interpreter exit may meet a half torn-down runtime
            asyncio.run_coroutine_threadsafe(self.transport.__aexit__(None, None, None), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


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
