"""Exact text of every prompt: a prompt change is a visible, reviewed change (bump PROMPT_VERSION)."""

from neuronatlas.core.fewshot import EXPLAINER_EXAMPLES
from neuronatlas.core.prompts import (
    ANSWER_PREFIX,
    ActivationRecord,
    all_at_once_prompt,
    explainer_prompt,
    json_simulation_prompt,
    normalise,
    records_max,
    token_line_pieces,
)

# fmt: off
PAIRS_SYSTEM = (
    'We are studying neurons in a neural network. Each neuron looks for one particular thing in a short document. Look at the parts of the document the neuron activates for and summarise in a single sentence what the neuron is looking for. Do not list examples of words.\n'
    '\n'
    'The activation format is token<tab>activation. Activation values range from 0 to 9. A neuron finding what it is looking for is represented by a non-zero activation value. The higher the activation value, the stronger the match. Most activations are 0.'
)
PAIRS_FEWSHOT_1 = (
    'Neuron 1\n'
    'Activations:\n'
    '<start>\n'
    ' The\t0\n'
    ' bridge\t0\n'
    ' opened\t0\n'
    ' in\t0\n'
    ' 1932\t9\n'
    ' and\t0\n'
    ' closed\t0\n'
    ' in\t0\n'
    ' 1987\t8\n'
    '.\t0\n'
    '<end>\n'
    '<start>\n'
    ' Born\t0\n'
    ' on\t0\n'
    ' 4\t1\n'
    ' May\t0\n'
    ' 1901\t8\n'
    ',\t0\n'
    ' she\t0\n'
    ' moved\t0\n'
    ' to\t0\n'
    ' Lyon\t0\n'
    ' in\t0\n'
    ' 1920\t7\n'
    '<end>\n'
    '\n'
    'Explanation of neuron 1 behaviour:'
)
PAIRS_NEURON = (
    'Neuron 3\n'
    'Activations:\n'
    '<start>\n'
    ' The\t0\n'
    ' Eiffel\t9\n'
    ' Tower\t4\n'
    '\\n\t0\n'
    ' is\t0\n'
    ' tall\t0\n'
    ' and\t0\n'
    ' old\t0\n'
    ' too\t0\n'
    ' indeed\t0\n'
    '.\t0\n'
    '<end>\n'
    '\n'
    'Same activations, but with all zeros filtered out:\n'
    '<start>\n'
    ' Eiffel\t9\n'
    ' Tower\t4\n'
    '<end>\n'
    '\n'
    'Explanation of neuron 3 behaviour:'
)
HIGHLIGHT_SYSTEM = (
    'We are studying neurons in a neural network. Each neuron looks for one particular thing in a short document. Look at the parts of the document the neuron activates for and summarise in a single sentence what the neuron is looking for. Do not list examples of words.\n'
    '\n'
    'In each excerpt the tokens where the neuron fires strongly are marked <<like this>>. A list of the marked tokens follows, with their activation from 0 to 9. Say what the marked tokens have in common, not what the excerpts are about.'
)
HIGHLIGHT_NEURON = (
    'Neuron 3\n'
    'Excerpts:\n'
    'Excerpt 1: The <<Eiffel>> <<Tower>>\\n is tall and old too indeed.\n'
    '\n'
    'Marked tokens (activation 0-9): Eiffel (9), Tower (4)\n'
    '\n'
    'Explanation of neuron 3 behaviour:'
)
SIMULATOR_SYSTEM = (
    'We are studying neurons in a neural network. Each neuron looks for one particular thing in a short document. Given an explanation of what a neuron looks for, predict how strongly it fires on each token of a document.\n'
    '\n'
    'The activation format is token<tab>activation, where activations go from 0 to 9. Most activations are 0; the neuron fires only where the document matches the explanation.'
)
SIMULATOR_FEWSHOT_ANSWER = (
    'Activations:\n'
    '<start>\n'
    ' The\t0\n'
    ' bridge\t0\n'
    ' opened\t0\n'
    ' in\t0\n'
    ' 1932\t9\n'
    ' and\t0\n'
    ' closed\t0\n'
    ' in\t0\n'
    ' 1987\t8\n'
    '.\t0\n'
    '<end>'
)
JSON_SYSTEM = (
    'We are studying neurons in a neural network. Each neuron looks for one particular thing in a short document. Given an explanation of what a neuron looks for, predict how strongly it fires on each token of a document.\n'
    '\n'
    'Answer with JSON only: an object whose keys are the excerpt numbers ("1", "2", ...), each value a list with one object per token of that excerpt, in the given order, each {"token": <the token, exactly as given>, "activation": <integer 0 to 9>}. Most activations are 0.'
)
JSON_EXAMPLE_REQUEST = (
    'Explanation: the main thing this neuron does is find years written as four-digit numbers in dates.\n'
    'Excerpt 1 tokens: [" The", " bridge", " opened", " in", " 1932"]\n'
    'Excerpt 2 tokens: [" and", " closed", " in", " 1987", "."]'
)
JSON_EXAMPLE_ANSWER = (
    '{"1": [{"token": " The", "activation": 0}, {"token": " bridge", "activation": 0}, '
    '{"token": " opened", "activation": 0}, {"token": " in", "activation": 0}, {"token": " 1932", "activation": 9}], '
    '"2": [{"token": " and", "activation": 0}, {"token": " closed", "activation": 0}, '
    '{"token": " in", "activation": 0}, {"token": " 1987", "activation": 8}, {"token": ".", "activation": 0}]}'
)
# fmt: on

RECORD = ActivationRecord(
    [" The", " Eiffel", " Tower", "\n", " is", " tall", " and", " old", " too", " indeed", "."],
    [0.0, 2.0, 1.0, -0.5, 0, 0, 0, 0, 0, 0, 0],
)


# fmt: off
TOKENS_SYSTEM = (
    'We are studying neurons in a neural network. Each neuron looks for one particular thing in a short document. Look at the parts of the document the neuron activates for and summarise in a single sentence what the neuron is looking for. Quote the tokens when there are few.\n'
    '\n'
    'First comes a list of the tokens the neuron fires on most, with their mean activation from 0 to 9; then excerpts with the strongly activating tokens marked <<like this>>. Say which tokens the neuron fires on (and in what context, when the context matters), not what the excerpts are about: a good answer names the tokens or their kind.'
)
TOKENS_NEURON = (
    'Neuron 3\n'
    'Tokens:\n'
    'Strongest tokens (mean activation 0-9 where the token occurs):\n'
    '" Eiffel"\t9.0\t(seen 1x)\n'
    '" Tower"\t4.0\t(seen 1x)\n'
    '\n'
    'Excerpt 1: The <<Eiffel>> <<Tower>>\\n is tall and old too indeed.\n'
    '\n'
    'Explanation of neuron 3 behaviour:'
)
# fmt: on


def test_normalise_floors_relu_over_the_max() -> None:
    assert normalise([0.0, 2.0, 1.0, -0.5, 1.99], 2.0, 9) == [0, 9, 4, 0, 8]
    assert normalise([0.0, 3.0], 2.0, 9) == [0, 9]  # clamped
    assert normalise([-1.0, 0.0], 0.0, 9) == [0, 0]  # never positive: all zeros


def test_pairs_prompt_exact_text() -> None:
    prompt = explainer_prompt([RECORD], "pairs", 9)
    roles = [role for role, _ in prompt.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert prompt.messages[0][1] == PAIRS_SYSTEM
    assert prompt.messages[1][1] == PAIRS_FEWSHOT_1
    assert prompt.messages[2][1] == f"{ANSWER_PREFIX} {EXPLAINER_EXAMPLES[0].explanation}"
    assert prompt.messages[-1][1] == PAIRS_NEURON  # 2 of 11 values non-zero (< 20%): the zero-filtered repeat
    assert prompt.answer_prefix == "the main thing this neuron does is find"


def test_highlight_prompt_exact_text() -> None:
    prompt = explainer_prompt([RECORD], "highlight", 9)
    assert prompt.messages[0][1] == HIGHLIGHT_SYSTEM
    assert prompt.messages[-1][1] == HIGHLIGHT_NEURON


def test_tokens_prompt_exact_text() -> None:
    prompt = explainer_prompt([RECORD], "tokens", 9)
    assert prompt.messages[0][1] == TOKENS_SYSTEM
    assert prompt.messages[-1][1] == TOKENS_NEURON


def test_all_at_once_prompt_exact_text() -> None:
    prompt = all_at_once_prompt("years.", 9)
    assert prompt.prefix.messages[0][1] == SIMULATOR_SYSTEM
    assert prompt.prefix.messages[1][1] == (
        "Neuron 1\nExplanation of neuron 1 behaviour: the main thing this neuron does is find "
        "years written as four-digit numbers in dates."
    )
    assert prompt.prefix.messages[2][1] == SIMULATOR_FEWSHOT_ANSWER
    assert prompt.prefix.messages[3][1] == (
        "Neuron 2\nExplanation of neuron 2 behaviour: the main thing this neuron does is find years."
    )
    assert prompt.prefix.answer_prefix == "Activations:\n<start>\n"
    assert token_line_pieces([" The", "\t", "\n"], "unknown") == [
        (" The\t", "unknown\n"),
        ("\\t\t", "unknown\n"),
        ("\\n\t", "unknown\n"),
    ]


def test_json_simulation_prompt_exact_text() -> None:
    prompt = json_simulation_prompt("years.", [[" The", '"x"'], ["\u00e9t\u00e9", "\n"]], 9)
    assert prompt.messages[:3] == (
        ("system", JSON_SYSTEM),
        ("user", JSON_EXAMPLE_REQUEST),
        ("assistant", JSON_EXAMPLE_ANSWER),
    )
    assert prompt.messages[3] == (
        "user",
        "Explanation: the main thing this neuron does is find years.\n"
        'Excerpt 1 tokens: [" The", "\\"x\\""]\n'
        'Excerpt 2 tokens: ["\u00e9t\u00e9", "\\n"]',
    )
    assert len(prompt.messages) == 4 and prompt.answer_prefix == ""


def test_normalise_shows_non_finite_activations_as_zero() -> None:
    nan, inf = float("nan"), float("inf")
    assert normalise([nan, 2.0, inf, -inf, 1.0], 2.0, 9) == [0, 9, 0, 0, 4]
    assert normalise([1.0, 2.0], nan, 9) == [0, 0]  # no usable max: all zeros
    assert normalise([1.0, 2.0], inf, 9) == [0, 0]
    assert normalise([1e308], 1e-300, 9) == [9]  # clamped, not overflowing


def test_records_max_ignores_non_finite_activations() -> None:
    records = [ActivationRecord([" a", " b"], [float("nan"), 1.5]), ActivationRecord([" c"], [float("inf")])]
    assert records_max(records) == 1.5
    assert records_max([ActivationRecord([], [])]) == 0.0


def test_a_non_finite_activation_does_not_break_the_explainer_prompt() -> None:
    record = ActivationRecord([" in", " 1932", " and"], [float("nan"), 4.0, float("inf")])
    for form in ("pairs", "highlight", "tokens"):
        text = explainer_prompt([record], form).messages[-1][1]  # type: ignore[arg-type]
        assert "1932" in text
    assert " in\t0\n 1932\t9\n and\t0" in explainer_prompt([record]).messages[-1][1]
