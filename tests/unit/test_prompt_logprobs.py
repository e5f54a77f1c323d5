"""Reading all-at-once simulations from echoed prompt log-probabilities: the alignment probe and
the digit readout at each placeholder, on synthetic server answers."""

import math

from neuronatlas.adapters.openai_llm import PROBE_TEXT, _alignment, _digit_readout


def echoed(tokens: list[str], shift: int) -> dict:
    top = [{tokens[min(i + shift, len(tokens) - 1)]: math.log(0.9), "#": math.log(0.05)} for i in range(len(tokens))]
    top[0] = None
    offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    return {"choices": [{"logprobs": {"tokens": tokens, "top_logprobs": top, "text_offset": offsets}}]}


def test_the_probe_tells_aligned_from_shifted() -> None:
    tokens = [piece for number in PROBE_TEXT.split(", ") for piece in (number, ",", " ")][:-2]
    able, reason = _alignment(echoed(tokens, 0))
    assert able and "aligned" in reason
    able, reason = _alignment(echoed(tokens, 1))
    assert not able and "shifted by one position" in reason
    able, reason = _alignment({"choices": [{"text": "x"}]})
    assert not able and "echoes no logprobs" in reason


def test_digits_are_read_where_each_placeholder_starts() -> None:
    text = "head a\t" + "unknown\n" + "b\t" + "unknown\n"
    offsets = [text.index("unknown"), text.rindex("unknown")]
    top: list = [None] * 8
    positions = {offsets[0]: 3, offsets[1]: 6}
    top[3] = {"7": math.log(0.5), "3": math.log(0.25), "x": math.log(0.25)}
    top[6] = {"0": math.log(0.9), "y": math.log(0.1)}
    text_offset = [0, 4, 5, offsets[0], 14, 15, offsets[1], 24]
    assert all(text_offset[i] == o for o, i in positions.items())
    body = {"choices": [{"index": 0, "logprobs": {"top_logprobs": top, "text_offset": text_offset}}]}
    readout = _digit_readout(body, [offsets], scale=9)
    assert readout.failure is None
    [[first, second]] = readout.expected
    assert math.isclose(first, (7 * 0.5 + 3 * 0.25) / 0.75) and second == 0.0
    assert [round(m, 6) for m in readout.digit_mass[0]] == [0.75, 0.9]


def test_a_placeholder_without_digits_or_without_a_token_is_a_reason() -> None:
    body = {"choices": [{"index": 0, "logprobs": {"top_logprobs": [None, {"x": -0.1}], "text_offset": [0, 5]}}]}
    assert "no digit among the top 1" in str(_digit_readout(body, [[5]], scale=9).failure)
    assert "no server token starts at its placeholder" in str(_digit_readout(body, [[4]], scale=9).failure)
