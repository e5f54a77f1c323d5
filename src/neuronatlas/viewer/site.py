"""`neuronatlas view`: a static site over one version of the published table.

    index.html                  every published neuron: sort, filter, text and semantic search,
                                score histogram (assets/index.js over data/index.js)
    neurons/<model>/<L>-<N>-<sign>.html
                                one page per neuron, rendered here: explanation, scores, statistics,
                                lineage, every scored excerpt as two rows of tokens (simulated above
                                real) and the other sampled explanations
    compare/v<A>-v<B>.html      what changed from each earlier version A to this version B
    data/semantic.js            explanation and word embeddings (loaded only when searching by meaning)
    assets/                     the site's own CSS and JavaScript: nothing is fetched from elsewhere

Data reach the pages as `<script src>` files, not fetches, so the site works from file:// as well
as from any static host. Everything that came from the corpus or an LLM is escaped here, or set
as text by the scripts (never as HTML). The site is built in a temporary folder beside `out` and
moved into place whole.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from neuronatlas.adapters.progress import progress
from neuronatlas.adapters.storage import Storage
from neuronatlas.datasets import corpus as corpus_contract
from neuronatlas.errors import InputError
from neuronatlas.version import code_version
from neuronatlas.viewer import semantic
from neuronatlas.viewer.data import SCORE_FIELDS, Excerpt, NeuronPage, pages, table_rows

log = logging.getLogger(__name__)

SITE_MARKER = "neuronatlas-site.json"
COMPARED_VERSIONS = 10
"""The site compares its version with each of this many earlier ones."""
INDEX_SCORES = (
    "top_and_random_score",
    "random_only_score",
    "test_score",
    "embedding_auc",
    "detection_auc",
    "fuzzing_auc",
    "rank_score",
)
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


@dataclass(frozen=True)
class Site:
    out: Path
    version: int
    neurons: int
    pages: int
    compares: list[str]


def page_path(model: str, layer: int, neuron: int, sign: str) -> str:
    return f"neurons/{corpus_contract.slug(model)}/{layer}-{neuron}-{sign}.html"


def build(root: str, out: str, version: int | None = None, embed: bool = True) -> Site:
    """Build the site for `version` (default: the latest) of the table under `root` into `out`."""
    target = Path(out).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise InputError(f"--out {out}: is a file; name a folder")
    if target.is_dir() and any(target.iterdir()) and not (target / SITE_MARKER).is_file():
        raise InputError(f"--out {out}: folder is not empty and holds no neuronatlas site; name a new folder")
    if not target.parent.is_dir():
        raise InputError(f"--out {out}: folder {target.parent} does not exist")
    chosen, rows_table = table_rows(root, version)
    rows = rows_table.to_pylist()
    if not rows:
        raise InputError(f"version {chosen} of the published table under {root} has no rows: nothing to view")
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        staging.mkdir()
        storage = Storage.open(root)
        with progress("neuron pages", len(rows), log, unit="pages", rate_unit="pages") as update:
            written = 0
            for page in pages(storage, rows):
                path = staging / page_path(*page.key)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(neuron_html(page, chosen), encoding="utf-8")
                written += 1
                update(written, written)
        compares = [
            name
            for earlier in range(max(chosen - COMPARED_VERSIONS, 0), chosen)
            if (name := compare_page(staging, root, earlier, chosen, rows_table))
        ]
        if embed:
            _write_semantic(staging, rows)
        write_index(staging, index_data(rows, chosen, root, compares, embed))
        (staging / SITE_MARKER).write_text(
            json.dumps(
                {"version": chosen, "root": root, "neurons": len(rows), "built_at": _now(), "code": code_version()},
                indent=2,
            )
        )
        previous = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
        if target.exists():
            target.rename(previous)  # the old site stays whole until the new one is in place
        staging.rename(target)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Site(target, chosen, len(rows), written, compares)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_index(site: Path, index: dict[str, Any]) -> None:
    """The index page, its data (`index_data`) and the site's assets, into `site`."""
    _copy_assets(site)
    write_script(site / "data" / "index.js", "NA_INDEX", index)
    (site / "index.html").write_text(INDEX_HTML, encoding="utf-8")


def _copy_assets(site: Path) -> None:
    (site / "assets").mkdir()
    for name in ("style.css", "index.js", "neuron.js"):
        (site / "assets" / name).write_bytes(
            resources.files("neuronatlas.viewer").joinpath("assets", name).read_bytes()
        )


def write_script(path: Path, name: str, value: Any) -> None:
    """Data as a script that sets `window[name]`: a <script src> loads it from file:// too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"window.{name} = {json.dumps(value, separators=(',', ':'), allow_nan=False)};\n")


def _number(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(float(value), 4)


def index_data(rows: list[dict[str, Any]], version: int, root: str, compares: list[str], embed: bool) -> dict:
    """The index as columns (one array per field): about 120 bytes a neuron, parsed at once."""
    models = sorted({row["model"] for row in rows})
    signs = sorted({row["sign"] for row in rows})
    model_index = {model: i for i, model in enumerate(models)}
    sign_index = {sign: i for i, sign in enumerate(signs)}
    present = [name for name in INDEX_SCORES if any(_number(row[name]) is not None for row in rows)]
    return {
        "version": version,
        "root": root,
        "built_at": _now(),
        "rows": len(rows),
        "models": models,
        "model_slugs": [corpus_contract.slug(model) for model in models],
        "signs": signs,
        "scores": present,
        "score_labels": {name: SCORE_LABELS[name] for name in present},
        "semantic": embed,
        "compares": compares,
        "columns": {
            "model": [model_index[row["model"]] for row in rows],
            "layer": [row["layer"] for row in rows],
            "neuron": [row["neuron"] for row in rows],
            "sign": [sign_index[row["sign"]] for row in rows],
            "explanation": [row["explanation"] for row in rows],
            **{name: [_number(row[name]) for row in rows] for name in present},
        },
    }


def _write_semantic(site: Path, rows: list[dict[str, Any]]) -> None:
    from neuronatlas.adapters.embedding import Encoder

    encoder = Encoder()
    words, word_vectors = semantic.word_vectors(encoder)
    explanations = [row["explanation"] for row in rows]
    neuron_vectors = encoder.encode(explanations)
    extra = semantic.new_words(explanations, words)  # the explanations' own words, when the vocabulary lacks them
    if extra:
        words = words + extra
        word_vectors = np.concatenate([word_vectors, semantic.quantise(encoder.encode(extra))])
    write_script(
        site / "data" / "semantic.js",
        "NA_SEMANTIC",
        {
            "model": encoder.id,
            "dim": int(neuron_vectors.shape[1]),
            "scale": semantic.SCALE,
            "neurons": semantic.encode_base64(neuron_vectors),
            "words": words,
            "word_vectors": base64.b64encode(word_vectors.tobytes()).decode("ascii"),
        },
    )


# ---- neuron pages -------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


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
    lineage = "".join(
        f"<li><b>{_e(link.get('dataset'))}</b> {_e(link.get('run_id'))} · validation {_e(link.get('validation'))}"
        + "".join(
            f" · {_e(key)} {_e(link[key])}"
            for key in ("model", "model_checksum", "explainer", "simulator", "corpus_fingerprint", "code_version")
            if link.get(key)
        )
        + "</li>"
        for link in page.lineage
    )
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
    excerpts = "".join(
        _excerpt_html(i, excerpt, real_scale, simulated_scale, page.simulated)
        for i, excerpt in enumerate(page.excerpts, start=1)
    )
    note = (
        "Simulated activations (upper row, blue) above the real ones (lower row, green), token by token; "
        "hover a token for its value. Real shading is relative to this neuron's strongest shown activation "
        f"({real_scale:.3g}); simulated shading to the simulator's highest prediction ({simulated_scale:.3g})."
        if page.simulated
        else "This score run did not simulate (excerpt scorers only): real activations of the held-out excerpts."
    )
    if sign == "negative":
        note += " Negative side: activations are negated, so the most negative value is the strongest."
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
        f'<section><h2>Excerpts</h2><p class="note">{_e(note)}</p><div class="excerpts">{excerpts}</div></section>'
        f'<section><h2>All sampled explanations</h2><table class="samples"><tr><th>id</th><th>explanation</th>'
        f"{''.join(f'<th>{_e(SAMPLE_LABELS[name])}</th>' for name in sample_columns)}<th></th></tr>"
        f"{samples}</table></section>"
        f"<section><h2>Lineage</h2><p>publish {_e(row['publish_id'])} · Prefect flow run "
        f"{_e(row['prefect_flow_run_id'])} · prompt v{_e(row['prompt_version'])} · corpus {_e(row['corpus_id'])}"
        f'</p><ul class="lineage">{lineage}</ul></section>'
        '</main><script src="../../assets/neuron.js"></script></body></html>\n'
    )


# ---- version compare ----------------------------------------------------------------------------

COMPARED = ("explanation", "explanation_id", "top_and_random_score", "embedding_auc", "rank_score", "publish_id")


def changes(before: pa.Table, after: pa.Table) -> list[dict[str, Any]]:
    """Rows whose best explanation or any score differs between two versions, and rows only one
    version has; each with both sides."""
    key = ("model", "layer", "neuron", "sign")
    old = {tuple(r[k] for k in key): r for r in before.to_pylist()}
    new = {tuple(r[k] for k in key): r for r in after.to_pylist()}
    result = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a is not None and b is not None:
            differs = a["explanation"] != b["explanation"] or a["explanation_id"] != b["explanation_id"]
            scores = [name for name in (*SCORE_FIELDS, "rank_score") if _number(a[name]) != _number(b[name])]
            if not differs and not scores:
                continue
            status = "explanation changed" if differs else "score changed"
        else:
            status = "new" if a is None else "removed"
        result.append({"key": k, "status": status, "before": a, "after": b})
    return result


def compare_page(site: Path, root: str, before: int, after: int, new: pa.Table) -> str | None:
    """Write compare/v<before>-v<after>.html (`new`: the rows of `after`); None when the earlier
    version has no rows."""
    _, old = table_rows(root, before)
    if old.num_rows == 0:
        return None
    changed = changes(old, new)
    name = f"compare/v{before}-v{after}.html"
    lines = []
    for change in changed:
        a, b = change["before"] or {}, change["after"] or {}
        model, layer, neuron, sign = change["key"]
        link = page_path(model, layer, neuron, sign)
        cells = [
            f'<td><a href="../{link}">{_e(model)} {layer}:{neuron}</a> {_e(sign)}</td>'
            if b
            else f"<td>{_e(model)} {layer}:{neuron} {_e(sign)}</td>",
            f"<td>{_e(change['status'])}</td>",
            f'<td class="before">{_e(a.get("explanation", ""))}</td>',
            f'<td class="after">{_e(b.get("explanation", ""))}</td>',
            *(f"<td>{_fmt(a.get(n))}</td><td>{_fmt(b.get(n))}</td>" for n in ("top_and_random_score", "rank_score")),
            f"<td>{_e(a.get('publish_id', ''))}</td><td>{_e(b.get('publish_id', ''))}</td>",
        ]
        lines.append(f'<tr class="change">{"".join(cells)}</tr>')
    body = (
        _head(f"neuronatlas: version {before} → {after}", 1) + f"<main><h1>Version {before} → version {after}</h1>"
        f"<p>{len(changed)} of {new.num_rows} neurons changed their best explanation or a score "
        f"({old.num_rows} rows before).</p>"
        '<table class="compare"><tr><th>neuron</th><th>change</th>'
        f"<th>explanation v{before}</th><th>explanation v{after}</th><th>top-and-random v{before}</th>"
        f"<th>v{after}</th><th>rank score v{before}</th><th>v{after}</th><th>publish v{before}</th>"
        f"<th>v{after}</th></tr>{''.join(lines)}</table></main></body></html>\n"
    )
    (site / "compare").mkdir(exist_ok=True)
    (site / name).write_text(body, encoding="utf-8")
    return name


INDEX_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>neuronatlas</title>
<link rel="stylesheet" href="assets/style.css"></head>
<body>
<nav><a href="index.html">neuronatlas</a> <span id="meta"></span> <span id="compares"></span></nav>
<main>
<form id="filters" autocomplete="off">
  <label>model <select id="model"><option value="">all</option></select></label>
  <label>sign <select id="sign"><option value="">all</option></select></label>
  <label>layers <input id="layer-min" type="number" min="0" placeholder="from"> –
    <input id="layer-max" type="number" min="0" placeholder="to"></label>
  <label>score <select id="score-column"></select></label>
  <label>≥ <input id="score-min" type="number" step="0.05" placeholder="min"></label>
  <label>text <input id="text" type="search" placeholder="words in the explanation"></label>
  <label>meaning <input id="semantic" type="search" placeholder="e.g. neurons about sports"></label>
  <button id="semantic-go" type="submit">search by meaning</button>
  <button id="reset" type="button">reset</button>
</form>
<p id="status"></p>
<div id="histogram"></div>
<table id="neurons"><thead><tr>
  <th data-sort="model">model</th><th data-sort="layer">layer</th><th data-sort="neuron">neuron</th>
  <th data-sort="sign">sign</th><th data-sort="explanation">explanation</th>
</tr></thead><tbody></tbody></table>
<div id="pager"><button id="prev" type="button">previous</button> <span id="page"></span>
<button id="next" type="button">next</button></div>
</main>
<script src="data/index.js"></script>
<script src="assets/index.js"></script>
</body></html>
"""
