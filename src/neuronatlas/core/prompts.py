"""Explainer and simulator prompts (METHOD.md §2-3). Pure text: no tokenizer, no client.

Activations shown to a model are normalised per neuron: floor(scale * relu(a) / max_a), clamped
to 0..scale, where max_a is the maximum over the records shown. Local models whose tokenizer
splits "10" use scale 9; the scale is a parameter. Tests pin the exact text of every prompt.
"""

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from neuronatlas.core.fewshot import EXPLAINER_EXAMPLES, SIMULATOR_EXAMPLES, ExampleNeuron

PROMPT_VERSION = "1"
"""Bumped whenever any prompt text or few-shot example changes (recorded in every manifest)."""
ANSWER_PREFIX = "the main thing this neuron does is find"
SPARSE_FRACTION = 0.2
"""When fewer than this fraction of the shown values are non-zero, the records are repeated with
the zeros filtered out (the paper's rule)."""
HIGHLIGHT_THRESHOLD = 0.3
"""Highlight format: tokens at or above this fraction of the maximum are marked."""

ExplainerFormat = Literal["pairs", "highlight"]


@dataclass(frozen=True)
class ActivationRecord:
    """One excerpt as a prompt shows it."""

    tokens: Sequence[str]
    """Decoded tokens, in order."""
    activations: Sequence[float]
    """Raw activation per token (the neuron's real values, or an example's)."""


@dataclass(frozen=True)
class ChatPrompt:
    """Messages for a chat model, and text the answer must start with (prefilled in-process,
    requested in words from a chat API)."""

    messages: tuple[tuple[str, str], ...]
    """(role, content) pairs: system, user, assistant."""
    answer_prefix: str = ""


def normalise(activations: Sequence[float], max_activation: float, scale: int) -> list[int]:
    """floor(scale * relu(a) / max_a) clamped to 0..scale; all zeros when max_a <= 0."""
    if max_activation <= 0:
        return [0] * len(activations)
    return [min(scale, max(0, math.floor(scale * max(a, 0.0) / max_activation))) for a in activations]


def show_token(token: str) -> str:
    """A token on one line of a prompt: newlines and tabs escaped, everything else as is."""
    return token.replace("\n", "\\n").replace("\t", "\\t")


def records_max(records: Sequence[ActivationRecord]) -> float:
    return max((max(r.activations, default=0.0) for r in records), default=0.0)


def _pairs_block(records: Sequence[ActivationRecord], max_activation: float, scale: int) -> str:
    values = [normalise(r.activations, max_activation, scale) for r in records]
    lines = []
    for record, normalised in zip(records, values, strict=True):
        lines.append("<start>")
        lines += [f"{show_token(t)}\t{v}" for t, v in zip(record.tokens, normalised, strict=True)]
        lines.append("<end>")
    block = "\n".join(lines)
    flat = [v for row in values for v in row]
    if flat and sum(v > 0 for v in flat) < SPARSE_FRACTION * len(flat):
        kept = ["<start>"]
        for record, normalised in zip(records, values, strict=True):
            kept += [f"{show_token(t)}\t{v}" for t, v in zip(record.tokens, normalised, strict=True) if v > 0]
        kept.append("<end>")
        block += "\n\nSame activations, but with all zeros filtered out:\n" + "\n".join(kept)
    return block


def _highlight_block(records: Sequence[ActivationRecord], max_activation: float, scale: int) -> str:
    lines = []
    strongest: dict[str, int] = {}
    for number, record in enumerate(records, start=1):
        normalised = normalise(record.activations, max_activation, scale)
        marked = ""
        for token, value, raw in zip(record.tokens, normalised, record.activations, strict=True):
            hot = max_activation > 0 and raw >= HIGHLIGHT_THRESHOLD * max_activation
            core = token.lstrip()
            marked += f"{token[: len(token) - len(core)]}<<{core}>>" if hot and core else token
            if hot:
                key = token.strip() or show_token(token)
                strongest[key] = max(value, strongest.get(key, 0))
        lines.append(f"Excerpt {number}: {show_token(marked.strip())}")
    ranked = sorted(strongest.items(), key=lambda item: -item[1])[:12]
    lines.append("")
    lines.append("Marked tokens (activation 0-" + str(scale) + "): " + ", ".join(f"{t} ({v})" for t, v in ranked))
    return "\n".join(lines)


def _explainer_system(form: ExplainerFormat, scale: int) -> str:
    intro = (
        "We are studying neurons in a neural network. Each neuron looks for one particular thing in a short "
        "document. Look at the parts of the document the neuron activates for and summarise in a single "
        "sentence what the neuron is looking for. Do not list examples of words.\n\n"
    )
    if form == "pairs":
        return intro + (
            f"The activation format is token<tab>activation. Activation values range from 0 to {scale}. A "
            "neuron finding what it is looking for is represented by a non-zero activation value. The higher "
            "the activation value, the stronger the match. Most activations are 0."
        )
    return intro + (
        "In each excerpt the tokens where the neuron fires strongly are marked <<like this>>. A list of the "
        f"marked tokens follows, with their activation from 0 to {scale}. Say what the marked tokens have in "
        "common, not what the excerpts are about."
    )


def _explainer_turn(number: int, records: Sequence[ActivationRecord], form: ExplainerFormat, scale: int) -> str:
    top = records_max(records)
    block = _pairs_block(records, top, scale) if form == "pairs" else _highlight_block(records, top, scale)
    heading = "Activations:" if form == "pairs" else "Excerpts:"
    return f"Neuron {number}\n{heading}\n{block}\n\nExplanation of neuron {number} behaviour:"


def _example_records(example: ExampleNeuron) -> list[ActivationRecord]:
    return [
        ActivationRecord([token for token, _ in excerpt], [value for _, value in excerpt])
        for excerpt in example.excerpts
    ]


def explainer_prompt(
    records: Sequence[ActivationRecord], form: ExplainerFormat = "pairs", scale: int = 9
) -> ChatPrompt:
    """The explainer's prompt for one neuron's train records: instructions, the few-shot example
    neurons (each answered), then the neuron, answered from `ANSWER_PREFIX`."""
    messages: list[tuple[str, str]] = [("system", _explainer_system(form, scale))]
    for number, example in enumerate(EXPLAINER_EXAMPLES, start=1):
        messages.append(("user", _explainer_turn(number, _example_records(example), form, scale)))
        messages.append(("assistant", f"{ANSWER_PREFIX} {example.explanation}"))
    messages.append(("user", _explainer_turn(len(EXPLAINER_EXAMPLES) + 1, records, form, scale)))
    return ChatPrompt(tuple(messages), answer_prefix=ANSWER_PREFIX)


# -- simulation ---------------------------------------------------------------------------------


def _simulator_system(scale: int) -> str:
    return (
        "We are studying neurons in a neural network. Each neuron looks for one particular thing in a short "
        "document. Given an explanation of what a neuron looks for, predict how strongly it fires on each token "
        f"of a document.\n\nThe activation format is token<tab>activation, where activations go from 0 to {scale}. "
        "Most activations are 0; the neuron fires only where the document matches the explanation."
    )


def _simulator_heading(number: int, explanation: str) -> str:
    return f"Neuron {number}\nExplanation of neuron {number} behaviour: {ANSWER_PREFIX} {explanation}"


@dataclass(frozen=True)
class AllAtOncePrompt:
    """The all-at-once simulation prompt of one explanation, split where excerpts differ: the shared
    prefix (instructions, few-shot, explanation), then per excerpt one line per token, whose
    activation the simulator reads from the next-token probabilities of the digits."""

    prefix: ChatPrompt
    """Messages, and the start of the answer up to the first token line."""
    placeholder: str
    """What stands where the activation would be (the paper: "unknown")."""
    scale: int


def all_at_once_prompt(explanation: str, scale: int = 9, placeholder: str = "unknown") -> AllAtOncePrompt:
    messages: list[tuple[str, str]] = [("system", _simulator_system(scale))]
    for number, example in enumerate(SIMULATOR_EXAMPLES, start=1):
        messages.append(("user", _simulator_heading(number, example.explanation)))
        record = _example_records(example)[0]
        values = normalise(record.activations, records_max([record]), scale)
        lines = "\n".join(f"{show_token(t)}\t{v}" for t, v in zip(record.tokens, values, strict=True))
        messages.append(("assistant", f"Activations:\n<start>\n{lines}\n<end>"))
    messages.append(("user", _simulator_heading(len(SIMULATOR_EXAMPLES) + 1, explanation)))
    return AllAtOncePrompt(ChatPrompt(tuple(messages), answer_prefix="Activations:\n<start>\n"), placeholder, scale)


def token_line_pieces(tokens: Sequence[str], placeholder: str) -> list[tuple[str, str]]:
    """Per token, (text before the activation, text after it): `token\\t` and `placeholder\\n`.
    The simulator reads the activation at the end of the first piece."""
    return [(f"{show_token(token)}\t", f"{placeholder}\n") for token in tokens]


def json_simulation_prompt(explanation: str, tokens: Sequence[str], scale: int = 9) -> ChatPrompt:
    """For chat-only APIs: the tokens as a JSON list; the answer must be a JSON list with one
    {"token", "activation"} object per token, in order (checked strictly by the parser)."""
    example = _example_records(SIMULATOR_EXAMPLES[0])[0]
    example_values = normalise(example.activations, records_max([example]), scale)
    example_answer = json.dumps(
        [{"token": t, "activation": v} for t, v in zip(example.tokens, example_values, strict=True)],
        ensure_ascii=False,
    )
    system = _simulator_system(scale).split("\n\n")[0] + (
        f"\n\nAnswer with JSON only: a list with one object per token, in the given order, each "
        f'{{"token": <the token, exactly as given>, "activation": <integer 0 to {scale}>}}. Most activations are 0.'
    )
    messages = (
        ("system", system),
        ("user", _json_request(SIMULATOR_EXAMPLES[0].explanation, example.tokens)),
        ("assistant", example_answer),
        ("user", _json_request(explanation, tokens)),
    )
    return ChatPrompt(messages)


def _json_request(explanation: str, tokens: Sequence[str]) -> str:
    return f"Explanation: {ANSWER_PREFIX} {explanation}\nTokens: {json.dumps(list(tokens), ensure_ascii=False)}"
