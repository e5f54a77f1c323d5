"""Explainer and simulator prompts (docs/method.md §2-3). Pure text: no tokenizer, no client.

Activations shown to a model are normalised per neuron: floor(scale * relu(a) / max_a), clamped
to 0..scale, where max_a is the maximum over the records shown. Local models whose tokenizer
splits "10" use scale 9; the scale is a parameter. Tests pin the exact text of every prompt.
"""

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from neuronatlas.core.fewshot import EXPLAINER_EXAMPLES, LINE_EXAMPLES, SIMULATOR_EXAMPLES, ExampleNeuron

PROMPT_VERSION = "3"
"""Bumped whenever any prompt text or few-shot example changes (recorded in every manifest)."""
ANSWER_PREFIX = "the main thing this neuron does is find"
SPARSE_FRACTION = 0.2
"""When fewer than this fraction of the shown values are non-zero, the records are repeated with
the zeros filtered out (the paper's rule)."""
HIGHLIGHT_THRESHOLD = 0.3
"""Highlight format: tokens at or above this fraction of the maximum are marked."""

ExplainerFormat = Literal["pairs", "highlight", "tokens"]
FORMATS: tuple[ExplainerFormat, ...] = ("pairs", "highlight", "tokens")
"""What `--prompt-format` can name; `tokens` (the default) is the format whose explanations beat the
permutation null in the validity harness."""
TOP_TOKENS_SHOWN = 15
"""Tokens format: how many of the strongest tokens are listed with their mean activation."""
JSON_EXCERPTS_PER_REQUEST = 4
"""JSON simulation: the most excerpts one request carries (the instructions and the few-shot
example are sent once per request, not once per excerpt)."""


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
    """floor(scale * relu(a) / max_a) clamped to 0..scale; 0 for a non-finite a; all zeros when
    max_a is not a positive finite number."""
    if not 0 < max_activation < math.inf:
        return [0] * len(activations)
    return [
        math.floor(min(scale, scale * max(a, 0.0) / max_activation)) if math.isfinite(a) else 0 for a in activations
    ]


def show_token(token: str) -> str:
    """A token on one line of a prompt: newlines and tabs escaped, everything else as is."""
    return token.replace("\n", "\\n").replace("\t", "\\t")


def records_max(records: Sequence[ActivationRecord]) -> float:
    """The largest finite activation of the records (0.0 when there is none)."""
    return max((a for r in records for a in r.activations if math.isfinite(a)), default=0.0)


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


def _tokens_block(records: Sequence[ActivationRecord], max_activation: float, scale: int) -> str:
    """The neuron's strongest tokens (mean activation where they occur, how often), then each
    excerpt with its strongest tokens marked, as in the highlight format."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for record in records:
        for token, value in zip(record.tokens, normalise(record.activations, max_activation, scale), strict=True):
            key = show_token(token)
            sums[key] = sums.get(key, 0.0) + value
            counts[key] = counts.get(key, 0) + 1
    means = {token: sums[token] / counts[token] for token in sums}
    ranked = sorted((t for t in means if means[t] > 0), key=lambda t: (-means[t], -counts[t]))[:TOP_TOKENS_SHOWN]
    listed = "\n".join(f'"{token}"\t{means[token]:.1f}\t(seen {counts[token]}x)' for token in ranked)
    excerpts = _highlight_block(records, max_activation, scale).rsplit("\n\n", 1)[0]
    return f"Strongest tokens (mean activation 0-{scale} where the token occurs):\n{listed}\n\n{excerpts}"


def _explainer_system(form: ExplainerFormat, scale: int) -> str:
    intro = (
        "We are studying neurons in a neural network. Each neuron looks for one particular thing in a short "
        "document. Look at the parts of the document the neuron activates for and summarise in a single "
        "sentence what the neuron is looking for. "
    )
    intro += "Do not list examples of words.\n\n" if form != "tokens" else "Quote the tokens when there are few.\n\n"
    if form == "pairs":
        return intro + (
            f"The activation format is token<tab>activation. Activation values range from 0 to {scale}. A "
            "neuron finding what it is looking for is represented by a non-zero activation value. The higher "
            "the activation value, the stronger the match. Most activations are 0."
        )
    if form == "tokens":
        return intro + (
            "First comes a list of the tokens the neuron fires on most, with their mean activation from 0 to "
            f"{scale}; then excerpts with the strongly activating tokens marked <<like this>>. Say which tokens "
            "the neuron fires on (and in what context, when the context matters), not what the excerpts are "
            "about: a good answer names the tokens or their kind."
        )
    return intro + (
        "In each excerpt the tokens where the neuron fires strongly are marked <<like this>>. A list of the "
        f"marked tokens follows, with their activation from 0 to {scale}. Say what the marked tokens have in "
        "common, not what the excerpts are about."
    )


def _explainer_turn(number: int, records: Sequence[ActivationRecord], form: ExplainerFormat, scale: int) -> str:
    top = records_max(records)
    blocks = {"pairs": _pairs_block, "highlight": _highlight_block, "tokens": _tokens_block}
    block = blocks[form](records, top, scale)
    heading = {"pairs": "Activations:", "highlight": "Excerpts:", "tokens": "Tokens:"}[form]
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


def json_simulation_prompt(explanation: str, excerpts: Sequence[Sequence[str]], scale: int = 9) -> ChatPrompt:
    """For chat-only APIs: each excerpt's tokens as a numbered JSON list; the answer must be a JSON
    object whose keys are the excerpt numbers ("1", "2", ...), each value a list with one
    {"token", "activation"} object per token, in order (checked strictly by the parser). The
    few-shot example is the first example excerpt, split in two."""
    example = _example_records(SIMULATOR_EXAMPLES[0])[0]
    values = normalise(example.activations, records_max([example]), scale)
    half = len(example.tokens) // 2
    shown = [(example.tokens[:half], values[:half]), (example.tokens[half:], values[half:])]
    example_answer = {
        str(number): [{"token": t, "activation": v} for t, v in zip(tokens, activations, strict=True)]
        for number, (tokens, activations) in enumerate(shown, start=1)
    }
    system = _simulator_system(scale).split("\n\n")[0] + (
        '\n\nAnswer with JSON only: an object whose keys are the excerpt numbers ("1", "2", ...), each '
        "value a list with one object per token of that excerpt, in the given order, each "
        f'{{"token": <the token, exactly as given>, "activation": <integer 0 to {scale}>}}. Most activations are 0.'
    )
    messages = (
        ("system", system),
        ("user", _json_request(SIMULATOR_EXAMPLES[0].explanation, [tokens for tokens, _ in shown])),
        ("assistant", json.dumps(example_answer, ensure_ascii=False)),
        ("user", _json_request(explanation, excerpts)),
    )
    return ChatPrompt(messages)


def _json_request(explanation: str, excerpts: Sequence[Sequence[str]]) -> str:
    lines = [f"Explanation: {ANSWER_PREFIX} {explanation}"]
    lines += [
        f"Excerpt {number} tokens: {json.dumps(list(tokens), ensure_ascii=False)}"
        for number, tokens in enumerate(excerpts, start=1)
    ]
    return "\n".join(lines)


# -- line-by-line simulation ----------------------------------------------------------------------

EXCERPT_MARK = "\u0000EXCERPT\u0000"
"""Stands where each excerpt's text goes in `LineByLinePrompt.prefix` (split off by the backend)."""


@dataclass(frozen=True)
class LineByLinePrompt:
    """The generation-based simulation prompt of one explanation (docs/method.md §3, "simulation v2"):
    few-shot examples that show every token as a quoted line followed by its digit, then the
    excerpt's text, and an answer that restates the explanation and goes through the excerpt one
    token line at a time. The simulator reads the digit distribution at the end of each
    `line_start`, then writes its most likely digit and the next line (greedy generation)."""

    prefix: ChatPrompt
    """Messages whose last user message holds `EXCERPT_MARK`, and the start of the answer."""
    scale: int


def _line(token: str) -> str:
    return f'"{show_token(token)}"\t'


def line_start(token: str) -> str:
    """Text before a token's digit: the token quoted, then a tab."""
    return _line(token)


def _line_request(explanation: str, text: str) -> str:
    return f"Explanation: {ANSWER_PREFIX} {explanation}\nText: {text}"


def _line_answer_prefix(explanation: str) -> str:
    return f"Looking for: {explanation}\n"


def _line_examples(scale: int) -> list[tuple[str, ActivationRecord, list[int]]]:
    """(explanation, excerpt, digits): each example neuron on its first excerpt, then the second
    neuron's explanation on the first neuron's other excerpt, where it finds nothing (all 0): the
    same kind of text gets different digits under a different explanation."""
    first, second = LINE_EXAMPLES
    shown = []
    for example in (first, second):
        records = _example_records(example)
        shown.append((example.explanation, records[0], normalise(records[0].activations, records_max(records), scale)))
    other = _example_records(first)[1]
    shown.append((second.explanation, other, [0] * len(other.tokens)))
    return shown


def line_by_line_prompt(explanation: str, scale: int = 9) -> LineByLinePrompt:
    system = (
        "We are studying neurons in a neural network. Each neuron looks for one particular thing in a short "
        "document. Given an explanation of what a neuron looks for and a text, go through the text token by "
        f"token: write each token in quotes, a tab, and how strongly the neuron fires on it, from 0 to {scale}. "
        "The neuron fires only on tokens that match the explanation; everywhere else write 0."
    )
    messages: list[tuple[str, str]] = [("system", system)]
    for explanation_of, record, values in _line_examples(scale):
        text = "".join(record.tokens).strip()
        lines = "\n".join(f"{_line(t)}{v}" for t, v in zip(record.tokens, values, strict=True))
        messages.append(("user", _line_request(explanation_of, text)))
        messages.append(("assistant", f"{_line_answer_prefix(explanation_of)}{lines}"))
    messages.append(("user", _line_request(explanation, EXCERPT_MARK)))
    return LineByLinePrompt(ChatPrompt(tuple(messages), _line_answer_prefix(explanation)), scale)


# -- yes/no questions about excerpts (detection, fuzzing) ------------------------------------------

YES_NO = ("Yes", "No")
"""The answers read; the first is the positive one. Without a leading space: the answer starts
the assistant's turn."""


@dataclass(frozen=True)
class ChoicePrompt:
    """A question asked of many excerpts: the prefix's last user message holds `EXCERPT_MARK`
    where each excerpt goes; the answer is read from the next-token probabilities of `choices`."""

    prefix: ChatPrompt
    choices: tuple[str, ...] = YES_NO


def marked(tokens: Sequence[str], hot: Sequence[bool]) -> str:
    """The tokens as text with the `hot` ones marked <<like this>> (leading spaces kept outside)."""
    text = ""
    for token, mark in zip(tokens, hot, strict=True):
        core = token.lstrip()
        text += f"{token[: len(token) - len(core)]}<<{core}>>" if mark and core else token
    return show_token(text.strip())


def _question(explanation: str) -> str:
    return f"Explanation: {ANSWER_PREFIX} {explanation}\nExcerpt: "


def detection_prompt(explanation: str) -> ChoicePrompt:
    """Does this excerpt contain what the explanation describes? Four answered examples: each
    example neuron's explanation on one of its own excerpts (Yes) and on the other's (No)."""
    system = (
        "We are studying neurons in a neural network. Each neuron looks for one particular thing in a short "
        "document; an explanation says what. Given an explanation and a short excerpt, answer Yes if the "
        "excerpt contains what the explanation describes, else No. Answer with one word."
    )
    years, of_names = (_example_records(example)[0] for example in LINE_EXAMPLES)
    shots = [
        (LINE_EXAMPLES[0].explanation, years, "Yes"),
        (LINE_EXAMPLES[0].explanation, of_names, "No"),
        (LINE_EXAMPLES[1].explanation, of_names, "Yes"),
        (LINE_EXAMPLES[1].explanation, years, "No"),
    ]
    messages: list[tuple[str, str]] = [("system", system)]
    for shown, record, answer in shots:
        messages += [("user", _question(shown) + "".join(record.tokens).strip()), ("assistant", answer)]
    messages.append(("user", _question(explanation) + EXCERPT_MARK))
    return ChoicePrompt(ChatPrompt(tuple(messages)))


def fuzzing_prompt(explanation: str) -> ChoicePrompt:
    """Are the marked tokens of this excerpt the ones the explanation describes? Four answered
    examples: each example neuron's excerpt with its strongest tokens marked (Yes) and with as
    many other tokens marked (No)."""
    system = (
        "We are studying neurons in a neural network. Each neuron looks for one particular thing in a short "
        "document; an explanation says what. In the excerpt some tokens are marked <<like this>>. Answer Yes if "
        "the marked tokens are what the explanation describes, else No. Answer with one word."
    )
    messages: list[tuple[str, str]] = [("system", system)]
    for example in LINE_EXAMPLES:
        record = _example_records(example)[0]
        top = max(record.activations)
        right = [a >= HIGHLIGHT_THRESHOLD * top for a in record.activations]
        wrong = [False] * len(right)
        quiet = [i for i, hot in enumerate(right) if not hot and record.tokens[i].strip().isalpha()]
        for i in quiet[: sum(right)]:
            wrong[i] = True
        messages += [("user", _question(example.explanation) + marked(record.tokens, right)), ("assistant", "Yes")]
        messages += [("user", _question(example.explanation) + marked(record.tokens, wrong)), ("assistant", "No")]
    messages.append(("user", _question(explanation) + EXCERPT_MARK))
    return ChoicePrompt(ChatPrompt(tuple(messages)))
