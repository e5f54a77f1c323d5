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
from neuronatlas.adapters.llm import DigitReadout, Generation, GenerationParams, Usage
from neuronatlas.adapters.models import load_model, load_tokenizer, resolve_model
from neuronatlas.core.prompts import AllAtOncePrompt, ChatPrompt, token_line_pieces
from neuronatlas.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_LOCAL_MODEL = "qwen2.5-coder-1.5b"


class LocalBackend:
    """An in-process chat model (see module docstring)."""

    can_read_digits = True

    def __init__(
        self, model: str = DEFAULT_LOCAL_MODEL, device: str = "auto", dtype: str = "bf16", batch_size: int = 8
    ) -> None:
        self.source = resolve_model(model)
        self.device = pick_device(device)
        self.dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(dtype)
        if self.dtype is None:
            raise InputError(f"local LLM dtype {dtype}: expected bf16 or fp32")
        self.batch_size = batch_size
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

    def read_digits(self, prompt: AllAtOncePrompt, excerpts: Sequence[Sequence[str]]) -> DigitReadout:
        model, tokenizer = self._load()
        digits = torch.tensor(self.digit_ids(prompt.scale), device=self.device)
        values = torch.arange(prompt.scale + 1, dtype=torch.float32, device=self.device)
        prefix = tokenizer(self._render(prompt.prefix), return_tensors="pt", add_special_tokens=False)["input_ids"]
        expected: list[tuple[float, ...]] = []
        mass: list[tuple[float, ...]] = []
        with torch.inference_mode():
            cache = model.model(input_ids=prefix.to(self.device), use_cache=True).past_key_values
            for start in range(0, len(excerpts), self.batch_size):
                batch = excerpts[start : start + self.batch_size]
                ids, reads = self._excerpt_ids(tokenizer, batch, prompt.placeholder)
                batch_cache = copy.deepcopy(cache)
                batch_cache.batch_repeat_interleave(ids.shape[0])
                # right padding: no real position attends to a pad, so no attention mask is needed
                hidden = model.model(input_ids=ids.to(self.device), past_key_values=batch_cache, use_cache=True)
                states = hidden.last_hidden_state  # (B, S, H)
                for row, positions in enumerate(reads):
                    logits = model.lm_head(states[row, positions]).float()  # (T, V)
                    probabilities = logits.softmax(dim=-1)[:, digits]  # (T, scale + 1)
                    total = probabilities.sum(dim=-1)
                    expected.append(tuple(((probabilities @ values) / total).tolist()))
                    mass.append(tuple(total.tolist()))
                self.usage.calls += 1
                self.usage.prompt_tokens += prefix.shape[1] + int(ids.numel())
        return DigitReadout(tuple(expected), tuple(mass))

    def _excerpt_ids(
        self, tokenizer: Any, excerpts: Sequence[Sequence[str]], placeholder: str
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Each excerpt's token lines as ids (right-padded to a batch), and the positions whose
        next-token distribution is the activation of each token."""
        rows: list[list[int]] = []
        reads: list[torch.Tensor] = []
        for tokens in excerpts:
            ids: list[int] = []
            positions: list[int] = []
            for before, after in token_line_pieces(tokens, placeholder):
                ids += tokenizer.encode(before, add_special_tokens=False)
                positions.append(len(ids) - 1)
                ids += tokenizer.encode(after, add_special_tokens=False)
            rows.append(ids)
            reads.append(torch.tensor(positions))
        width = max(len(row) for row in rows)
        pad = tokenizer.pad_token_id or tokenizer.eos_token_id
        return torch.tensor([row + [pad] * (width - len(row)) for row in rows]), reads
