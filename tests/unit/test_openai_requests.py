"""What the `openai:` backend sends and reads, without a server: the prompt bound a budget reserves
(a true upper bound of the real tokenizers' counts), and Yes/No probabilities read from
`top_logprobs`."""

import math

import pytest

from neuronatlas.adapters.models import load_tokenizer, resolve_model
from neuronatlas.adapters.openai_llm import _chat_messages, _choice_probabilities, byte_bound, chat_template
from neuronatlas.core.prompts import (
    JSON_EXCERPTS_PER_REQUEST,
    ActivationRecord,
    detection_prompt,
    explainer_prompt,
    fuzzing_prompt,
    json_simulation_prompt,
)

TEXTS = [
    "plain English text about bridges opened in 1932.",
    "数字と漢字が混ざった文章です。東京タワーは1958年に完成した。",
    "emoji 🧠🔬✨ and accents: naïve café façade — “quotes”",
    "code: def f(x):\n    return x ** 2  # squares\n\t\ttabs",
    " " * 40 + "\n" * 10 + "\u200b\u200d zero-width",
]


def prompts() -> list[list[dict[str, str]]]:
    built = []
    for text in TEXTS:
        tokens = [f" {word}" for word in text.split()] or [" x"]
        record = ActivationRecord(tokens, [float(i % 4) for i in range(len(tokens))])
        built.append(_chat_messages(explainer_prompt([record] * 3)))
        built.append(_chat_messages(json_simulation_prompt("years.", [tokens] * JSON_EXCERPTS_PER_REQUEST, 9)))
        for choice in (detection_prompt("years."), fuzzing_prompt("years.")):
            built.append(_chat_messages(choice.prefix))
    return built


@pytest.mark.parametrize("model", ["qwen2.5-coder-0.5b", "smollm2-135m"])
def test_the_prompt_bound_is_never_below_the_real_count(model: str) -> None:
    tokenizer = load_tokenizer(resolve_model(model))
    counted = chat_template(model)[0]
    for messages in prompts():
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        real = len(ids)
        assert real > 100  # token ids, counted
        assert byte_bound(messages) >= real
        assert counted(messages) >= real
        assert counted(messages) <= real + 16  # and the tokenizer's bound is tight


def top(pairs: dict[str, float]) -> dict:
    alternatives = [{"token": t, "logprob": math.log(p)} for t, p in pairs.items()]
    return {"choices": [{"logprobs": {"content": [{**alternatives[0], "top_logprobs": alternatives}]}}]}


def test_yes_no_variants_are_summed() -> None:
    found = _choice_probabilities(top({"Yes": 0.5, " yes": 0.1, "No": 0.2, " NO": 0.05, "Maybe": 0.1}), ("Yes", "No"))
    assert found == pytest.approx((0.6, 0.25))


def test_a_missing_readout_is_a_reason_never_a_zero() -> None:
    assert _choice_probabilities(top({"Maybe": 0.5, "Perhaps": 0.3}), ("Yes", "No")) == (
        "none of Yes, No among the top 2 answers"
    )
    assert _choice_probabilities({"choices": [{"message": {"content": "Yes"}}]}, ("Yes", "No")) == (
        "no top_logprobs in the response"
    )
    assert _choice_probabilities(top({"Yes": 0.9}), ("Yes", "No")) == "only 1 top_logprobs in the response"
