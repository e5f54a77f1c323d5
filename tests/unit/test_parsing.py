"""Answers to explanations and simulations, or failures with a reason."""

import json

import numpy as np
import pytest

from neuronatlas.core.explain import Record, json_simulations
from neuronatlas.core.llm import Generation, GenerationParams
from neuronatlas.core.parsing import Failure, parse_explanation, parse_json_simulation
from neuronatlas.core.prompts import JSON_EXCERPTS_PER_REQUEST, ChatPrompt
from neuronatlas.core.scorers.simulation import simulate
from tests.support import ScriptedBackend, json_request_excerpts


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (" years written as four-digit numbers.", "years written as four-digit numbers."),
        ("the main thing this neuron does is find the word 'of' in names", "the word 'of' in names."),
        ("Explanation of neuron 3 behaviour: the main thing this neuron does is find commas", "commas."),
        ('"plural nouns"\nSecond line ignored.', "plural nouns."),
    ],
)
def test_explanations_parse_to_one_sentence(answer: str, expected: str) -> None:
    assert parse_explanation(answer) == expected


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("", "empty answer"),
        ("   \n ", "empty answer"),
        ("the main thing this neuron does is find", "empty answer"),
        ("<start>\nthe\t0\n<end>", "answer copies the activation format instead of explaining"),
        (" dates\t7\n of\t0", "answer copies the activation format instead of explaining"),
        ("...", "answer has no words: '...'"),
        ("word " * 41, "answer is not one short sentence (41 words)"),
    ],
)
def test_unusable_explanations_fail_with_a_reason(answer: str, reason: str) -> None:
    assert parse_explanation(answer) == Failure(reason)


TOKENS = [" The", " bridge", " 1932"]
OTHER = [" in", " 1987"]
ALIGNED = [
    {"token": " The", "activation": 0},
    {"token": " bridge", "activation": 1},
    {"token": " 1932", "activation": 9},
]


def answer(items: object) -> str:
    """A one-excerpt answer."""
    return json.dumps({"1": items})


def test_json_simulation_parses_aligned_answers() -> None:
    text = answer(ALIGNED)
    assert parse_json_simulation(text, [TOKENS], 9) == [[0.0, 1.0, 9.0]]
    assert parse_json_simulation(f"```json\n{text}\n```", [TOKENS], 9) == [[0.0, 1.0, 9.0]]


def test_json_simulation_parses_each_excerpt_of_a_request() -> None:
    other = [{"token": " in", "activation": 0}, {"token": " 1987", "activation": 8.5}]
    text = json.dumps({"2": other, "1": ALIGNED, "note": "ignored"})
    assert parse_json_simulation(text, [TOKENS, OTHER], 9) == [[0.0, 1.0, 9.0], [0.0, 8.5]]


def test_json_simulation_fails_only_the_excerpts_that_are_wrong() -> None:
    wrong = [{"token": " in", "activation": 0}, {"token": " 1988", "activation": 9}]
    text = json.dumps({"1": ALIGNED, "2": wrong})
    assert parse_json_simulation(text, [TOKENS, OTHER, TOKENS], 9) == [
        [0.0, 1.0, 9.0],
        Failure("excerpt 2: token mismatch at position 1: expected ' 1987', got ' 1988'"),
        Failure("excerpt 3 missing from the answer"),
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "answer is not JSON (Expecting value at character 0)"),
        (json.dumps(ALIGNED), "answer is JSON list, expected an object"),
        ('"1"', "answer is JSON str, expected an object"),
    ],
)
def test_unusable_json_answers_fail_as_a_whole(text: str, reason: str) -> None:
    assert parse_json_simulation(text, [TOKENS, OTHER], 9) == Failure(reason)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (json.dumps({"2": ALIGNED}), "excerpt 1 missing from the answer"),
        (answer({"token": " The"}), "excerpt 1: answer is JSON dict, expected a list"),
        (answer([{"token": " The", "activation": 0}]), "excerpt 1: answer has 1 tokens, the excerpt 3"),
        (
            answer(
                [
                    {"token": " The", "activation": 0},
                    {"token": "bridge", "activation": 0},
                    {"token": " 1932", "activation": 0},
                ]
            ),
            "excerpt 1: token mismatch at position 1: expected ' bridge', got 'bridge'",
        ),
        (
            answer(
                [
                    {"token": " The", "activation": 0},
                    {"token": " bridge", "activation": 12},
                    {"token": " 1932", "activation": 0},
                ]
            ),
            "excerpt 1: activation at position 1 is 12, not a number in 0..9",
        ),
        (
            answer([{"token": " The", "activation": "high"}, 1, 2]),
            "excerpt 1: activation at position 0 is 'high', not a number in 0..9",
        ),
        (answer([["The", 0], 1, 2]), "excerpt 1: item 0 is not a {token, activation} object"),
    ],
)
def test_misaligned_or_malformed_simulations_fail_never_zero(text: str, reason: str) -> None:
    assert parse_json_simulation(text, [TOKENS], 9) == [Failure(reason)]


def record(tokens: list[str], rank: int = 0) -> Record:
    return Record("top", "valid", rank, rank, tuple(tokens), np.zeros(len(tokens), dtype=np.float32))


def test_json_simulations_give_one_simulation_per_excerpt_and_never_zeros() -> None:
    groups = [[record(TOKENS), record(OTHER)], [record(TOKENS)], [record(OTHER), record(TOKENS)]]
    answers = [(json.dumps({"1": ALIGNED}), None), (None, "HTTP 500"), ("not json", None)]
    simulations = json_simulations(answers, groups, 9)
    assert [s.values.tolist() if s.values is not None else None for s in simulations] == [
        [0.0, 1.0, 9.0],
        None,
        None,
        None,
        None,
    ]
    assert [(s.failure, s.retryable) for s in simulations[1:]] == [
        ("excerpt 2 missing from the answer", False),
        ("HTTP 500", True),
        ("answer is not JSON (Expecting value at character 0)", False),
        ("answer is not JSON (Expecting value at character 0)", False),
    ]


class RecordingBackend(ScriptedBackend):
    """Remembers the parameters of every `generate` call."""

    def __init__(self) -> None:
        super().__init__()
        self.params: list[GenerationParams] = []

    def generate(self, prompts: list[ChatPrompt], params: GenerationParams) -> list[Generation]:  # type: ignore[override]
        self.params.append(params)
        return super().generate(prompts, params)


def test_the_json_method_packs_excerpts_in_order() -> None:
    excerpts = [record([" in", f" {1900 + i}", "."], rank=i) for i in range(2 * JSON_EXCERPTS_PER_REQUEST + 1)]
    backend = RecordingBackend()
    simulations = simulate(backend, 'the token "1903".', excerpts, "json", 9, "unknown")
    assert [len(json_request_excerpts(request)) for request in backend.generated] == [4, 4, 1]
    assert [s.values.tolist() for s in simulations if s.values is not None] == [
        [0.0, 9.0 if i == 3 else 0.0, 0.0] for i in range(len(excerpts))
    ]
    [params] = backend.params
    assert (params.n, params.temperature, params.max_tokens) == (1, 0.0, 24 * 12 + 32 * 4)
