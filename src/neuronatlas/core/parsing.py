"""Turn LLM answers into explanations and simulated activations, or into failures with a reason.

A failure is a value (`Failure`), never a placeholder string and never zeros: the rows it
produces carry a null score and the reason.
"""

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from neuronatlas.core.prompts import ANSWER_PREFIX

MAX_EXPLANATION_WORDS = 40


@dataclass(frozen=True)
class Failure:
    """Why an answer could not be used."""

    reason: str


_ECHOED_HEADING = re.compile(r"^\s*explanation of neuron \d+ behaviou?r:\s*", re.IGNORECASE)
_ACTIVATION_LINE = re.compile(r"\S+\t\d+")


def parse_explanation(answer: str) -> str | Failure:
    """The explanation in an explainer's answer: what completes "the main thing this neuron does
    is find", as one sentence. The prefix is removed when the model repeats it."""
    text = _ECHOED_HEADING.sub("", answer.strip())
    if text.lower().startswith(ANSWER_PREFIX):
        text = text[len(ANSWER_PREFIX) :]
    text = text.strip().strip("\"'").strip()
    if not text:
        return Failure("empty answer")
    if "<start>" in text or _ACTIVATION_LINE.search(text):
        return Failure("answer copies the activation format instead of explaining")
    sentence = text.splitlines()[0].strip().strip("\"'").strip()
    if not any(character.isalnum() for character in sentence):
        return Failure(f"answer has no words: {sentence[:60]!r}")
    words = len(sentence.split())
    if words > MAX_EXPLANATION_WORDS:
        return Failure(f"answer is not one short sentence ({words} words)")
    return sentence.rstrip(" .") + "."


def parse_json_simulation(
    answer: str, excerpts: Sequence[Sequence[str]], scale: int
) -> list[list[float] | Failure] | Failure:
    """Activations per excerpt from a JSON simulator answer: an object whose keys are the excerpt
    numbers ("1", "2", ...), each listing exactly that excerpt's tokens, in order, each with a
    number in 0..scale. An answer that is not such an object is one failure; otherwise each excerpt
    gets its values or a failure naming its mismatch. Other keys are ignored."""
    text = answer.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        return Failure(f"answer is not JSON ({error.msg} at character {error.pos})")
    if not isinstance(parsed, dict):
        return Failure(f"answer is JSON {type(parsed).__name__}, expected an object")
    return [_excerpt_values(parsed, number, tokens, scale) for number, tokens in enumerate(excerpts, start=1)]


def _excerpt_values(answer: dict[str, Any], number: int, tokens: Sequence[str], scale: int) -> list[float] | Failure:
    """Excerpt `number`'s activations in a parsed answer, or a failure prefixed by its number."""
    if str(number) not in answer:
        return Failure(f"excerpt {number} missing from the answer")
    values = _aligned_values(answer[str(number)], tokens, scale)
    return Failure(f"excerpt {number}: {values.reason}") if isinstance(values, Failure) else values


def _aligned_values(items: object, tokens: Sequence[str], scale: int) -> list[float] | Failure:
    """Activations from a list of {token, activation} objects that lists exactly `tokens`, in order."""
    if not isinstance(items, list):
        return Failure(f"answer is JSON {type(items).__name__}, expected a list")
    if len(items) != len(tokens):
        return Failure(f"answer has {len(items)} tokens, the excerpt {len(tokens)}")
    values = []
    for position, (item, token) in enumerate(zip(items, tokens, strict=True)):
        if not isinstance(item, dict) or "token" not in item or "activation" not in item:
            return Failure(f"item {position} is not a {{token, activation}} object")
        if item["token"] != token:
            return Failure(f"token mismatch at position {position}: expected {token!r}, got {item['token']!r}")
        value = item["activation"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= scale:
            return Failure(f"activation at position {position} is {value!r}, not a number in 0..{scale}")
        values.append(float(value))
    return values
