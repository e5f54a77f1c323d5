"""The `local:` backend on a real shipped model (Qwen2.5-Coder-0.5B-Instruct, assembled from its
chunk packages, checksum-verified, cached as safetensors): generation, and all-at-once digit
readout with the shared prefix computed once, checked against a plain forward pass."""

import pytest
import torch

from neuronatlas.adapters.local_llm import LocalBackend
from neuronatlas.core.llm import GenerationParams
from neuronatlas.core.prompts import (
    EXCERPT_MARK,
    ActivationRecord,
    all_at_once_prompt,
    detection_prompt,
    explainer_prompt,
    line_by_line_prompt,
    line_start,
    token_line_pieces,
)

MODEL = "qwen2.5-coder-0.5b"
EXCERPTS = [
    [" The", " bridge", " opened", " in", " 1932", "."],
    [" She", " moved", " to", " Lyon", " in", " 1920", " and", " stayed", "."],
    [" Cats", " sleep"],
]


@pytest.fixture(scope="module")
def backend() -> LocalBackend:
    return LocalBackend(MODEL, device="cpu", dtype="fp32", batch_size=2)


def test_explains_from_the_answer_prefix(backend: LocalBackend) -> None:
    record = ActivationRecord([" in", " 1932", " and", " in", " 1987"], [0.0, 4.0, 0.0, 0.0, 3.5])
    prompt = explainer_prompt([record])
    [greedy] = backend.generate([prompt], GenerationParams(n=1, temperature=0.0, max_tokens=24))
    assert greedy.failure is None and len(greedy.texts) == 1 and greedy.texts[0].strip()
    [again] = backend.generate([prompt], GenerationParams(n=1, temperature=0.0, max_tokens=24))
    assert again.texts == greedy.texts  # greedy decoding is deterministic
    [sampled] = backend.generate([prompt], GenerationParams(n=3, temperature=1.0, max_tokens=24, seed=1))
    assert len(sampled.texts) == 3
    assert sampled.prompt_tokens > 400 and sampled.completion_tokens > 0
    assert backend.id.startswith("local:qwen2.5-coder-0.5b@sha256:1d9614638d18")


def test_digit_readout_reuses_the_prefix_exactly(backend: LocalBackend) -> None:
    prompt = all_at_once_prompt("years written as four-digit numbers.", scale=9)
    readout = backend.read_digits(prompt, EXCERPTS)  # batches of 2, right-padded, on a copied KV cache
    assert readout.failure is None
    assert [len(values) for values in readout.expected] == [len(tokens) for tokens in EXCERPTS]
    for values, mass in zip(readout.expected, readout.digit_mass, strict=True):
        assert all(0.0 <= v <= 9.0 for v in values)
        assert all(0.0 < m <= 1.0 + 1e-6 for m in mass)

    # the same quantities from one plain forward pass over prefix + excerpt, no cache, no batch
    model, tokenizer = backend._load()
    digits = backend.digit_ids(9)
    prefix = tokenizer(backend._render(prompt.prefix), add_special_tokens=False)["input_ids"]
    for tokens, values, mass in zip(EXCERPTS, readout.expected, readout.digit_mass, strict=True):
        ids, reads = list(prefix), []
        for before, after in token_line_pieces(tokens, prompt.placeholder):
            ids += tokenizer.encode(before, add_special_tokens=False)
            reads.append(len(ids) - 1)
            ids += tokenizer.encode(after, add_special_tokens=False)
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids])).logits[0, reads].float()
        probabilities = logits.softmax(-1)[:, digits]
        expected = (probabilities @ torch.arange(10.0)) / probabilities.sum(-1)
        torch.testing.assert_close(torch.tensor(values), expected, atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(torch.tensor(mass), probabilities.sum(-1), atol=1e-3, rtol=1e-3)


def test_the_explanation_changes_the_simulation(backend: LocalBackend) -> None:
    years = backend.read_digits(all_at_once_prompt("years written as four-digit numbers.", 9), EXCERPTS[:1])
    verbs = backend.read_digits(all_at_once_prompt("verbs in the past tense.", 9), EXCERPTS[:1])
    assert years.expected != verbs.expected


def test_line_by_line_equals_greedy_generation_on_the_whole_text(backend: LocalBackend) -> None:
    """Jacobi passes over batched, right-padded rows reproduce greedy generation: one plain forward
    pass per token line over the whole text, each line's digit the previous step's argmax."""
    prompt = line_by_line_prompt('the word "of".', scale=9)
    readout = LocalBackend(MODEL, device="cpu", dtype="fp32", batch_size=2, line_passes=12).read_digits(
        prompt, EXCERPTS
    )
    assert readout.failure is None
    model, tokenizer = backend._load()
    digits = backend.digit_ids(9)
    head, tail = backend._render(prompt.prefix).split(EXCERPT_MARK)
    for tokens, values, mass in zip(EXCERPTS, readout.expected, readout.digit_mass, strict=True):
        text = head + "".join(tokens).strip() + tail
        for token, value, share in zip(tokens, values, mass, strict=True):
            text += line_start(token)
            with torch.inference_mode():
                logits = model(input_ids=torch.tensor([tokenizer.encode(text, add_special_tokens=False)])).logits
            probabilities = logits[0, -1].float().softmax(-1)[digits]
            assert value == pytest.approx(float(probabilities @ torch.arange(10.0) / probabilities.sum()), abs=1e-3)
            assert share == pytest.approx(float(probabilities.sum()), abs=1e-4)
            text += f"{int(probabilities.argmax())}\n"
    assert min(min(mass) for mass in readout.digit_mass) > 0.5  # the format makes it answer with digits


def test_yes_no_readout_equals_a_plain_forward_pass(backend: LocalBackend) -> None:
    prompt = detection_prompt("years written as four-digit numbers.")
    texts = ["The bridge opened in 1932.", "Cats sleep all day long.", "She moved to Lyon in 1920 and stayed."]
    readout = backend.read_choices(prompt, texts)  # batches of 2 on the shared prefix's KV cache
    assert readout.failure is None and len(readout.probabilities) == 3
    model, tokenizer = backend._load()
    yes_no = [tokenizer.encode(choice, add_special_tokens=False) for choice in prompt.choices]
    assert all(len(ids) == 1 for ids in yes_no)  # "Yes" / "No" without a leading space are one token
    head, tail = backend._render(prompt.prefix).split(EXCERPT_MARK)
    for text, probabilities in zip(texts, readout.probabilities, strict=True):
        ids = tokenizer.encode(head + text + tail, add_special_tokens=False)
        with torch.inference_mode():
            last = model(input_ids=torch.tensor([ids])).logits[0, -1].float().softmax(-1)
        assert probabilities == pytest.approx([float(last[i[0]]) for i in yes_no], abs=1e-4)
    assert sum(readout.probabilities[0]) > 0.5  # it answers Yes or No
