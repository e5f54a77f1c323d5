"""Answers to explanations and simulations, or failures with a reason."""

import json

import pytest

from neuronatlas.core.parsing import Failure, parse_explanation, parse_json_simulation


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


def answer(items: list) -> str:
    return json.dumps(items)


def test_json_simulation_parses_aligned_answers() -> None:
    text = answer(
        [{"token": " The", "activation": 0}, {"token": " bridge", "activation": 1}, {"token": " 1932", "activation": 9}]
    )
    assert parse_json_simulation(text, TOKENS, 9) == [0.0, 1.0, 9.0]
    assert parse_json_simulation(f"```json\n{text}\n```", TOKENS, 9) == [0.0, 1.0, 9.0]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "answer is not JSON (Expecting value at character 0)"),
        ('{"token": " The"}', "answer is JSON dict, expected a list"),
        (answer([{"token": " The", "activation": 0}]), "answer has 1 tokens, the excerpt 3"),
        (
            answer(
                [
                    {"token": " The", "activation": 0},
                    {"token": "bridge", "activation": 0},
                    {"token": " 1932", "activation": 0},
                ]
            ),
            "token mismatch at position 1: expected ' bridge', got 'bridge'",
        ),
        (
            answer(
                [
                    {"token": " The", "activation": 0},
                    {"token": " bridge", "activation": 12},
                    {"token": " 1932", "activation": 0},
                ]
            ),
            "activation at position 1 is 12, not a number in 0..9",
        ),
        (
            answer([{"token": " The", "activation": "high"}, 1, 2]),
            "activation at position 0 is 'high', not a number in 0..9",
        ),
        (answer([["The", 0], 1, 2]), "item 0 is not a {token, activation} object"),
    ],
)
def test_misaligned_or_malformed_simulations_fail_never_zero(text: str, reason: str) -> None:
    assert parse_json_simulation(text, TOKENS, 9) == Failure(reason)
