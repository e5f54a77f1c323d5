"""`neuronatlas show`'s rendering: rows aligned token by token, shaded by value, and corpus text
that cannot drive the terminal."""

import io

from rich.console import Console

from neuronatlas.viewer.data import Excerpt, NeuronPage
from neuronatlas.viewer.terminal import printable, render

ROW = {
    "model": "m",
    "layer": 1,
    "neuron": 2,
    "sign": "positive",
    "explanation": "commas\x1b]0;owned\x07",
    "explainer": "e",
    "simulator": "s",
    "rank_by": "selection_auc",
    "rank_score": 0.5,
    "top_and_random_score": 0.25,
}


def page(tokens: tuple[str, ...]) -> NeuronPage:
    real = tuple(float(i % 3) for i in range(len(tokens)))
    simulated = tuple(float(i % 2) * 9 for i in range(len(tokens)))
    return NeuronPage(ROW, excerpts=[Excerpt("top", "valid", 7, tokens, real, simulated)], simulated=True)


def test_control_characters_are_shown_not_obeyed() -> None:
    assert printable("\x1b[2J") == "\\x1b[2J"
    assert printable("a\nb\tc") == "a↵b→c"
    assert printable("\u202eevil") == "\\x202eevil"  # a bidi override is a format character
    out = io.StringIO()
    render(
        page(("clear", "\x1b[2J", " me", "\x07")),
        3,
        Console(file=out, force_terminal=True, color_system="truecolor", width=80),
    )
    text = out.getvalue()
    assert "\x1b[2J" not in text and "\x07" not in text and "\x1b]0;" not in text
    assert "\\x1b[2J" in text and "\\x1b]0;owned\\x07" in text


def test_rows_stay_aligned_when_an_excerpt_wraps() -> None:
    tokens = tuple(f" word{i}" for i in range(40))
    out = io.StringIO()
    render(page(tokens), 3, Console(file=out, width=60, color_system=None))
    lines = [line for line in out.getvalue().splitlines() if line.lstrip().startswith(("simulated ", "real "))]
    assert len(lines) >= 4 and len(lines) % 2 == 0
    for simulated, real in zip(lines[::2], lines[1::2], strict=True):
        assert simulated.startswith("simulated ") and real.startswith("     real ")
        assert simulated[10:] == real[10:]  # the same tokens in the same columns
        assert len(simulated) <= 60
    assert "".join(line[10:] for line in lines[1::2]) == "".join(tokens)


def test_tokens_are_shaded_by_value() -> None:
    """(Every console in this module is a truecolor one: rich keeps a style's escape codes from
    the first console that rendered it, whatever the next one's colour system.)"""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=80)
    render(page((" a", " b", " c")), 3, console)
    text = out.getvalue()
    # real 0, 1, 2 of max 2: white, a mid green, full green (22, 150, 70) as 24-bit backgrounds
    assert "48;2;22;150;70" in text and "48;2;255;255;255" in text
