"""A neuron's page of the static site: explanation, scores, statistics, run gaps, every scored
excerpt as two rows of tokens (simulated above real), the other samples and the lineage. Everything
that came from the corpus or an LLM is escaped here."""

from __future__ import annotations

import html
import math
import re
from typing import Any

from neuronatlas.viewer.data import SCORE_FIELDS, Excerpt, NeuronPage

SCORE_LABELS = {
    "top_and_random_score": "top-and-random",
    "random_only_score": "random-only",
    "test_score": "test",
    "null_score": "null (another neuron's records)",
    "embedding_auc": "embedding AUC",
    "embedding_null": "embedding null",
    "detection_auc": "detection AUC",
    "detection_null": "detection null",
    "fuzzing_auc": "fuzzing AUC",
    "fuzzing_null": "fuzzing null",
    "lookup_score": "token-lookup baseline",
    "lookup_null": "token-lookup null",
    "rank_score": "rank score",
}
SAMPLE_LABELS = {**SCORE_LABELS, "selection_auc": "selection AUC (train/calibration: picks the best)"}
SHADES = 10
"""Token shading levels above 0 (the stylesheet's `.r1..r10` and `.s1..s10`)."""


CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
"""Control characters but tab and line breaks: an LLM answer or the corpus may hold an ANSI escape."""


def _e(value: Any) -> str:
    """Untrusted text for HTML: escaped, and its control characters shown (`\\x1b`), never kept raw."""
    return html.escape(CONTROL.sub(lambda found: f"\\x{ord(found[0]):02x}", str(value)), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _head(title: str, depth: int) -> str:
    up = "../" * depth
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        f"<title>{_e(title)}</title>"
        f'<link rel="stylesheet" href="{up}assets/style.css"></head><body>\n'
        f'<nav><a href="{up}index.html">neuronatlas</a></nav>\n'
    )


def _token_row(label: str, tokens: tuple[str, ...], values: tuple[float, ...], scale: float) -> str:
    """One row of tokens. Each token's shade is one of SHADES levels (a class the stylesheet
    colours: `r0..r10` real, `s0..s10` simulated) and its value is in `data-v`: about 45 bytes a
    token, where an inline colour and a title were 110."""
    prefix = label[0]
    spans = []
    for token, value in zip(tokens, values, strict=False):
        level = 0 if scale <= 0 else round(min(max(value / scale, 0.0), 1.0) * SHADES)
        spans.append(f'<span class="t {prefix}{level}" data-v="{value:.6g}">{_e(token.replace(chr(10), "↵"))}</span>')
    return (
        f'<div class="row {label}"><span class="label">{label}</span><span class="tokens">{"".join(spans)}</span></div>'
    )


def _excerpt_html(number: int, excerpt: Excerpt, real_scale: float, simulated_scale: float, simulated: bool) -> str:
    heading = f"{excerpt.kind} excerpt · {excerpt.split} split · sequence {excerpt.sequence_id}"
    peak = max(excerpt.real, default=0.0)
    parts = [
        f'<div class="excerpt" data-kind="{_e(excerpt.kind)}" data-split="{_e(excerpt.split)}" '
        f'data-sequence="{excerpt.sequence_id}"><div class="excerpt-head"><span class="badge {_e(excerpt.kind)}">'
        f"{_e(excerpt.kind)}</span> #{number} · {_e(heading)} · max real {peak:.3g}</div>"
    ]
    if excerpt.simulated is not None:
        parts.append(_token_row("simulated", excerpt.tokens, excerpt.simulated, simulated_scale))
    elif simulated:
        reason = excerpt.failure_reason or "no simulation"
        parts.append(
            f'<div class="row simulated failed"><span class="label">simulated</span>failed: {_e(reason)}</div>'
        )
    parts.append(_token_row("real", excerpt.tokens, excerpt.real, real_scale))
    parts.append("</div>")
    return "".join(parts)


def neuron_html(page: NeuronPage, version: int) -> str:
    row = page.row
    model, layer, neuron, sign = page.key
    title = f"{model} layer {layer} neuron {neuron}"
    real_scale = max((max(e.real, default=0.0) for e in page.excerpts), default=0.0)
    simulated_scale = max((max(e.simulated, default=0.0) for e in page.excerpts if e.simulated), default=0.0)
    scores = "".join(
        f'<tr data-score="{name}"><th>{_e(SCORE_LABELS[name])}</th><td>{_fmt(row[name])}</td></tr>'
        for name in SCORE_FIELDS
        if row.get(name) is not None
    )
    gaps = "".join(
        f"<tr><th>{scorer}</th><td>{_fmt(row[f'{scorer}_run_gap'])}</td><td>[{_fmt(row[f'{scorer}_run_gap_low'])}, "
        f"{_fmt(row[f'{scorer}_run_gap_high'])}]</td><td>{_fmt(row[f'{scorer}_run_neurons'])}</td>"
        f"<td>{'significant' if row[f'{scorer}_run_significant'] else 'not significant'}</td></tr>"
        for scorer in ("simulation", "embedding", "detection", "fuzzing")
        if row.get(f"{scorer}_run_gap") is not None
    )
    stats = "".join(f"<tr><th>{_e(k)}</th><td>{_fmt(v, 4)}</td></tr>" for k, v in (page.stats or {}).items())
    sample_columns, samples = _samples(page)
    excerpts = "".join(
        _excerpt_html(i, excerpt, real_scale, simulated_scale, page.simulated)
        for i, excerpt in enumerate(page.excerpts, start=1)
    )
    return (
        _head(title, 2) + f'<main class="neuron" data-layer="{layer}" data-neuron="{neuron}" data-sign="{_e(sign)}">'
        f"<h1>{_e(title)} <small>({_e(sign)} side · table version {version})</small></h1>"
        f'<p class="explanation">{_e(row["explanation"])}</p>'
        f'<p class="who">explainer {_e(row["explainer"])} · simulator {_e(row["simulator"] or "none")} · '
        f"ranked by {_e(row['rank_by'])} = {_fmt(row['rank_score'])}</p>"
        f'<div class="cards"><section><h2>Scores</h2><table class="scores">{scores}</table></section>'
        f"<section><h2>Neuron statistics</h2><table>{stats or '<tr><td>not available</td></tr>'}</table></section>"
        f"<section><h2>Run gap (real − null)</h2><table><tr><th>scorer</th><th>gap</th><th>95% CI</th>"
        f"<th>neurons</th><th></th></tr>{gaps}</table></section></div>"
        f'<section><h2>Excerpts</h2><p class="note">{_e(_note(page, real_scale, simulated_scale))}</p>'
        f'<div class="excerpts">{excerpts}</div></section>'
        f'<section><h2>All sampled explanations</h2><table class="samples"><tr><th>id</th><th>explanation</th>'
        f"{''.join(f'<th>{_e(SAMPLE_LABELS[name])}</th>' for name in sample_columns)}<th></th></tr>"
        f"{samples}</table></section>"
        f"<section><h2>Lineage</h2><p>publish {_e(row['publish_id'])} · Prefect flow run "
        f"{_e(row['prefect_flow_run_id'])} · prompt v{_e(row['prompt_version'])} · corpus {_e(row['corpus_id'])}"
        f'</p><ul class="lineage">{_lineage(page)}</ul></section>'
        '</main><script src="../../assets/neuron.js"></script></body></html>\n'
    )


def _lineage(page: NeuronPage) -> str:
    return "".join(
        f"<li><b>{_e(link.get('dataset'))}</b> {_e(link.get('run_id'))} · validation {_e(link.get('validation'))}"
        + "".join(
            f" · {_e(key)} {_e(link[key])}"
            for key in ("model", "model_checksum", "explainer", "simulator", "corpus_fingerprint", "code_version")
            if link.get(key)
        )
        + "</li>"
        for link in page.lineage
    )


def _samples(page: NeuronPage) -> tuple[list[str], str]:
    """The score columns any sample has, and a table row per sample."""
    row = page.row
    sample_columns = [
        name
        for name in ("top_and_random_score", "embedding_auc", "fuzzing_auc", "detection_auc", "selection_auc")
        if any(sample.get(name) is not None for sample in page.explanations)
    ]
    samples = "".join(
        f'<tr class="{"best" if s.get("explanation_id") == row["explanation_id"] else ""}">'
        f"<td>{s.get('explanation_id')}</td><td>{_e(s['explanation']) if s.get('explanation') else ''}"
        f"{'<span class=failure>failed: ' + _e(s.get('failure_reason')) + '</span>' if s.get('failure_reason') else ''}"
        f"</td>{''.join(f'<td>{_fmt(s.get(name))}</td>' for name in sample_columns)}"
        f"<td>{'best' if s.get('is_best') else ''}</td></tr>"
        for s in sorted(page.explanations, key=lambda s: s.get("explanation_id", 0))
    )
    return sample_columns, samples


def _note(page: NeuronPage, real_scale: float, simulated_scale: float) -> str:
    note = (
        "Simulated activations (upper row, blue) above the real ones (lower row, green), token by token; "
        "hover a token for its value. Real shading is relative to this neuron's strongest shown activation "
        f"({real_scale:.3g}); simulated shading to the simulator's highest prediction ({simulated_scale:.3g})."
        if page.simulated
        else "This score run did not simulate (excerpt scorers only): real activations of the held-out excerpts."
    )
    if page.key[3] == "negative":
        note += " Negative side: activations are negated, so the most negative value is the strongest."
    return note
