"""`local:<model>`: an instruction-tuned model run in-process with transformers.

bf16 by default (on CUDA, and on CPUs with bf16 support, about twice as fast as fp32). The
all-at-once simulation computes the shared prefix (instructions, few-shot, explanation) once, then
runs the excerpts of an explanation in batches on top of a copy of its KV cache, and projects
only the read positions through the LM head.
"""

import copy
import logging
from collections.abc import Sequence
from typing import Any

import torch

from neuronatlas.adapters.extraction import pick_device
from neuronatlas.adapters.models import load_model, load_tokenizer, resolve_model
from neuronatlas.core.llm import ChoiceReadout, DigitReadout, Generation, GenerationParams, Usage
from neuronatlas.core.prompts import (
    EXCERPT_MARK,
    AllAtOncePrompt,
    ChatPrompt,
    ChoicePrompt,
    LineByLinePrompt,
    line_start,
    token_line_pieces,
)
from neuronatlas.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_LOCAL_MODEL = "qwen2.5-coder-1.5b"


class LocalBackend:
    """An in-process chat model (see module docstring)."""

    can_read_digits = True
    can_read_choices = True
    abilities = "an in-process model: every readout reads its next-token probabilities"

    def __init__(
        self,
        model: str = DEFAULT_LOCAL_MODEL,
        device: str = "auto",
        dtype: str = "bf16",
        batch_size: int = 8,
        line_passes: int = 4,
    ) -> None:
        self.source = resolve_model(model)
        self.device = pick_device(device)
        self.dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(dtype)
        if self.dtype is None:
            raise InputError(f"local LLM dtype {dtype}: expected bf16 or fp32")
        self.batch_size = batch_size
        self.line_passes = line_passes
        self.id = f"local:{self.source.slug}@sha256:{self.source.checksum}"
        self.usage = Usage()
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> tuple[Any, Any]:
        """Load on first use: building a backend costs nothing when every answer is cached."""
        if self._model is None:
            log.info("loading %s (%s, %s)", self.source.spec, self.device, self.dtype)
            self._tokenizer = load_tokenizer(self.source)
            self._model = load_model(self.source, cache_dtype=self.dtype).to(self.device, self.dtype).eval()
        return self._model, self._tokenizer

    def release(self) -> None:
        """Drop the loaded model (the next call loads it again): frees memory for another model."""
        import gc

        self._model = None
        gc.collect()

    def _render(self, prompt: ChatPrompt) -> str:
        _, tokenizer = self._load()
        messages = [{"role": role, "content": content} for role, content in prompt.messages]
        text: str = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text + prompt.answer_prefix

    # -- generation -------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[ChatPrompt], params: GenerationParams) -> list[Generation]:
        model, tokenizer = self._load()
        results: list[Generation] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = list(prompts[start : start + self.batch_size])
            results += self._generate_batch(model, tokenizer, batch, params, seed=params.seed + start)
        return results

    def _generate_batch(
        self, model: Any, tokenizer: Any, prompts: list[ChatPrompt], params: GenerationParams, seed: int
    ) -> list[Generation]:
        texts = [self._render(prompt) for prompt in prompts]
        encoded = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        encoded = {name: tensor.to(self.device) for name, tensor in encoded.items()}
        sampling = params.temperature > 0
        with torch.random.fork_rng(devices=[] if self.device == "cpu" else None), torch.inference_mode():
            torch.manual_seed(seed)  # scoped: the caller's random state is restored on exit
            output = model.generate(
                **encoded,
                do_sample=sampling,
                temperature=params.temperature if sampling else None,
                top_p=None,
                top_k=None,
                num_return_sequences=params.n,
                max_new_tokens=params.max_tokens,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
        prompt_length = encoded["input_ids"].shape[1]
        new_tokens = output[:, prompt_length:]
        answers = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        generated = (new_tokens != (tokenizer.pad_token_id or tokenizer.eos_token_id)).sum(dim=1).tolist()
        results = []
        for index in range(len(prompts)):
            samples = slice(index * params.n, (index + 1) * params.n)
            prompt_tokens = int(encoded["attention_mask"][index].sum())
            results.append(Generation(tuple(answers[samples]), None, prompt_tokens, int(sum(generated[samples]))))
            self.usage.calls += 1
            self.usage.prompt_tokens += prompt_tokens
            self.usage.completion_tokens += int(sum(generated[samples]))
        return results

    # -- all-at-once simulation ---------------------------------------------------------------------

    def digit_ids(self, scale: int) -> list[int]:
        """Token ids of "0".."scale"; every one must be a single token."""
        _, tokenizer = self._load()
        ids = [tokenizer.encode(str(digit), add_special_tokens=False) for digit in range(scale + 1)]
        split = [str(digit) for digit, pieces in enumerate(ids) if len(pieces) != 1]
        if split:
            raise InputError(f"simulator {self.source.spec}: its tokenizer splits {', '.join(split)}; use scale 9")
        return [pieces[0] for pieces in ids]

    def read_digits(
        self, prompt: AllAtOncePrompt | LineByLinePrompt, excerpts: Sequence[Sequence[str]]
    ) -> DigitReadout:
        """Per excerpt and token, the expected activation under the digits' next-token
        probabilities and the probability on the digits. All-at-once: the placeholder stands
        where each digit would be. Line by line: see `_read_lines`."""
        if isinstance(prompt, LineByLinePrompt):
            return self._read_lines(prompt, excerpts)
        _, tokenizer = self._load()
        prefix = self._encode(tokenizer, self._render(prompt.prefix))
        rows = [self._line_ids(tokenizer, [], token_line_pieces(tokens, prompt.placeholder)) for tokens in excerpts]
        expected, mass, _ = self._read_rows(prefix, rows, prompt.scale)
        return _digit_readout(expected, mass)

    def _read_lines(self, prompt: LineByLinePrompt, excerpts: Sequence[Sequence[str]]) -> DigitReadout:
        """Greedy line-by-line generation, computed by Jacobi iteration: every line's digit starts
        as 0; each pass reads all lines at once (one batched forward, like all-at-once) and writes
        each line's most likely digit back into the text; the passes stop when no digit changes,
        where the result is exactly greedy generation's (pass k fixes at least the first k lines),
        or after `line_passes`. Expected values come from the last pass's digit probabilities. An
        excerpt whose digits did not change is settled and leaves the later passes."""
        _, tokenizer = self._load()
        head, tail = self._render(prompt.prefix).split(EXCERPT_MARK)
        # pieces split where the tokenizer splits the whole text anyway: "Text:| The city ...",
        # "... Looking for: X.\n|\"tok\"\t|3|\n\"tok\"\t|0" (a digit is always a token of its own, and
        # a newline before a quote never merges with it)
        prefix = self._encode(tokenizer, head.removesuffix(" "))
        lead = " " if head.endswith(" ") else ""
        body = [lead + "".join(tokens).strip() + tail for tokens in excerpts]
        starts = [self._encode(tokenizer, text) for text in body]
        guesses = [[0] * len(tokens) for tokens in excerpts]
        expected: list[list[float]] = [[] for _ in excerpts]
        mass: list[list[float]] = [[] for _ in excerpts]
        moving = list(range(len(excerpts)))  # excerpts whose digits changed in the last pass
        for _ in range(self.line_passes):
            rows = [
                self._line_ids(
                    tokenizer,
                    starts[x],
                    [
                        ("\n" * (i > 0) + line_start(t), str(d))
                        for i, (t, d) in enumerate(zip(excerpts[x], guesses[x], strict=True))
                    ],
                )
                for x in moving
            ]
            values, masses, chosen = self._read_rows(prefix, rows, prompt.scale)
            still_moving = []
            for x, value, share, digits in zip(moving, values, masses, chosen, strict=True):
                expected[x], mass[x] = value, share
                if digits != guesses[x]:
                    guesses[x] = digits
                    still_moving.append(x)
            moving = still_moving
            if not moving:
                break
        return _digit_readout(expected, mass)

    @staticmethod
    def _encode(tokenizer: Any, text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False))

    def _line_ids(self, tokenizer: Any, start: list[int], pieces: list[tuple[str, str]]) -> tuple[list[int], list[int]]:
        """An excerpt's ids after the prefix (`start`, then each line's two pieces) and the
        positions whose next-token distribution is each token's activation (ends of first pieces)."""
        ids = list(start)
        positions: list[int] = []
        for before, after in pieces:
            ids += self._encode(tokenizer, before)
            positions.append(len(ids) - 1)
            ids += self._encode(tokenizer, after)
        return ids, positions

    def _read_rows(
        self, prefix: list[int], rows: list[tuple[list[int], list[int]]], scale: int
    ) -> tuple[list[list[float]], list[list[float]], list[list[int]]]:
        """Per row and read position: expected digit (renormalised over the digits), the digits'
        probability mass, and the most likely digit."""
        values = torch.arange(scale + 1, dtype=torch.float32, device=self.device)
        expected: list[list[float]] = []
        mass: list[list[float]] = []
        chosen: list[list[int]] = []
        for probabilities in self._candidate_probabilities(prefix, rows, self.digit_ids(scale)):
            total = probabilities.sum(dim=-1)
            expected.append(((probabilities @ values) / total).tolist())
            mass.append(total.tolist())
            chosen.append(probabilities.argmax(dim=-1).tolist())
        return expected, mass, chosen

    def _candidate_probabilities(
        self, prefix: list[int], rows: list[tuple[list[int], list[int]]], candidates: list[int]
    ) -> list[torch.Tensor]:
        """The prefix's KV cache once, then batches of right-padded rows on copies of it; per row,
        the next-token probabilities of `candidates` at its read positions, (positions, candidates)."""
        model, tokenizer = self._load()
        wanted = torch.tensor(candidates, device=self.device)
        pad = tokenizer.pad_token_id or tokenizer.eos_token_id
        found: list[torch.Tensor] = []
        with torch.inference_mode():
            cache = model.model(input_ids=torch.tensor([prefix], device=self.device), use_cache=True).past_key_values
            for start in range(0, len(rows), self.batch_size):
                batch = rows[start : start + self.batch_size]
                width = max(len(ids) for ids, _ in batch)
                ids = torch.tensor([row + [pad] * (width - len(row)) for row, _ in batch], device=self.device)
                batch_cache = copy.deepcopy(cache)
                batch_cache.batch_repeat_interleave(len(batch))
                # right padding: no real position attends to a pad, so no attention mask is needed
                states = model.model(input_ids=ids, past_key_values=batch_cache, use_cache=True).last_hidden_state
                for row, (_, positions) in enumerate(batch):
                    logits = model.lm_head(states[row, positions]).float()  # (T, V)
                    found.append(logits.softmax(dim=-1)[:, wanted].cpu())
                self.usage.calls += 1
                self.usage.prompt_tokens += len(prefix) + int(ids.numel())
        return found

    # -- yes/no questions ---------------------------------------------------------------------------

    def read_choices(self, prompt: ChoicePrompt, texts: Sequence[str]) -> ChoiceReadout:
        """Per text, the next-token probability of each choice after the prefix, the text and the
        start of the answer; the prefix's KV cache is shared by all texts."""
        _, tokenizer = self._load()
        head, tail = self._render(prompt.prefix).split(EXCERPT_MARK)
        choice_ids = [self._encode(tokenizer, choice) for choice in prompt.choices]
        if any(len(ids) != 1 for ids in choice_ids):
            raise InputError(f"{self.source.spec}: its tokenizer splits one of {prompt.choices}")
        lead = " " if head.endswith(" ") else ""
        rows = []
        for text in texts:
            ids = self._encode(tokenizer, lead + text + tail)
            rows.append((ids, [len(ids) - 1]))
        found = self._candidate_probabilities(
            self._encode(tokenizer, head.removesuffix(" ")), rows, [ids[0] for ids in choice_ids]
        )
        return ChoiceReadout(tuple(tuple(probabilities[0].tolist()) for probabilities in found))


def _digit_readout(expected: list[list[float]], mass: list[list[float]]) -> DigitReadout:
    """The readout, or a failure at the first read position with no probability on the digits
    (a softmax that underflowed there: its renormalised expected value would be 0/0)."""
    for x, shares in enumerate(mass):
        for k, share in enumerate(shares):
            if not share > 0:
                return DigitReadout(failure=f"excerpt {x} token {k}: no probability on the digits")
    return DigitReadout(tuple(map(tuple, expected)), tuple(map(tuple, mass)))
