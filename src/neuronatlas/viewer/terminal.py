"""`neuronatlas show L:N`: one neuron in the terminal, like its page: explanation, scores, and each
scored excerpt as two rows of tokens, simulated above real, shaded by activation."""

from __future__ import annotations

import unicodedata

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from neuronatlas.viewer.data import SCORE_FIELDS, Excerpt, NeuronPage
from neuronatlas.viewer.site import SCORE_LABELS

REAL = (22, 150, 70)
SIMULATED = (40, 100, 220)
LABEL = 10


def _shade(value: float, scale: float, rgb: tuple[int, int, int]) -> str:
    """A background from white to `rgb` by `value / scale`, with ink that stays readable."""
    strength = 0.0 if scale <= 0 else min(max(value / scale, 0.0), 1.0)
    r, g, b = (round(255 - (255 - c) * strength) for c in rgb)
    return f"{'white' if strength > 0.6 else 'black'} on #{r:02x}{g:02x}{b:02x}"


def printable(token: str) -> str:
    """Corpus text is untrusted: a control character (an ANSI escape, say) is shown, not obeyed."""
    token = token.replace("\n", "↵").replace("\t", "→")
    return "".join(
        f"\\x{ord(c):02x}" if unicodedata.category(c) in {"Cc", "Cf"} and c not in "\u200d" else c for c in token
    )


def _rows(excerpt: Excerpt, real_scale: float, simulated_scale: float, width: int) -> list[Text]:
    """The excerpt's tokens cut into lines of `width` characters; per line a simulated row above
    the real one, each token padded to the same width in both rows so they stay aligned."""
    lines: list[Text] = []
    cells = [printable(token) for token in excerpt.tokens]
    start = 0
    while start < len(cells):
        end, used = start, 0
        while end < len(cells) and (used + len(cells[end]) <= width or end == start):
            used += len(cells[end])
            end += 1
        if excerpt.simulated is not None:
            simulated = Text()
            simulated.append("simulated ".rjust(LABEL), style="dim")
            for i in range(start, end):
                simulated.append(cells[i], style=_shade(excerpt.simulated[i], simulated_scale, SIMULATED))
            lines.append(simulated)
        real = Text()
        real.append("real ".rjust(LABEL), style="dim")
        for i in range(start, end):
            real.append(cells[i], style=_shade(excerpt.real[i], real_scale, REAL))
        lines.append(real)
        start = end
    return lines


def render(page: NeuronPage, version: int, console: Console, limit: int | None = None) -> None:
    row = page.row
    model, layer, neuron, sign = page.key
    console.print(Text(f"{model} layer {layer} neuron {neuron} ({sign} side, table version {version})", style="bold"))
    console.print(Text(printable(row["explanation"]), style="bold cyan"))
    console.print(
        Text(
            f"explainer {row['explainer']} · simulator {row['simulator'] or 'none'} · "
            f"ranked by {row['rank_by']} = {row['rank_score']:.3f}",
            style="dim",
        )
    )
    scores = Table(show_header=False, box=None, pad_edge=False)
    for name in SCORE_FIELDS:
        if row.get(name) is not None:
            scores.add_row(SCORE_LABELS[name], f"{row[name]:.3f}")
    stats = Table(show_header=False, box=None, pad_edge=False)
    for name, value in (page.stats or {}).items():
        stats.add_row(name, f"{value:,.4f}" if isinstance(value, float) else f"{value:,}")
    grid = Table.grid(padding=(0, 6))
    grid.add_row(Group(Text("scores", style="underline"), scores), Group(Text("statistics", style="underline"), stats))
    console.print(grid)
    real_scale = max((max(e.real, default=0.0) for e in page.excerpts), default=0.0)
    simulated_scale = max((max(e.simulated, default=0.0) for e in page.excerpts if e.simulated), default=0.0)
    width = max(console.width - LABEL - 1, 20)
    shown = page.excerpts[:limit] if limit else page.excerpts
    for number, excerpt in enumerate(shown, start=1):
        console.print()
        console.print(
            Text(
                f"#{number} {excerpt.kind} · {excerpt.split} split · sequence {excerpt.sequence_id} · "
                f"max real {max(excerpt.real, default=0.0):.3g}",
                style="dim",
            )
        )
        if page.simulated and excerpt.simulated is None:
            console.print(Text("simulated ".rjust(LABEL) + f"failed: {excerpt.failure_reason}", style="red"))
        for line in _rows(excerpt, real_scale, simulated_scale, width):
            console.print(line, soft_wrap=True)
    if not page.simulated:
        console.print(Text("\nthis score run did not simulate: real activations only", style="dim"))
    if limit and len(page.excerpts) > limit:
        console.print(Text(f"\n{len(page.excerpts) - limit} more excerpts: --excerpts 0 shows all", style="dim"))
